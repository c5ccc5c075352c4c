"""ImagePolicies, namespace labels and stream images, kept in memory: what the webhook's
validation and the controller's policy labels and import checks read.

Each part is a sink for a `Watcher` (webhook.kube.watch), or is loaded once from files, so that a
validation never calls the API server. The stream side reuses the admission `StreamIndex`
(for short-name lookups) and adds, from the same watch, the set of images each namespace's
streams have held (for pinned references).
"""

from __future__ import annotations

import logging
import os
import threading
from array import array
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Mapping
from hashlib import blake2b
from pathlib import Path
from typing import Any

from webhook.kube.files import load_documents_of_kinds
from webhook.kube.watch import ClientSource, Source, Watcher
from webhook.model import policy
from webhook.model.policy import InvalidPolicy, Policy, parse_policy
from webhook.model.resolution import StreamLookup
from webhook.model.streams import InvalidImageStream, StreamEntry, own, read_once

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

    Each pair is kept as a 64-bit keyed hash (`_pair_key`), in one sorted array per
    namespace (a pair held by several streams is there once for each), and each stream
    keeps its own pairs' keys to take them out again on update. That is 16 bytes a pair
    where strings, tuples and per-namespace dicts of them took ~300 (44 MiB for 10,000
    streams x 5 tags x 3 history items, three times the admission index). A lookup is a
    binary search. The key is secret to the process (a random BLAKE2b key), so a pair that
    no stream holds cannot be made to collide with one that does.
    """

    def __init__(self) -> None:
        super().__init__()
        self._streams: dict[tuple[str, str], array[int]] = {}
        self._keys: dict[str, array[int]] = {}  # namespace -> sorted keys of its pairs

    def __len__(self) -> int:
        return len(self._streams)

    def contains(self, namespace: str, repository: str, digest: str) -> bool:
        keys = self._keys.get(namespace)
        if not keys:
            return False
        key = _pair_key(repository, digest)
        at = bisect_left(keys, key)
        return at < len(keys) and keys[at] == key

    def replace_all(self, objs: Iterable[Mapping[str, Any]]) -> None:
        loading = self.loader()
        for obj in objs:
            loading.add(obj)
        loading.commit()

    def loader(self) -> _ImagesLoading:
        """A new content built one object at a time (objs need not be held all at once)."""
        return _ImagesLoading(self)

    def _swap(
        self, streams: dict[tuple[str, str], array[int]], keys: dict[str, array[int]]
    ) -> None:
        with self._write:
            self._streams, self._keys = streams, keys
        self._ready.set()

    def upsert(self, obj: Mapping[str, Any]) -> None:
        self._set((own(_namespace(obj)), own(_name(obj))), _images(obj))

    def delete(self, obj: Mapping[str, Any]) -> None:
        self._set((own(_namespace(obj)), own(_name(obj))), _EMPTY)

    def _set(self, key: tuple[str, str], images: array[int]) -> None:
        with self._write:
            old = self._streams.pop(key, _EMPTY)
            if images:
                self._streams[key] = images
            if old == images:
                return
            # A new array, not an edit in place: readers take no lock.
            held = list(self._keys.get(key[0], _EMPTY))
            for pair in old:
                del held[bisect_left(held, pair)]
            for pair in images:
                insort(held, pair)
            if held:
                self._keys[key[0]] = array("Q", held)
            else:
                self._keys.pop(key[0], None)


_EMPTY: array[int] = array("Q")
# A per-process key: which pairs collide is unknowable from outside the process.
_PAIR_KEY = os.urandom(16)


def _pair_key(repository: str, digest: str) -> int:
    hashed = blake2b(f"{repository}@{digest}".encode(), digest_size=8, key=_PAIR_KEY)
    return int.from_bytes(hashed.digest(), "little")


class _ImagesLoading:
    def __init__(self, images: StreamImages) -> None:
        self._images = images
        self._streams: dict[tuple[str, str], array[int]] = {}
        self._keys: dict[str, array[int]] = {}  # unsorted until commit

    def add(self, obj: Mapping[str, Any]) -> None:
        images = _images(obj)
        if images:
            key = (own(_namespace(obj)), own(_name(obj)))
            old = self._streams.get(key)
            if old is not None:  # the same stream twice (two files): the last one counts
                self._keys[key[0]] = array("Q", _without(self._keys[key[0]], old))
            self._streams[key] = images
            self._keys.setdefault(key[0], array("Q")).extend(images)

    def commit(self) -> None:
        # Sorted a namespace at a time: a list of Python ints for every pair at once was
        # the load's peak (30 MiB at 50,000 streams).
        keys = self._keys
        for namespace, held in keys.items():
            keys[namespace] = array("Q", sorted(held))
        self._images._swap(self._streams, keys)


def _without(held: array[int], gone: array[int]) -> list[int]:
    rest = sorted(held)
    for pair in gone:
        del rest[bisect_left(rest, pair)]
    return rest


def _images(obj: Mapping[str, Any]) -> array[int]:
    """The sorted keys of the distinct pairs a stream holds."""
    try:
        images = policy.stream_images(read_once(obj))
    except InvalidImageStream:
        return _EMPTY  # index.py logs it once already
    return array("Q", sorted({_pair_key(repository, digest) for repository, digest in images}))


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
        """Start the policy and namespace watches (the stream watch is the caller's) through
        the kubernetes client."""
        from kubernetes import client

        custom = client.CustomObjectsApi(api_client)
        core = client.CoreV1Api(api_client)
        policies = ClientSource(
            custom.list_cluster_custom_object, (policy.GROUP, policy.VERSION, policy.PLURAL)
        )
        return self.watch_sources(policies, ClientSource(core.list_namespace))

    def watch_sources(self, policies: Source, namespaces: Source) -> PolicyIndex:
        """Start the policy and namespace watches from these sources."""
        self._watchers = [
            Watcher(self.policies, policies, what="image policies", missing_ok=True).start(),
            Watcher(self.namespaces, namespaces, what="namespaces").start(),
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
