"""The in-memory stream index that admission reads: fed by a watch, or by files.

Admission never waits on the API server: it reads `StreamIndex.get`, a dict lookup of
entries that were computed when each stream last changed.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

from webhook.kube.connect import GROUP, PLURAL, VERSION
from webhook.model.streams import InvalidImageStream, StreamEntry, parse_image_stream, stream_entry

log = logging.getLogger(__name__)


class StreamIndex:
    """Thread-safe map (namespace, name) → StreamEntry. Readers take no lock."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], StreamEntry] = {}
        self._write = threading.Lock()
        self._ready = threading.Event()

    def get(self, namespace: str, name: str) -> StreamEntry | None:
        return self._entries.get((namespace, name))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def ready(self) -> bool:
        """True once a full list has been loaded: before that, a miss means nothing."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def upsert(self, obj: Mapping[str, Any]) -> None:
        entry = _entry_or_none(obj)
        key = _key(obj)
        with self._write:
            if entry is None:
                self._entries.pop(key, None)
            else:
                self._entries[key] = entry

    def delete(self, obj: Mapping[str, Any]) -> None:
        with self._write:
            self._entries.pop(_key(obj), None)

    def replace_all(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """Swap in a complete new content (after a list), then mark the index ready."""
        fresh = {}
        for obj in objs:
            entry = _entry_or_none(obj)
            if entry is not None:
                fresh[_key(obj)] = entry
        with self._write:
            self._entries = fresh
        self._ready.set()


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return own(str(metadata.get("namespace") or "")), own(str(metadata.get("name") or ""))


def _entry_or_none(obj: Mapping[str, Any]) -> StreamEntry | None:
    try:
        entry = stream_entry(parse_image_stream(obj))
    except InvalidImageStream as err:
        ns, name = _key(obj)
        log.warning("ignoring image stream %s/%s: %s", ns, name, err)
        return None
    return StreamEntry(
        namespace=own(entry.namespace),
        name=own(entry.name),
        lookup_local=entry.lookup_local,
        images={own(tag): None if ref is None else own(ref) for tag, ref in entry.images.items()},
        notes=entry.notes,
    )


def own(text: str) -> str:
    """`text` as a string of its own (interned), sharing nothing with the decoded object.

    An entry that kept strings of a decoded list would pin the allocator's arenas holding the
    rest of that list: after loading 10,000 streams x 5 tags x 3 history items, ~20 MiB of
    index held ~180 MiB of RSS in every worker (bench/, figure 4).
    """
    return sys.intern(text.encode().decode()) if text else text


# --- file mode ---------------------------------------------------------------------------


def load_streams(path: str | Path) -> list[dict[str, Any]]:
    """ImageStreams from a YAML/JSON file or a directory of them (multi-doc, List kinds)."""
    return load_documents_of_kinds(path, {"ImageStream"}, "streams file")


def load_documents_of_kinds(path: str | Path, kinds: set[str], what: str) -> list[dict[str, Any]]:
    """The objects of `kinds` in a YAML/JSON file or a directory of them (multi-doc, and
    the items of List kinds); `what` names the file in errors."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    files = (
        sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
        if path.is_dir()
        else [path]
    )
    found: list[dict[str, Any]] = []
    for file in files:
        for doc in _documents(file):
            found.extend(_objects_of_kinds(doc, kinds))
    return found


def _documents(file: Path) -> Iterator[Any]:
    text = file.read_text()
    try:
        if file.suffix == ".json":
            yield json.loads(text)
        else:
            yield from yaml.safe_load_all(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ValueError(f"{file}: not valid YAML/JSON: {err}") from err


def _objects_of_kinds(doc: Any, kinds: set[str]) -> Iterator[dict[str, Any]]:
    if not isinstance(doc, dict):
        return
    kind = str(doc.get("kind", ""))
    items = doc.get("items")
    if kind.endswith("List") and kind.removesuffix("List") in {"", *kinds}:
        for item in items if isinstance(items, list) else []:
            yield from _objects_of_kinds(item, kinds)
    elif kind in kinds:
        yield doc


def file_index(path: str | Path) -> StreamIndex:
    index = StreamIndex()
    index.replace_all(load_streams(path))
    return index


# --- cluster mode ------------------------------------------------------------------------


class StreamSink(Protocol):
    """What a watch feeds: the admission index, or the controller's cache."""

    def replace_all(self, objs: Iterable[Mapping[str, Any]]) -> None: ...

    def upsert(self, obj: Mapping[str, Any]) -> None: ...

    def delete(self, obj: Mapping[str, Any]) -> None: ...

    def __len__(self) -> int: ...


class Watcher:
    """List, then watch one kind of object, keeping `sink` (any StreamSink) current.

    `list_fn(*args)` is a kubernetes client list call (`list_cluster_custom_object`,
    `list_namespace`, ...); objects reach the sink as plain dicts whatever the call's model.
    Resumes from the last resourceVersion after a dropped connection, relists on 410 Gone
    (the version has been compacted away), and backs off while the API server is away.
    With `missing_ok`, a 404 on the list (the CRD is not installed) loads an empty content,
    marking the sink ready, and the list is retried with backoff until the kind appears.
    """

    def __init__(
        self,
        sink: StreamSink,
        list_fn: Callable[..., Any],
        *args: str,
        what: str = "objects",
        missing_ok: bool = False,
        watch_timeout: int = 300,
        max_backoff: float = 30.0,
    ) -> None:
        self._index = sink
        self._list_fn = list_fn
        self._args = args
        self._what = what
        self._missing_ok = missing_ok
        self._watch_timeout = watch_timeout
        self._max_backoff = max_backoff
        self._stop = threading.Event()
        name = f"watch-{what.replace(' ', '-')}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        failures = 0
        resource_version: str | None = None
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list()
                resource_version = self._watch(resource_version)
                failures = 0
            except ApiException as err:
                if err.status == 410:
                    log.info("watch expired (410 Gone); relisting %s", self._what)
                    resource_version = None
                    continue
                failures += 1
                if err.status == 404 and self._missing_ok:
                    if not self._index_ready():
                        log.info("%s: no such resource (CRD not installed?)", self._what)
                    self._index.replace_all([])
                elif err.status == 403:
                    log.error(
                        "%s: forbidden; the service account needs list and watch on them (%s)",
                        self._what,
                        err.reason,
                    )
                else:
                    log.warning("%s watch failed: %s %s", self._what, err.status, err.reason)
            except Exception as err:  # the watch must outlive any single failure
                failures += 1
                log.warning("%s watch failed: %s", self._what, err)
            if failures:
                self._stop.wait(self._backoff(failures))

    def _index_ready(self) -> bool:
        return bool(getattr(self._index, "ready", False))

    def _backoff(self, failures: int) -> float:
        base: float = min(self._max_backoff, 0.5 * 2 ** min(failures, 10))
        return base * random.uniform(0.5, 1.0)

    def _list(self) -> str:
        response = self._list_fn(*self._args, _preload_content=False)
        result = json.loads(response.data)
        self._index.replace_all(result.get("items") or [])
        log.info("listed %d %s", len(self._index), self._what)
        return str(result["metadata"]["resourceVersion"])

    def _watch(self, resource_version: str) -> str:
        from kubernetes import watch

        stream = watch.Watch()
        started = time.monotonic()
        for event in stream.stream(
            self._list_fn,
            *self._args,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self._watch_timeout,
        ):
            if self._stop.is_set():
                stream.stop()
                break
            obj = event.get("raw_object", event["object"])  # a dict, whatever the model
            kind = event["type"]
            if kind in ("ADDED", "MODIFIED"):
                self._index.upsert(obj)
            elif kind == "DELETED":
                self._index.delete(obj)
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                resource_version = rv
        log.debug("%s watch ended after %.0fs", self._what, time.monotonic() - started)
        return resource_version


class StreamWatcher(Watcher):
    """List, then watch all ImageStreams, keeping `index` (any StreamSink) current."""

    def __init__(
        self,
        index: StreamSink,
        api: Any,
        *,
        watch_timeout: int = 300,
        max_backoff: float = 30.0,
    ) -> None:
        super().__init__(
            index,
            api.list_cluster_custom_object,  # kubernetes.client.CustomObjectsApi
            GROUP,
            VERSION,
            PLURAL,
            what="image streams",
            watch_timeout=watch_timeout,
            max_backoff=max_backoff,
        )
