"""The controller's copy of every ImageStream, kept small; each change queues the stream.

What reconciling reads of a stream is its spec, its status (all of it: a status write
replaces the whole of it, history included) and, of its metadata, the name, namespace,
generation, resourceVersion, uid and labels. The rest of what the API server sends
(`managedFields`, a `kubectl apply` annotation, timestamps) is most of an object and is
never read, so `lean` drops it. What is kept is held as compressed JSON (`pack`), 1.2 KiB
for a stream of 5 tags x 3 history items where the parsed object took some 30 KiB:
the controller held 462 MiB at 10,000 streams when it kept whole objects. `get` unpacks a
fresh copy (about 0.1 ms; a reconcile parses the stream anyway).

Changes a person is waiting on go to the work queue's urgent lane (`requested`): a tag that
is new or was edited, or whose import `import-image` asked for, is imported ahead of a
scheduled pass over thousands of streams. The initial list is not urgent: all of it is new.

The echo of the controller's own status write (`wrote`, then the watch event carrying that
resourceVersion) is kept but not queued: the reconcile that wrote it already decided what
follows from it, and visiting the stream again cost a parse and a plan for nothing, once per
stream of a first import pass. Any other writer's change has another resourceVersion.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from webhook.kube.workqueue import WorkQueue
from webhook.model import streams

Key = tuple[str, str]  # (namespace, name)

# The metadata a reconcile reads: names the stream, carries the resourceVersion its status
# write is checked against, generation (the default tag generation), uid (Events), labels
# (ImagePolicy's namespace and stream selectors).
_METADATA = ("name", "namespace", "generation", "resourceVersion", "uid", "labels")
_ZLIB_LEVEL = 1  # JSON of digests compresses 4x at level 1; higher levels gain 5% at 3x CPU


def key_of(obj: Mapping[str, Any]) -> Key:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace", "")), str(metadata.get("name", ""))


def lean(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an ImageStream that reconciling reads (see the module's docstring)."""
    metadata = obj.get("metadata") or {}
    out: dict[str, Any] = {
        "apiVersion": obj.get("apiVersion", streams.API_VERSION),
        "kind": obj.get("kind", "ImageStream"),
        "metadata": {k: metadata[k] for k in _METADATA if k in metadata},
    }
    for part in ("spec", "status"):
        if part in obj:
            out[part] = obj[part]
    return out


def pack(obj: Mapping[str, Any]) -> bytes:
    return zlib.compress(json.dumps(lean(obj), separators=(",", ":")).encode(), _ZLIB_LEVEL)


def unpack(packed: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(zlib.decompress(packed))
    return value


def requested(obj: Mapping[str, Any]) -> bool:
    """Whether a stream has a tag whose spec generation status has not answered yet: a tag
    that is new or was edited, or one `import-image` asked to import again. Invalid streams
    are not (the reconcile will say why)."""
    try:
        stream = streams.parse_image_stream(obj)
    except streams.InvalidImageStream:
        return False
    for spec in stream.spec_tags:
        if spec.source is None:
            continue
        seen = streams.seen_generation(stream.history(spec.name))
        if seen is None or streams.tag_generation(stream, spec) > seen:
            return True
    return False


class StreamCache:
    """The latest copy of every ImageStream (lean and packed); each change queues the
    stream, urgently when `requested`."""

    def __init__(self, queue: WorkQueue[Key]) -> None:
        self._packed: dict[Key, bytes] = {}
        self._labels: dict[Key, Mapping[str, str]] = {}  # only streams that have labels
        self._lock = threading.Lock()
        self._queue = queue
        self._written: dict[Key, str] = {}  # resourceVersion of our own last status write
        self.deleted: list[Callable[[Mapping[str, Any]], object]] = []  # get the last copy
        self.listed = threading.Event()

    def get(self, key: Key) -> dict[str, Any] | None:
        """A fresh copy of the stream's lean object, or None."""
        packed = self._packed.get(key)
        return None if packed is None else unpack(packed)

    def labels(self, key: Key) -> Mapping[str, str]:
        return self._labels.get(key) or {}

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._packed)

    def __len__(self) -> int:
        return len(self._packed)

    def replace_all(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """The whole content, from a list: `objs` may be a paginated list's iterator, and
        is consumed one object at a time (never held whole)."""
        fresh: dict[Key, bytes] = {}
        labels: dict[Key, Mapping[str, str]] = {}
        for obj in objs:
            key = key_of(obj)
            fresh[key] = pack(obj)
            if found := _labels_of(obj):
                labels[key] = found
        with self._lock:
            self._packed, self._labels = fresh, labels
            self._written.clear()
        for key in fresh:
            self._queue.add(key)
        self.listed.set()

    def wrote(self, obj: Mapping[str, Any]) -> None:
        """`obj` is what our own status write returned: its echo needs no visit."""
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            with self._lock:
                self._written[key_of(obj)] = str(version)

    def upsert(self, obj: Mapping[str, Any]) -> None:
        key = key_of(obj)
        packed, found = pack(obj), _labels_of(obj)
        version = (obj.get("metadata") or {}).get("resourceVersion")
        with self._lock:
            self._packed[key] = packed
            if found:
                self._labels[key] = found
            else:
                self._labels.pop(key, None)
            echo = version is not None and self._written.pop(key, None) == str(version)
        if not echo:
            self._queue.add(key, urgent=requested(obj))

    def delete(self, obj: Mapping[str, Any]) -> None:
        key = key_of(obj)
        with self._lock:
            self._packed.pop(key, None)
            self._labels.pop(key, None)
            self._written.pop(key, None)
        for listener in self.deleted:
            listener(obj)
        self._queue.add(key)


def _labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels")
    return dict(labels) if isinstance(labels, Mapping) else {}
