"""Reference policy `Local` on a real node: the chart's controller copies the tag into the
chart's registry, the webhook pins pods there, containerd pulls from it (through the name
and CA a node is given, docs/local-registry.md), and new pods keep starting when the upstream
registry is down."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import localchart
import pytest
from localcluster import Cluster
from nodekit import Namespace, wait_until


@pytest.fixture
def upstream(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster's registry, restarted after a test that stops it."""
    yield cluster
    if not cluster.is_running("registry"):
        cluster.start_registry()


def mirrored(ns: Namespace, stream: str) -> bool:
    status = ns.get(
        "imagestream", stream, '{.status.tags[0].conditions[?(@.type=="Mirrored")].status}'
    )
    return status == "True"


def test_local_tag_is_pulled_from_the_cluster_registry_and_outlives_the_upstream(
    upstream: Cluster, namespace: Namespace, push_app: Callable[[str, str], str]
) -> None:
    cluster = upstream
    digest = push_app(f"{namespace.name}/cached:1", f"cached-{namespace.name}")
    source = f"{cluster.registry}/{namespace.name}/cached:1"
    namespace.imagestreams("tag", source, "cached:1", "--reference-policy", "local")
    namespace.imagestreams("set", "image-lookup", "cached")
    wait_until("the copy into the chart's registry", lambda: mirrored(namespace, "cached"), 180)
    local = f"{localchart.LOCAL_REGISTRY_HOST}/{namespace.name}/cached"
    assert namespace.get("imagestream", "cached", "{.status.dockerImageRepository}") == local
    wait_until(
        "the webhook to pin cached:1 to the cluster's copy",
        lambda: namespace.dry_run_pod("cached:1") == f"{local}@{digest}",
        timeout=60,
    )

    namespace.kubectl("create", "deployment", "cached", "--image", "cached:1")
    namespace.wait_rollout("cached")
    # containerd pulled it from the chart's registry: the only name it knows it by.
    assert namespace.image_ids("app=cached") == {f"{local}@{digest}"}

    # The upstream goes away, and the node forgets the image: a new pod must pull again,
    # and can only get it from the cluster's copy.
    cluster.stop_registry()
    namespace.kubectl("scale", "deployment/cached", "--replicas=0")
    wait_until(
        "cached's pods to go", lambda: not namespace.json("pods", "-l", "app=cached")["items"]
    )
    wait_until(
        "the node to forget the image",
        lambda: (
            cluster.crictl("rmi", f"{local}@{digest}", check=False).returncode == 0
            or digest not in cluster.crictl("images", "--digests", "--no-trunc").stdout
        ),
        timeout=60,
    )
    assert digest not in cluster.crictl("images", "--digests", "--no-trunc").stdout
    namespace.kubectl("scale", "deployment/cached", "--replicas=1")
    namespace.wait_rollout("cached")
    assert namespace.image_ids("app=cached") == {f"{local}@{digest}"}
