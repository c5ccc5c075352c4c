"""List, then watch: the one loop that keeps an in-memory copy of a kind current, for the
webhook's indexes and the controller's cache."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from webhook.kube.connect import GROUP, PLURAL, VERSION
from webhook.model.backoff import backoff

log = logging.getLogger(__name__)


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
        return backoff(failures, initial=1.0, cap=self._max_backoff, jitter=0.5)

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


class Tee:
    """One watch feeding several sinks; its length and readiness are the first one's."""

    def __init__(self, first: StreamSink, *others: StreamSink) -> None:
        self._sinks = (first, *others)

    @property
    def ready(self) -> bool:
        return bool(getattr(self._sinks[0], "ready", False))

    def __len__(self) -> int:
        return len(self._sinks[0])

    def replace_all(self, objs: Iterable[Mapping[str, Any]]) -> None:
        items = list(objs)
        for sink in self._sinks:
            sink.replace_all(items)

    def upsert(self, obj: Mapping[str, Any]) -> None:
        for sink in self._sinks:
            sink.upsert(obj)

    def delete(self, obj: Mapping[str, Any]) -> None:
        for sink in self._sinks:
            sink.delete(obj)
