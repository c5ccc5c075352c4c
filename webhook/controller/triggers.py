"""The image-trigger edge of the controller: lists the workloads that follow a stream,
patches their image fields and records Events. The rules (the annotation, field paths, what
a tag move changes) are in webhook.model.triggers."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Container, Mapping
from typing import Any

from webhook.kube import api, errors
from webhook.model import streams
from webhook.model.streams import ImageStream
from webhook.model.triggers import (
    TRIGGER_KINDS,
    TRIGGERS_ANNOTATION,
    FieldUpdate,
    InvalidTrigger,
    StreamLookup,
    annotations_of,
    follows_stream,
    moved_tags,
    parse_triggers,
    plan,
)
from webhook.model.workloads import WORKLOADS

log = logging.getLogger(__name__)


class TriggerReconciler:
    """Applies image triggers through the API. See the module docstring for the contract."""

    def __init__(self, apps_api: Any, batch_api: Any, core_api: Any) -> None:
        self._apis = {"apps": apps_api, "batch": batch_api}
        self._core = core_api
        # Workers may call in from several threads: the two memories below share a lock.
        self._lock = threading.Lock()
        self._warned: set[tuple[str, str]] = set()
        # Each stream as last seen, for callers that do not pass the previous version.
        self._seen: dict[tuple[str, str], ImageStream] = {}

    @classmethod
    def from_api_client(cls, api_client: Any) -> TriggerReconciler:
        return cls(api.apps(api_client), api.batch(api_client), api.core(api_client))

    def stream_changed(
        self, stream_obj: Mapping[str, Any], previous: Mapping[str, Any] | None = None
    ) -> list[FieldUpdate]:
        """Roll the workloads in the stream's namespace whose triggers follow a tag that
        moved between `previous` and `stream_obj`. Never raises: the controller's loop must
        outlive any one workload.
        """
        try:
            stream = streams.parse_image_stream(stream_obj)
            before = streams.parse_image_stream(previous) if previous is not None else None
        except streams.InvalidImageStream as err:
            log.warning("image triggers: unreadable image stream: %s", err)
            return []
        key = (stream.namespace, stream.name)
        with self._lock:
            if before is None:
                before = self._seen.get(key)
            self._seen[key] = stream
        moved = {(*key, tag) for tag in moved_tags(stream, before)}
        if not moved:
            return []

        def lookup(namespace: str, name: str) -> ImageStream | None:
            return stream if (namespace, name) == key else None

        updates: list[FieldUpdate] = []
        for kind in TRIGGER_KINDS:
            try:
                workloads = self._list(kind, stream.namespace)
            except Exception as err:
                log.warning(
                    "image triggers: cannot list %ss in %s: %s", kind, stream.namespace, err
                )
                continue
            for obj in workloads:
                if TRIGGERS_ANNOTATION not in annotations_of(obj):
                    continue
                if not follows_stream(obj, *key):
                    self._warn_invalid(kind, obj)
                    continue
                updates += self._sync_logged(kind, obj, lookup, moved)
        return updates

    def sync_workload(
        self,
        kind: str,
        obj: Mapping[str, Any],
        lookup: StreamLookup,
        moved: Container[tuple[str, str, str]] | None = None,
    ) -> list[FieldUpdate]:
        """Apply `obj`'s triggers (those on `moved` tags, or all) against `lookup`'s
        streams, retrying conflicts with a fresh read. Raises the API's errors (the CLI
        reports them; `stream_changed` logs them)."""
        metadata = obj.get("metadata") or {}
        namespace, name = str(metadata.get("namespace", "")), str(metadata.get("name", ""))
        current = obj
        attempts = 0

        def attempt() -> list[FieldUpdate]:
            nonlocal current, attempts
            if attempts:  # the last write lost a race: recompute on a fresh read
                current = self._read(kind, namespace, name)
            attempts += 1
            result = plan(current, kind, lookup, moved)
            for problem in result.problems:
                self._event(kind, current, "Warning", "InvalidImageTrigger", problem, once=True)
            if not result.patch:
                return []
            version = str((current.get("metadata") or {}).get("resourceVersion", ""))
            guard = {"op": "replace", "path": "/metadata/resourceVersion", "value": version}
            self._patch(kind, namespace, name, [guard, *result.patch])
            for update in result.updates:
                message = (
                    f"image trigger: {update.source} moved; container {update.container}"
                    f" set to {update.new}"
                )
                self._event(kind, current, "Normal", "ImageTriggered", message)
            return result.updates

        return api.retry_on_conflict(attempt)

    def _sync_logged(
        self,
        kind: str,
        obj: Mapping[str, Any],
        lookup: StreamLookup,
        moved: Container[tuple[str, str, str]],
    ) -> list[FieldUpdate]:
        metadata = obj.get("metadata") or {}
        try:
            updates = self.sync_workload(kind, obj, lookup, moved)
        except Exception as err:
            log.warning(
                "image triggers: cannot update %s %s/%s: %s",
                kind,
                metadata.get("namespace"),
                metadata.get("name"),
                errors.server_message(err),
            )
            return []
        for update in updates:
            log.info(
                "image trigger: %s %s/%s container %s → %s (%s)",
                kind,
                metadata.get("namespace"),
                metadata.get("name"),
                update.container,
                update.new,
                update.source,
            )
        return updates

    def _warn_invalid(self, kind: str, obj: Mapping[str, Any]) -> None:
        try:
            parse_triggers(annotations_of(obj).get(TRIGGERS_ANNOTATION))
        except InvalidTrigger as err:
            self._event(kind, obj, "Warning", "InvalidImageTrigger", str(err), once=True)

    # -- API calls -------------------------------------------------------------------------

    def _list(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        workload = WORKLOADS[kind]
        lister = getattr(self._apis[workload.group], f"list_namespaced_{workload.snake_name}")
        response = lister(namespace, _preload_content=False)
        items = json.loads(response.data).get("items") or []
        return [{**item, "apiVersion": workload.api_version, "kind": kind} for item in items]

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
