"""List, then watch: the one loop that keeps an in-memory copy of a kind current, for the
webhook's indexes and the controller's cache."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import ijson

from webhook.kube.connect import GROUP, PLURAL, VERSION
from webhook.kube.errors import status_of
from webhook.model.backoff import backoff
from webhook.model.streams import reading_once

log = logging.getLogger(__name__)

# While the API server does not answer (it is restarting, or the network is down), it is
# tried again at least this often: a refused connection costs it nothing, and every second
# waited after it is back is a second of a stale index (admission answers from it).
OUTAGE_RETRY = 1.0
# For this long after the API server last failed to answer (or answered 429/5xx), every
# failure is retried as quickly: a restart settles through a few errors (503 while it starts,
# 404 until custom resources are served again, 403 until RBAC is loaded), and none of them
# should push the next try out by the backoff's 30 s.
OUTAGE_WINDOW = 60.0
# After an outage the watch waits for the API server's /readyz, asked this often, each time
# for at most READY_TIMEOUT: a request sent to an API server that is still starting can sit
# unanswered until seconds after it is ready (7 s of an 8 s restart, measured), while
# /readyz is cheap and exempt from API priority and fairness.
READY_POLL = 0.5
READY_TIMEOUT = 1.0
# Objects per page of the initial list (`limit`/`continue`). One response holding every
# object cost the webhook 20 KiB of parsed JSON per stream at its peak (223 MiB for 10,000
# streams, against 13 MiB for the index built from them); a page of 500 (the client-go
# reflector's page size) bounds that peak at a few MiB whatever the cluster holds.
LIST_PAGE = 500


class StreamSink(Protocol):
    """What a watch feeds: the admission index, or the controller's cache."""

    def replace_all(self, objs: Iterable[Mapping[str, Any]]) -> None: ...

    def upsert(self, obj: Mapping[str, Any]) -> None: ...

    def delete(self, obj: Mapping[str, Any]) -> None: ...

    def __len__(self) -> int: ...


@runtime_checkable
class Source(Protocol):
    """Where a Watcher lists and watches one kind: the kubernetes client (ClientSource, the
    controller's) or the webhook's thin client (webhook.kube.listwatch.ListWatch). Errors
    the API server answered carry `status` and `reason` (webhook.kube.errors reads them);
    any other exception is no answer at all."""

    def list_page(self, limit: int, token: str | None) -> bytes:
        """One page of the list (`limit`, `continue`), as the JSON the server sent."""
        ...

    def watch(self, resource_version: str, timeout: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, object) events from `resource_version`, bookmarks included, until the
        server ends the watch; an ERROR event raises (410 Gone among them). Closing the
        iterator ends the watch."""
        ...

    def readyz(self, timeout: float) -> int | None:
        """The status of GET /readyz; None when this source cannot ask."""
        ...


class ClientSource:
    """A kubernetes client list call as a Source: `list_fn(*args)` is
    `list_cluster_custom_object`, `list_namespace`, a metadata lister, ..."""

    def __init__(self, list_fn: Callable[..., Any], args: tuple[str, ...] = ()) -> None:
        self._list_fn = list_fn
        self._args = args

    def list_page(self, limit: int, token: str | None) -> bytes:
        kwargs: dict[str, Any] = {"limit": limit, "_preload_content": False}
        if token:
            kwargs["_continue"] = token
        return bytes(self._list_fn(*self._args, **kwargs).data)

    def watch(self, resource_version: str, timeout: int) -> Iterator[tuple[str, dict[str, Any]]]:
        from kubernetes import watch

        stream = watch.Watch()
        events = stream.stream(
            self._list_fn,
            *self._args,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
        )
        try:
            for event in events:
                yield event["type"], event.get("raw_object", event["object"])  # a dict
        finally:
            stream.stop()
            events.close()  # the client's own finally closes the response

    def readyz(self, timeout: float) -> int | None:
        from kubernetes.client.exceptions import ApiException

        api: Any = getattr(self._list_fn, "__self__", None)  # CoreV1Api, CustomObjectsApi, …
        api_client: Any = getattr(api, "api_client", None)
        try:
            request = api_client.param_serialize("GET", "/readyz", auth_settings=["BearerToken"])
            response = api_client.call_api(*request, _request_timeout=timeout)
        except (AttributeError, TypeError):
            return None  # not a kubernetes client of the version we know
        except ApiException as err:
            return int(err.status or 0)
        status = int(response.status)
        response.read()  # the connection goes back to the pool
        return status


class Watcher:
    """List, then watch one kind of object, keeping `sink` (any StreamSink) current.

    `source` is a Source, or a kubernetes client list call (`list_cluster_custom_object`,
    `list_namespace`, ...) with its `args`; objects reach the sink as plain dicts.
    Resumes from the last resourceVersion after a dropped connection, relists on 410 Gone
    (the version has been compacted away), and backs off on errors: exponentially up to
    `max_backoff`, but no longer than OUTAGE_RETRY around an outage of the API server, so
    that the copy is current again within about a second of the API server's return.
    With `missing_ok`, a 404 on the list (the CRD is not installed) loads an empty content,
    marking the sink ready, and the list is retried with backoff until the kind appears.
    """

    def __init__(
        self,
        sink: StreamSink,
        source: Source | Callable[..., Any],
        *args: str,
        what: str = "objects",
        missing_ok: bool = False,
        watch_timeout: int = 300,
        max_backoff: float = 30.0,
        page_size: int = LIST_PAGE,
    ) -> None:
        self._index = sink
        self._page_size = page_size
        self._source = source if isinstance(source, Source) else ClientSource(source, args)
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
        failures = 0
        last_outage: float | None = None  # monotonic time the API server last failed to answer
        resource_version: str | None = None
        while not self._stop.is_set():
            unanswered = False  # the API server sent no answer, or said it is not ready
            try:
                if resource_version is None:
                    resource_version = self._list()
                    failures = 0  # it answers again: a failing watch starts its backoff over
                resource_version = self._watch(resource_version)
                failures = 0
            except Exception as err:  # the watch must outlive any failure
                status = status_of(err)
                if status == 410:
                    log.info("watch expired (410 Gone); relisting %s", self._what)
                    resource_version = None
                    continue
                failures += 1
                if status is None or status == 429 or status >= 500:
                    # no answer at all, overloaded, or still starting
                    last_outage = time.monotonic()
                    unanswered = True
                self._log_failure(err, status)
            if failures:
                self._stop.wait(self._backoff(failures, last_outage))
            if unanswered:
                self._wait_until_ready()

    def _log_failure(self, err: Exception, status: int | None) -> None:
        if status is None:
            log.warning("%s watch failed: %s", self._what, err)
        elif status == 404 and self._missing_ok:
            if not self._index_ready():
                log.info("%s: no such resource (CRD not installed?)", self._what)
            self._index.replace_all([])
        elif status == 403:
            log.error(
                "%s: forbidden; the service account needs list and watch on them (%s)",
                self._what,
                getattr(err, "reason", err),
            )
        else:
            log.warning("%s watch failed: %s %s", self._what, status, getattr(err, "reason", ""))

    def _wait_until_ready(self) -> None:
        """Ask /readyz until the API server says it is ready (or cannot tell us)."""
        while not self._stop.is_set() and self._api_ready() is False:
            self._stop.wait(READY_POLL)

    def _api_ready(self) -> bool | None:
        """Whether the API server answers /readyz with 200 within READY_TIMEOUT; None when
        it cannot be asked (a source without the request API, or /readyz not open to us)."""
        try:
            status = self._source.readyz(READY_TIMEOUT)
        except Exception:
            return False  # no answer yet
        if status is None or status in (401, 403, 404):
            return None
        return status == 200

    def _index_ready(self) -> bool:
        return bool(getattr(self._index, "ready", False))

    def _backoff(self, failures: int, last_outage: float | None) -> float:
        cap = self._max_backoff
        if last_outage is not None and time.monotonic() - last_outage < OUTAGE_WINDOW:
            cap = min(cap, OUTAGE_RETRY)
        return backoff(failures, initial=min(1.0, cap), cap=cap, jitter=0.5)

    def _list(self) -> str:
        pages = Pages(self._source, self._page_size)
        self._index.replace_all(pages)
        log.info("listed %d %s in %d pages", len(self._index), self._what, pages.count)
        return pages.resource_version

    def _watch(self, resource_version: str) -> str:
        started = time.monotonic()
        events = self._source.watch(resource_version, self._watch_timeout)
        try:
            for kind, obj in events:
                if self._stop.is_set():
                    break
                if kind in ("ADDED", "MODIFIED"):
                    self._index.upsert(obj)
                elif kind == "DELETED":
                    self._index.delete(obj)
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:  # a BOOKMARK's too: a resumed watch starts from it
                    resource_version = rv
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # a watch stopped early gives its connection up now
        log.debug("%s watch ended after %.0fs", self._what, time.monotonic() - started)
        return resource_version


class Pages:
    """The objects of a paginated list, page by page: one page is in memory at a time.

    Iterate it once, to the end; `resource_version` is then the list's (all pages come from
    one snapshot of the API server, so the last page's version is the whole list's). A
    continue token that expired mid-list (410 Gone) raises as any list does, and the
    watch lists again from the start."""

    def __init__(self, source: Source, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"page size must be at least 1, not {limit}")
        self._source = source
        self._limit = limit
        self._version: str | None = None
        self.count = 0

    @property
    def resource_version(self) -> str:
        if self._version is None:
            raise RuntimeError("the list was not read to its end")
        return self._version

    def __iter__(self) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            data = self._source.list_page(self._limit, token)
            self.count += 1
            # The page's objects are decoded one at a time (ijson, in C), never the page at
            # once: a sink keeps what it needs of each, and what it does not is freed before
            # the next one is decoded, so the kept objects are not scattered among the freed
            # ones (a served worker kept 7 MiB more at 10,000 streams with json.loads).
            metadata = next(ijson.items(io.BytesIO(data), "metadata"), None) or {}
            yield from ijson.items(io.BytesIO(data), "items.item", use_float=True)
            del data
            token = metadata.get("continue")
            if not token:
                self._version = str(metadata["resourceVersion"])
                return


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


class Loading(Protocol):
    """A sink's new content, built one object at a time, swapped in by `commit`."""

    def add(self, obj: Mapping[str, Any]) -> None: ...

    def commit(self) -> None: ...


class LoadableSink(StreamSink, Protocol):
    def loader(self) -> Loading: ...


class Tee:
    """One watch feeding several sinks; its length and readiness are the first one's.

    A list reaches every sink in one pass, object by object, so that it is never held
    whole (it may be a paginated list, or a file read document by document)."""

    def __init__(self, first: LoadableSink, *others: LoadableSink) -> None:
        self._sinks = (first, *others)

    @property
    def ready(self) -> bool:
        return bool(getattr(self._sinks[0], "ready", False))

    def __len__(self) -> int:
        return len(self._sinks[0])

    def replace_all(self, objs: Iterable[Mapping[str, Any]]) -> None:
        loaders = [sink.loader() for sink in self._sinks]
        for obj in objs:
            with reading_once():
                for loading in loaders:
                    loading.add(obj)
        for loading in loaders:
            loading.commit()

    def upsert(self, obj: Mapping[str, Any]) -> None:
        with reading_once():
            for sink in self._sinks:
                sink.upsert(obj)

    def delete(self, obj: Mapping[str, Any]) -> None:
        for sink in self._sinks:
            sink.delete(obj)
