"""Reference policy `Local`: copying tags into an in-cluster registry.

Without OpenShift's integrated registry, a `Local` tag is served from a registry the cluster
runs (or points at) by `--local-registry HOST[:PORT]`: the controller copies the tag's current
image to `<local registry>/<namespace>/<stream>` and, once the copy is complete, short names
resolve to `<local registry>/<namespace>/<stream>@<digest>`, so pods keep starting when the
upstream registry is slow, rate-limited or gone.

`plan` (pure): the local registry's names, manifest trees and the copy plan. `status` (pure):
history, garbage and the Mirrored condition. `copier`: the copy and the deletion against the
registries. `worker`: the queue the controller feeds, with backoff, metrics and the condition
write.
"""
