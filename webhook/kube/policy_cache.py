"""ImagePolicies, namespace labels and stream images, kept in memory: what the webhook's
validation and the controller's policy labels and import checks read.

Each part is a sink for a `Watcher` (webhook.kube.watch), or is loaded once from files, so that a
validation never calls the API server. The stream side reuses the admission `StreamIndex`
(for short-name lookups) and adds, from the same watch, the set of images each namespace's
streams have held (for pinned references).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from webhook.kube.files import load_documents_of_kinds
from webhook.kube.watch import Watcher
from webhook.model import policy
from webhook.model.policy import InvalidPolicy, Policy, parse_policy
from webhook.model.resolution import StreamLookup
from webhook.model.streams import InvalidImageStream, StreamEntry, own, parse_image_stream

log = logging.getLogger(__name__)

# How long a validation waits for a namespace it has not seen yet: one created a moment ago
# (`kubectl apply` of a Namespace and a Deployment) may still be on its way through the watch.
NAMESPACE_WAIT = 2.0


def _name(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("name") or "")


def _namespace(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or "")


class _Sink:
    """Readiness, a change callback and a write lock: what every sink here shares."""

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._write = threading.Condition()
        self._ready = threading.Event()
        self._on_change = on_change

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()


class PolicySet(_Sink):
    """ImagePolicies by name. An invalid one is logged and left out (the CRD schema is the
    first line of defence; this is the second)."""

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        super().__init__(on_change)
        self._policies: dict[str, Policy] = {}
        self._snapshot: tuple[Policy, ...] = ()

    def all(self) -> tuple[Policy, ...]:
        return self._snapshot

    def __len__(self) -> int:
        return len(self._policies)

    def replace_all(self, objs: Iterable[Mapping[str, Any]]) -> None:
        fresh = {}
        for obj in objs:
            parsed = _policy_or_none(obj)
            if parsed is not None:
                fresh[parsed.name] = parsed
        with self._write:
            self._policies = fresh
            self._snapshot = tuple(fresh.values())
        self._ready.set()
        self._changed()

    def upsert(self, obj: Mapping[str, Any]) -> None:
        parsed = _policy_or_none(obj)
        with self._write:
            if parsed is None:
                self._policies.pop(_name(obj), None)
            else:
                self._policies[parsed.name] = parsed
            self._snapshot = tuple(self._policies.values())
        self._changed()

    def delete(self, obj: Mapping[str, Any]) -> None:
        with self._write:
            self._policies.pop(_name(obj), None)
            self._snapshot = tuple(self._policies.values())
        self._changed()


def _policy_or_none(obj: Mapping[str, Any]) -> Policy | None:
    try:
        return parse_policy(obj)
    except InvalidPolicy as err:
        log.warning("ignoring %s", err)
        return None


class NamespaceLabels(_Sink):
    """Namespace name → labels. `labels()` waits briefly for a namespace not seen yet."""

    def __init__(
        self, on_change: Callable[[], None] | None = None, *, wait: float = NAMESPACE_WAIT
    ) -> None:
        super().__init__(on_change)
        self._labels: dict[str, dict[str, str]] = {}
        self.wait = wait  # seconds labels() waits for an unknown namespace

    def __len__(self) -> int:
        return len(self._labels)

    def known(self, name: str) -> bool:
        return name in self._labels

    def snapshot(self) -> dict[str, dict[str, str]]:
        return dict(self._labels)

    def labels(self, name: str) -> dict[str, str]:
        """The namespace's labels (always with kubernetes.io/metadata.name)."""
        found = self._labels.get(name)
        if found is None and self.wait > 0:
            with self._write:
                self._write.wait_for(lambda: name in self._labels, timeout=self.wait)
            found = self._labels.get(name)
        return policy.namespace_labels_of(name, found)

    def replace_all(self, objs: Iterable[Mapping[str, Any]]) -> None:
        fresh = {_name(obj): _labels(obj) for obj in objs}
        with self._write:
            self._labels = fresh
            self._write.notify_all()
        self._ready.set()
        self._changed()

    def upsert(self, obj: Mapping[str, Any]) -> None:
        with self._write:
            labels = dict(self._labels)
            labels[_name(obj)] = _labels(obj)
            self._labels = labels
            self._write.notify_all()
        self._changed()

    def delete(self, obj: Mapping[str, Any]) -> None:
        with self._write:
            labels = dict(self._labels)
            labels.pop(_name(obj), None)
            self._labels = labels
        self._changed()


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}


class StreamImages(_Sink):
    """For each namespace, the (repository, digest) pairs its streams have held.

    A lookup is one dict probe however many streams the namespace has: each namespace keeps
    a count of the streams holding each pair, adjusted by the difference on every update.
    """

    def __init__(self) -> None:
        super().__init__()
        self._streams: dict[tuple[str, str], frozenset[tuple[str, str]]] = {}
        self._counts: dict[str, dict[tuple[str, str], int]] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def contains(self, namespace: str, repository: str, digest: str) -> bool:
        counts = self._counts.get(namespace)
        return counts is not None and (repository, digest) in counts

    def replace_all(self, objs: Iterable[Mapping[str, Any]]) -> None:
        streams = {(_namespace(obj), _name(obj)): _images(obj) for obj in objs}
        counts: dict[str, dict[tuple[str, str], int]] = {}
        for (namespace, _), images in streams.items():
            held = counts.setdefault(namespace, {})
            for pair in images:
                held[pair] = held.get(pair, 0) + 1
        with self._write:
            self._streams, self._counts = streams, counts
        self._ready.set()

    def upsert(self, obj: Mapping[str, Any]) -> None:
        self._set((_namespace(obj), _name(obj)), _images(obj))

    def delete(self, obj: Mapping[str, Any]) -> None:
        self._set((_namespace(obj), _name(obj)), frozenset())

    def _set(self, key: tuple[str, str], images: frozenset[tuple[str, str]]) -> None:
        with self._write:
            old = self._streams.pop(key, frozenset())
            if images:
                self._streams[key] = images
            held = self._counts.setdefault(key[0], {})
            for pair in images - old:
                held[pair] = held.get(pair, 0) + 1
            for pair in old - images:
                if held.get(pair, 0) <= 1:
                    held.pop(pair, None)
                else:
                    held[pair] -= 1


def _images(obj: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    try:
        images = policy.stream_images(parse_image_stream(obj))
    except InvalidImageStream:
        return frozenset()  # index.py logs it once already
    return frozenset((own(repository), own(digest)) for repository, digest in images)


class PolicyStreamView:
    """admission's stream lookup plus image membership: what `policy.validate` needs."""

    def __init__(self, streams: StreamLookup | None, images: StreamImages) -> None:
        self._streams = streams  # the admission StreamIndex
        self._images = images

    def get(self, namespace: str, name: str) -> StreamEntry | None:
        return self._streams.get(namespace, name) if self._streams is not None else None

    def has_image(self, namespace: str, repository: str, digest: str) -> bool:
        return self._images.contains(namespace, repository, digest)


class PolicyIndex:
    """Policies and namespace labels (watch- or file-fed), and the stream view."""

    def __init__(
        self,
        streams: StreamLookup | None,
        images: StreamImages,
        *,
        on_change: Callable[[], None] | None = None,
        namespace_wait: float = NAMESPACE_WAIT,
    ) -> None:
        self.policies = PolicySet(on_change)
        self.namespaces = NamespaceLabels(on_change, wait=namespace_wait)
        self.images = images
        self.streams = PolicyStreamView(streams, images)
        self._watchers: list[Watcher] = []

    @property
    def ready(self) -> bool:
        return self.policies.ready and self.namespaces.ready and self.images.ready

    def watch(self, api_client: Any) -> PolicyIndex:
        """Start the policy and namespace watches (the stream watch is the caller's)."""
        from kubernetes import client

        custom = client.CustomObjectsApi(api_client)
        core = client.CoreV1Api(api_client)
        self._watchers = [
            Watcher(
                self.policies,
                custom.list_cluster_custom_object,
                policy.GROUP,
                policy.VERSION,
                policy.PLURAL,
                what="image policies",
                missing_ok=True,
            ).start(),
            Watcher(self.namespaces, core.list_namespace, what="namespaces").start(),
        ]
        return self

    def stop(self) -> None:
        for watcher in self._watchers:
            watcher.stop()

    def load_files(self, path: str | Path | None) -> PolicyIndex:
        """Policies and Namespaces (for their labels) from a file or directory; None: none."""
        policies, namespaces = load_policy_documents(path) if path else ([], [])
        self.policies.replace_all(policies)
        self.namespaces.wait = 0.0  # nothing more will arrive
        self.namespaces.replace_all(namespaces)
        return self


def load_policy_documents(
    path: str | Path,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(ImagePolicy objects, Namespace objects) from YAML/JSON files, multi-doc or List."""
    found = load_documents_of_kinds(path, {"ImagePolicy", "Namespace"}, "policies file")
    policies = [d for d in found if d.get("kind") == "ImagePolicy"]
    for obj in policies:
        parse_policy(obj)  # a file is checked strictly: a bad policy is an error, not a log
    return policies, [d for d in found if d.get("kind") == "Namespace"]
