"""The workloads that carry image triggers, as the controller's watches report them: lean
(per workload its kind, namespace, name, uid and parsed triggers, never the object) and
indexed by the stream each trigger follows, in any namespace.

    index = WorkloadIndex(on_change)
    Watcher(index.sink("Deployment"), metadata_lister(apps_api, "Deployment"), ...)
    index.following("ops", "keycloak", {"20.0"})   # who follows a tag that moved

Each watch event goes through `triggers.react` against what the index remembers of the
workload; when a trigger should apply now (the workload is new, or its annotation gained
or changed an entry) or the annotation has new problems to report, `on_change(key,
triggers)` is called, outside the lock, with the triggers to apply (possibly none).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.model.triggers import (
    TRIGGER_KINDS,
    TRIGGERS_ANNOTATION,
    Followed,
    Reaction,
    Trigger,
    WorkloadEvent,
    listed_event,
    react,
)
from webhook.model.workloads import WORKLOADS

WorkloadKey = tuple[str, str, str]  # (kind, namespace, name)
StreamKey = tuple[str, str]  # (namespace, name)
OnChange = Callable[[WorkloadKey, tuple[Trigger, ...]], object]

# Ask the API server for metadata only (PartialObjectMetadata): the annotation is all the
# index needs, and a workload's pod spec and status need not cross the wire or be parsed.
# A list and a watch each need their own: a watch asked for a List type sends nothing.
_AS_METADATA = "application/json;as={};g=meta.k8s.io;v=v1,application/json"
METADATA_LIST = _AS_METADATA.format("PartialObjectMetadataList")
METADATA_WATCH = _AS_METADATA.format("PartialObjectMetadata")


@dataclass(frozen=True, slots=True)
class _Workload:
    uid: str
    followed: Followed


class WorkloadIndex:
    """Workloads with triggers (or with problems in their annotation), fed by one watch
    per kind through `sink(kind)`; thread-safe."""

    def __init__(self, on_change: OnChange) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._workloads: dict[WorkloadKey, _Workload] = {}
        self._by_stream: dict[StreamKey, set[WorkloadKey]] = {}
        self._listed = {kind: threading.Event() for kind in TRIGGER_KINDS}

    def sink(self, kind: str) -> KindSink:
        """What the watch of one kind feeds (a webhook.kube.watch.StreamSink)."""
        return KindSink(self, kind)

    def __len__(self) -> int:
        return len(self._workloads)

    def count(self, kind: str) -> int:
        with self._lock:
            return sum(1 for key in self._workloads if key[0] == kind)

    def wait_listed(self, timeout: float) -> bool:
        """Wait until every kind has been listed once; False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        return all(e.wait(max(0.0, deadline - time.monotonic())) for e in self._listed.values())

    def following(self, namespace: str, stream: str, tags: Container[str]) -> list[WorkloadKey]:
        """The workloads with an unpaused trigger on one of `tags` of stream
        `namespace/stream`, in any namespace, in a stable order."""
        with self._lock:
            keys = list(self._by_stream.get((namespace, stream), ()))
            found = [
                key
                for key in keys
                if any(
                    (t.namespace, t.stream) == (namespace, stream) and t.tag in tags
                    for t in self._workloads[key].followed.triggers
                )
            ]
        return sorted(found)

    def remembered(self, key: WorkloadKey) -> Followed | None:
        with self._lock:
            workload = self._workloads.get(key)
        return workload.followed if workload is not None else None

    # -- what the watches feed -------------------------------------------------------------

    def _replace_all(self, kind: str, objs: Iterable[Mapping[str, Any]]) -> None:
        """A (re)list of one kind. The first one is what was there when the controller
        started; a later one (after the watch expired) also shows what changed meanwhile."""
        first = not self._listed[kind].is_set()
        seen: set[WorkloadKey] = set()
        for obj in objs:
            metadata = obj.get("metadata") or {}
            event = listed_event(metadata.get("generation")) if first else "modified"
            seen.add(self._upsert(kind, obj, event))
        with self._lock:
            gone = [key for key in self._workloads if key[0] == kind and key not in seen]
            for key in gone:
                self._store(key, "", None)
        self._listed[kind].set()

    def _upsert(self, kind: str, obj: Mapping[str, Any], event: WorkloadEvent) -> WorkloadKey:
        metadata = obj.get("metadata") or {}
        namespace, name = str(metadata.get("namespace", "")), str(metadata.get("name", ""))
        uid = str(metadata.get("uid", ""))
        annotations = metadata.get("annotations")
        text = annotations.get(TRIGGERS_ANNOTATION) if isinstance(annotations, Mapping) else None
        key = (kind, sys.intern(namespace), name)
        with self._lock:
            known = self._workloads.get(key)
            if known is not None and known.uid != uid:
                event = "added"  # deleted and created again under the same name
            old = known.followed if known is not None else None
            reaction: Reaction = react(
                old, text if isinstance(text, str) else None, namespace, event
            )
            if reaction.remember != old:
                self._store(key, uid, reaction.remember)
        if reaction.apply or reaction.report:
            self._on_change(key, reaction.apply)
        return key

    def _delete(self, kind: str, obj: Mapping[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        key = (kind, str(metadata.get("namespace", "")), str(metadata.get("name", "")))
        with self._lock:
            self._store(key, "", None)

    def _store(self, key: WorkloadKey, uid: str, followed: Followed | None) -> None:
        """Remember (or, with None, forget) a workload and index it by stream. Holds the
        lock. Strings repeated across workloads are interned: thousands of workloads share
        a few namespaces, streams and field paths."""
        old = self._workloads.pop(key, None)
        for stream in _streams(old.followed if old else None):
            keys = self._by_stream.get(stream)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_stream[stream]
        if followed is None:
            return
        compact = Followed(tuple(_interned(t) for t in followed.triggers), followed.problems)
        self._workloads[key] = _Workload(uid, compact)
        for stream in _streams(compact):
            self._by_stream.setdefault(stream, set()).add(key)


class KindSink:
    """One kind's view of the index, in the shape a Watcher feeds (StreamSink)."""

    def __init__(self, index: WorkloadIndex, kind: str) -> None:
        self._index = index
        self._kind = kind

    def __len__(self) -> int:
        return self._index.count(self._kind)

    def replace_all(self, objs: Iterable[Mapping[str, Any]]) -> None:
        self._index._replace_all(self._kind, objs)

    def upsert(self, obj: Mapping[str, Any]) -> None:
        # A watch's ADDED and MODIFIED both arrive here: what the index remembers tells a
        # new workload (nothing remembered) from a later version.
        self._index._upsert(self._kind, obj, "modified")

    def delete(self, obj: Mapping[str, Any]) -> None:
        self._index._delete(self._kind, obj)


def metadata_lister(workload_api: Any, kind: str) -> Callable[..., Any]:
    """The list-all-namespaces call of `kind` (its group's API object, webhook.kube.api),
    asking for metadata only; a Watcher's `list_fn`. Its watch events stay plain dicts:
    the kubernetes client's Watch finds no model named in this function's return
    annotation or docstring to deserialize them into."""
    list_all = getattr(workload_api, f"list_{WORKLOADS[kind].snake_name}_for_all_namespaces")

    def list_metadata(**kwargs: Any) -> Any:
        accept = METADATA_WATCH if kwargs.get("watch") else METADATA_LIST
        return list_all(_headers={"Accept": accept}, **kwargs)

    return list_metadata


def _streams(followed: Followed | None) -> set[StreamKey]:
    return {(t.namespace, t.stream) for t in followed.triggers} if followed else set()


def _interned(trigger: Trigger) -> Trigger:
    return Trigger(
        sys.intern(trigger.stream),
        sys.intern(trigger.tag),
        sys.intern(trigger.field_path),
        sys.intern(trigger.namespace),
        trigger.paused,
    )
