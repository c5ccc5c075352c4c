"""The in-memory stream index that admission reads: fed by a watch, or by files.

Admission never waits on the API server: it reads `StreamIndex.get`, a dict lookup of
entries that were computed when each stream last changed.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

from webhook.kube import GROUP, PLURAL, VERSION
from webhook.streams import InvalidImageStream, StreamEntry, parse_image_stream, stream_entry

log = logging.getLogger(__name__)

_LIST_KINDS = {"List", "ImageStreamList"}


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
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def _entry_or_none(obj: Mapping[str, Any]) -> StreamEntry | None:
    try:
        return stream_entry(parse_image_stream(obj))
    except InvalidImageStream as err:
        ns, name = _key(obj)
        log.warning("ignoring image stream %s/%s: %s", ns, name, err)
        return None


# --- file mode ---------------------------------------------------------------------------


def load_streams(path: str | Path) -> list[dict[str, Any]]:
    """ImageStreams from a YAML/JSON file or a directory of them (multi-doc, List kinds)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"streams file {path} does not exist")
    files = (
        sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
        if path.is_dir()
        else [path]
    )
    streams: list[dict[str, Any]] = []
    for file in files:
        for doc in _documents(file):
            streams.extend(_image_streams(doc))
    return streams


def _documents(file: Path) -> Iterator[Any]:
    text = file.read_text()
    try:
        if file.suffix == ".json":
            yield json.loads(text)
        else:
            yield from yaml.safe_load_all(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ValueError(f"{file}: not valid YAML/JSON: {err}") from err


def _image_streams(doc: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(doc, dict):
        return
    if doc.get("kind") in _LIST_KINDS:
        for item in doc.get("items") or []:
            yield from _image_streams(item)
    elif doc.get("kind") == "ImageStream":
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


class StreamWatcher:
    """List, then watch all ImageStreams, keeping `index` (any StreamSink) current.

    Resumes from the last resourceVersion after a dropped connection, relists on 410 Gone
    (the version has been compacted away), and backs off while the API server is away.
    """

    def __init__(
        self,
        index: StreamSink,
        api: Any,
        *,
        watch_timeout: int = 300,
        max_backoff: float = 30.0,
    ) -> None:
        self._index = index
        self._api = api  # kubernetes.client.CustomObjectsApi
        self._watch_timeout = watch_timeout
        self._max_backoff = max_backoff
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-watch", daemon=True)

    def start(self) -> StreamWatcher:
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
                    log.info("watch expired (410 Gone); relisting image streams")
                    resource_version = None
                    continue
                failures += 1
                log.warning("image stream watch failed: %s %s", err.status, err.reason)
            except Exception as err:  # the watch must outlive any single failure
                failures += 1
                log.warning("image stream watch failed: %s", err)
            if failures:
                self._stop.wait(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        base: float = min(self._max_backoff, 0.5 * 2 ** min(failures, 10))
        return base * random.uniform(0.5, 1.0)

    def _list(self) -> str:
        result = self._api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        self._index.replace_all(result.get("items") or [])
        log.info("listed %d image streams", len(self._index))
        return str(result["metadata"]["resourceVersion"])

    def _watch(self, resource_version: str) -> str:
        from kubernetes import watch

        stream = watch.Watch()
        started = time.monotonic()
        for event in stream.stream(
            self._api.list_cluster_custom_object,
            GROUP,
            VERSION,
            PLURAL,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self._watch_timeout,
        ):
            if self._stop.is_set():
                stream.stop()
                break
            obj = event["object"]
            kind = event["type"]
            if kind in ("ADDED", "MODIFIED"):
                self._index.upsert(obj)
            elif kind == "DELETED":
                self._index.delete(obj)
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                resource_version = rv
        log.debug("watch ended after %.0fs", time.monotonic() - started)
        return resource_version
