"""The image-trigger edge of the controller: watches the workloads that carry triggers, reads
and patches their image fields, records Events. The rules (the annotation, field paths, what
a tag move or a workload event changes) are in webhook.model.triggers.

    reconciler = TriggerReconciler.from_api_client(api_client)
    reconciler.start()                         # the leader: watch workloads (blocks until listed)
    reconciler.stream_changed(after, before)   # right after a status write moved a tag
    reconciler.stop()

`start` watches Deployments, StatefulSets, DaemonSets and CronJobs in every namespace, metadata
only, into a WorkloadIndex (webhook.controller.workload_index); a workload created with a
trigger, or whose annotation gains or changes one, is queued and a worker applies those
triggers against the streams as they are now (read afresh). `stream_changed` asks the index
which workloads, in any namespace, follow a tag that moved and applies those triggers with
the stream as written. Each apply reads the workload, plans (`triggers.plan`) and writes a
JSON patch guarded by the resourceVersion read (a conflict re-reads and recomputes).

A trigger that follows a stream in another namespace applies only when that namespace's
service accounts may get image streams there (the rule the import controller applies to a
tag copied from another namespace); otherwise a Warning Event says what to grant. Problems
with an annotation (an unusable annotation, a skipped entry, a field that does not exist)
become Warning Events on the workload, once each; API failures are logged, and a queued
apply is retried with backoff.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Container, Mapping
from functools import cache
from typing import Any

from webhook.controller.workload_index import WorkloadIndex, WorkloadKey, metadata_lister
from webhook.kube import api, errors
from webhook.kube.connect import GROUP, PLURAL
from webhook.kube.watch import Watcher
from webhook.kube.workqueue import WorkQueue
from webhook.model import streams
from webhook.model.backoff import backoff
from webhook.model.streams import ImageStream
from webhook.model.triggers import (
    TRIGGER_KINDS,
    FieldUpdate,
    InvalidTrigger,
    StreamLookup,
    Trigger,
    moved_tags,
    plan,
)
from webhook.model.workloads import WORKLOADS

log = logging.getLogger(__name__)

LIST_WAIT = 60.0  # how long `start` waits for the first list of workloads
APPLY_ATTEMPTS = 6  # a queued apply that keeps failing is dropped after this many
GRANT_SECONDS = 60.0  # how long an access review's answer is reused

StreamFinder = Callable[[str, str], ImageStream | None]


class TriggerReconciler:
    """Applies image triggers through the API. See the module docstring for the contract."""

    def __init__(
        self,
        apps_api: Any,
        batch_api: Any,
        core_api: Any,
        custom_api: Any = None,
        authorization_api: Any = None,
    ) -> None:
        self._apis = {"apps": apps_api, "batch": batch_api}
        self._core = core_api
        self._streams = api.StreamStatus(custom_api)
        self._auth = authorization_api
        # Watch threads, the apply worker and import workers call in: one lock for the
        # memories below.
        self._lock = threading.Lock()
        self._warned: set[tuple[str, str]] = set()
        # (workload namespace, stream namespace) → (when asked, may follow).
        self._grants: dict[tuple[str, str], tuple[float, bool]] = {}
        # Workloads created or edited: the triggers to apply (none: only report problems).
        self.index = WorkloadIndex(self._queue_apply)
        self._queue: WorkQueue[WorkloadKey] = WorkQueue()
        self._pending: dict[WorkloadKey, set[Trigger]] = {}
        self._failures: dict[WorkloadKey, int] = {}
        self._watchers: list[Watcher] = []

    @classmethod
    def from_api_client(cls, api_client: Any) -> TriggerReconciler:
        return cls(
            api.apps(api_client),
            api.batch(api_client),
            api.core(api_client),
            api.custom_objects(api_client),
            api.authorization(api_client),
        )

    # -- running ---------------------------------------------------------------------------

    def start(self, list_wait: float = LIST_WAIT) -> None:
        """Watch the workloads and apply triggers of new or edited ones. Returns once every
        kind has been listed (or after `list_wait` seconds), so that tag moves found by the
        import workers that start next reach every follower."""
        for kind in TRIGGER_KINDS:
            workload = WORKLOADS[kind]
            lister = metadata_lister(self._apis[workload.group], kind)
            what = f"{workload.resource} (image triggers)"
            self._watchers.append(Watcher(self.index.sink(kind), lister, what=what).start())
        threading.Thread(target=self._work, name="image-triggers", daemon=True).start()
        if not self.index.wait_listed(list_wait):
            log.warning("image triggers: workloads not listed after %.0fs; going on", list_wait)

    def stop(self) -> None:
        for watcher in self._watchers:
            watcher.stop()
        self._queue.close()

    # -- tag moves -------------------------------------------------------------------------

    def stream_changed(
        self, stream_obj: Mapping[str, Any], previous: Mapping[str, Any] | None = None
    ) -> list[FieldUpdate]:
        """Roll the workloads, in any namespace, whose triggers follow a tag that moved
        between `previous` and `stream_obj` (without `previous`: every tag with an image).
        Never raises: the controller's loop must outlive any one workload.

        Nothing of the stream is kept: the controller passes the version its write
        replaced. (Keeping each stream's parse, for callers that pass no previous version,
        held 33 objects a stream: 330 MiB of a first import pass at 50,000 streams.)
        """
        try:
            stream = streams.parse_image_stream(stream_obj)
            before = streams.parse_image_stream(previous) if previous is not None else None
        except streams.InvalidImageStream as err:
            log.warning("image triggers: unreadable image stream: %s", err)
            return []
        key = (stream.namespace, stream.name)
        tags = moved_tags(stream, before)
        if not tags:
            return []
        moved = {(*key, tag) for tag in tags}

        def find(namespace: str, name: str) -> ImageStream | None:
            return stream if (namespace, name) == key else None

        updates: list[FieldUpdate] = []
        for kind, namespace, name in self.index.following(*key, tags):
            try:
                updates += self._apply(kind, namespace, name, find, moved=moved)
            except Exception as err:
                log.warning(
                    "image triggers: cannot update %s %s/%s: %s",
                    kind,
                    namespace,
                    name,
                    errors.server_message(err),
                )
        return updates

    # -- new and edited workloads ----------------------------------------------------------

    def _queue_apply(self, key: WorkloadKey, triggers: tuple[Trigger, ...]) -> None:
        with self._lock:
            self._pending.setdefault(key, set()).update(triggers)
        self._queue.add(key)

    def _work(self) -> None:
        while (key := self._queue.get()) is not None:
            try:
                self._apply_pending(key)
            except Exception:  # one workload must not stop the worker
                log.exception("image triggers: applying %s %s/%s failed", *key)
            finally:
                self._queue.done(key)

    def _apply_pending(self, key: WorkloadKey) -> None:
        with self._lock:
            only = self._pending.pop(key, set())
        try:
            self._apply(*key, cache(self._read_stream), only=only)
        except Exception as err:
            failures = self._failures.get(key, 0) + 1
            if failures >= APPLY_ATTEMPTS:
                self._failures.pop(key, None)
                log.warning(
                    "image triggers: cannot update %s %s/%s: %s; giving up until it changes"
                    " or its tag moves",
                    *key,
                    errors.server_message(err),
                )
                return
            delay = backoff(failures, initial=1.0, cap=30.0)
            log.warning(
                "image triggers: cannot update %s %s/%s: %s; again in %.0fs",
                *key,
                errors.server_message(err),
                delay,
            )
            with self._lock:
                self._failures[key] = failures
                self._pending.setdefault(key, set()).update(only)
            self._queue.add_after(key, delay)
            return
        with self._lock:
            self._failures.pop(key, None)

    def _read_stream(self, namespace: str, name: str) -> ImageStream | None:
        obj = self._streams.read(namespace, name)
        if obj is None:
            return None
        try:
            return streams.parse_image_stream(obj)
        except streams.InvalidImageStream as err:
            log.warning("image triggers: image stream %s/%s is invalid: %s", namespace, name, err)
            return None

    # -- one workload ----------------------------------------------------------------------

    def _apply(
        self,
        kind: str,
        namespace: str,
        name: str,
        find: StreamFinder,
        *,
        moved: Container[tuple[str, str, str]] | None = None,
        only: Container[Trigger] | None = None,
    ) -> list[FieldUpdate]:
        """Read one workload and apply its triggers (see `sync_workload`); nothing when it
        is gone. Raises the API's errors."""
        try:
            obj = self._read(kind, namespace, name)
        except Exception as err:
            if errors.status_of(err) == errors.NOT_FOUND:
                return []
            raise
        updates = self.sync_workload(kind, obj, self._guarded(namespace, find), moved, only=only)
        for update in updates:
            log.info(
                "image trigger: %s %s/%s container %s → %s (%s)",
                kind,
                namespace,
                name,
                update.container,
                update.new,
                update.source,
            )
        return updates

    def sync_workload(
        self,
        kind: str,
        obj: Mapping[str, Any],
        lookup: StreamLookup,
        moved: Container[tuple[str, str, str]] | None = None,
        *,
        only: Container[Trigger] | None = None,
    ) -> list[FieldUpdate]:
        """Apply `obj`'s triggers (those on `moved` tags, those in `only`, or all) against
        `lookup`'s streams, retrying conflicts with a fresh read. Reports the annotation's
        problems as Warning Events. Raises the API's errors (the CLI reports them)."""
        metadata = obj.get("metadata") or {}
        namespace, name = str(metadata.get("namespace", "")), str(metadata.get("name", ""))
        current = obj
        attempts = 0

        def attempt() -> list[FieldUpdate]:
            nonlocal current, attempts
            if attempts:  # the last write lost a race: recompute on a fresh read
                current = self._read(kind, namespace, name)
            attempts += 1
            result = plan(current, kind, lookup, moved, only=only)
            for problem in result.problems:
                self._event(kind, current, "Warning", "InvalidImageTrigger", problem, once=True)
            if not result.patch:
                return []
            version = str((current.get("metadata") or {}).get("resourceVersion", ""))
            guard = {"op": "replace", "path": "/metadata/resourceVersion", "value": version}
            self._patch(kind, namespace, name, [guard, *result.patch])
            for update in result.updates:
                message = (
                    f"image trigger {update.source}: container {update.container}"
                    f" set to {update.new}"
                )
                self._event(kind, current, "Normal", "ImageTriggered", message)
            return result.updates

        return api.retry_on_conflict(attempt)

    def _guarded(self, workload_namespace: str, find: StreamFinder) -> StreamLookup:
        """`find`, refusing streams of another namespace that the workload's namespace may
        not read (InvalidTrigger: reported on the workload)."""

        def lookup(namespace: str, name: str) -> ImageStream | None:
            if namespace != workload_namespace and not self._may_follow(
                workload_namespace, namespace
            ):
                raise InvalidTrigger(
                    f"the service accounts of namespace {workload_namespace} may not get"
                    f" imagestreams in namespace {namespace}; grant them that to follow"
                    " its streams"
                )
            return find(namespace, name)

        return lookup

    def _may_follow(self, namespace: str, stream_namespace: str) -> bool:
        pair = (namespace, stream_namespace)
        now = time.monotonic()
        with self._lock:
            asked = self._grants.get(pair)
        if asked is not None and now - asked[0] < GRANT_SECONDS:
            return asked[1]
        allowed = api.service_accounts_may(
            self._auth, namespace, verb="get", resource=PLURAL, group=GROUP,
            in_namespace=stream_namespace,
        )  # fmt: skip
        with self._lock:
            self._grants[pair] = (now, allowed)
        return allowed

    # -- API calls -------------------------------------------------------------------------

    def _read(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        workload = WORKLOADS[kind]
        reader = getattr(self._apis[workload.group], f"read_namespaced_{workload.snake_name}")
        return dict(json.loads(reader(name, namespace, _preload_content=False).data))

    def _patch(self, kind: str, namespace: str, name: str, ops: list[dict[str, Any]]) -> None:
        workload = WORKLOADS[kind]
        patcher = getattr(self._apis[workload.group], f"patch_namespaced_{workload.snake_name}")
        patcher(
            name,
            namespace,
            ops,
            _content_type="application/json-patch+json",
            _preload_content=False,
        )

    def _event(
        self,
        kind: str,
        obj: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        *,
        once: bool = False,
    ) -> None:
        """Record an Event on the workload (best effort; Warnings once per object and text)."""
        metadata = obj.get("metadata") or {}
        key = (str(metadata.get("uid", "")), message)
        if once:
            with self._lock:
                if key in self._warned:
                    return
                if len(self._warned) > 10_000:
                    self._warned.clear()
                self._warned.add(key)
        api.record_event(
            self._core,
            obj,
            kind=kind,
            api_version=WORKLOADS[kind].api_version,
            type_=type_,
            reason=reason,
            message=message,
        )
