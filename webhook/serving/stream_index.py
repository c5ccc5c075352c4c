"""The in-memory stream index that admission reads: fed by a watch, or by files.

Admission never waits on the API server: it reads `StreamIndex.get`, a dict lookup of
entries that were computed when each stream last changed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from webhook.kube.files import iter_documents_of_kinds, load_documents_of_kinds
from webhook.model.streams import (
    InvalidImageStream,
    StreamEntry,
    entry_once,
    own,
    read_once,
)

log = logging.getLogger(__name__)

# Most streams have no notes: one shared empty mapping, not an empty dict each (64 bytes).
_NO_NOTES: Mapping[str, str] = MappingProxyType({})


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
        loading = self.loader()
        for obj in objs:
            loading.add(obj)
        loading.commit()

    def loader(self) -> _Loading:
        """A new content built one object at a time (objs need not be held all at once)."""
        return _Loading(self)


class _Loading:
    def __init__(self, index: StreamIndex) -> None:
        self._index = index
        self._fresh: dict[tuple[str, str], StreamEntry] = {}

    def add(self, obj: Mapping[str, Any]) -> None:
        entry = _entry_or_none(obj)
        if entry is not None:
            self._fresh[_key(obj)] = entry

    def commit(self) -> None:
        index = self._index
        with index._write:
            index._entries = self._fresh
        index._ready.set()


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return own(str(metadata.get("namespace") or "")), own(str(metadata.get("name") or ""))


def _entry_or_none(obj: Mapping[str, Any]) -> StreamEntry | None:
    try:
        entry = entry_once(read_once(obj))
    except InvalidImageStream as err:
        ns, name = _key(obj)
        log.warning("ignoring image stream %s/%s: %s", ns, name, err)
        return None
    return StreamEntry(
        namespace=own(entry.namespace),
        name=own(entry.name),
        lookup_local=entry.lookup_local,
        images={own(tag): None if ref is None else own(ref) for tag, ref in entry.images.items()},
        notes=entry.notes or _NO_NOTES,
    )


# --- file mode ---------------------------------------------------------------------------


def load_streams(path: str | Path) -> list[dict[str, Any]]:
    """ImageStreams from a YAML/JSON file or a directory of them (multi-doc, List kinds)."""
    return load_documents_of_kinds(path, {"ImageStream"}, "streams file")


def iter_streams(path: str | Path) -> Iterator[dict[str, Any]]:
    """load_streams, one stream at a time (what `serve --streams-file` indexes)."""
    return iter_documents_of_kinds(path, {"ImageStream"}, "streams file")


def file_index(path: str | Path) -> StreamIndex:
    index = StreamIndex()
    index.replace_all(iter_streams(path))
    return index
