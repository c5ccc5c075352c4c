"""A StreamSink for tests of the watch loop (webhook/kube/watch.py): it keeps the names it
has seen and counts the lists; unit, reliability and e2e tests share it."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any


class NameSink:
    """Names of the objects listed and watched; `lists` counts the lists, `listed` is set at
    the first (and makes the sink `ready`, as the real indexes are once loaded)."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.lists = 0
        self.listed = threading.Event()

    @property
    def ready(self) -> bool:
        return self.listed.is_set()

    def replace_all(self, objs: Iterable[Mapping[str, Any]]) -> None:
        self.names = {obj["metadata"]["name"] for obj in objs}
        self.lists += 1
        self.listed.set()

    def upsert(self, obj: Mapping[str, Any]) -> None:
        self.names.add(obj["metadata"]["name"])

    def delete(self, obj: Mapping[str, Any]) -> None:
        self.names.discard(obj["metadata"]["name"])

    def __len__(self) -> int:
        return len(self.names)
