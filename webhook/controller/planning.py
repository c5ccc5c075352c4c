"""What the controller decides without I/O: which tags of a stream are due for import and
why, when to come back, how long to back off, and how import results fold into status."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.controller.importer import ImportResult
from webhook.model import backoff as retry
from webhook.model import streams
from webhook.model.streams import ImageStream, TagReference

INITIAL_BACKOFF = 5.0
MAX_BACKOFF = 300.0


# --- per-tag memory ----------------------------------------------------------------------


@dataclass(slots=True)  # one per tag: 250,000 of them at 50,000 streams
class TagState:
    """What the controller remembers of one tag between passes (lost on restart: safe)."""

    # The last success, for the HEAD shortcut, kept only where status cannot stand in for it
    # (reconciler._previous_from_status: a Legacy tag pins a platform, a HEAD sees its index).
    previous: ImportResult | None = None
    failures: int = 0
    retry_at: float = 0.0
    next_scheduled: float | None = None
    last_checked: float | None = None


@dataclass(slots=True)
class StreamState:
    tags: dict[str, TagState] = field(default_factory=dict)

    def tag(self, name: str) -> TagState:
        return self.tags.setdefault(name, TagState())


def remembered(success: ImportResult) -> ImportResult | None:
    """What `TagState.previous` keeps of a successful import: nothing when the status it is
    written to can stand in for it (a PreserveOriginal tag's current image is the digest a
    HEAD answers), as after a restart; holding it as well cost 0.7 KiB a tag. A Legacy tag
    pins one platform of an index, which a HEAD does not see: its result is kept."""
    return None if success.import_mode == streams.PRESERVE_ORIGINAL else success


# --- pure planning -----------------------------------------------------------------------

SPEC, RETRY, SCHEDULED = "spec", "retry", "scheduled"
# The share of the scheduled interval a check may move by: the next check comes 80-100%
# of the interval after the last, and a tag due that soon is checked with its stream's.
SCHEDULE_JITTER = 0.2


def is_registry_tag(spec: TagReference) -> bool:
    return spec.source is not None and spec.source.kind == streams.DOCKER_IMAGE


def has_failed_at(stream: ImageStream, spec: TagReference) -> bool:
    """The tag's latest answer at its generation is a failed import."""
    history = stream.history(spec.name)
    generation = streams.tag_generation(stream, spec)
    return history is not None and any(
        c.type == streams.IMPORT_SUCCESS and c.status == "False" and c.generation >= generation
        for c in history.conditions
    )


def due_tags(
    stream: ImageStream, state: StreamState, now: float, interval: float
) -> list[tuple[TagReference, str]]:
    """The DockerImage tags to import now, and why.

    A stream's scheduled tags are checked together: when one is due, so is every other one
    due within SCHEDULE_JITTER of the interval (a check may come that much early: the next
    is set 80-100% of the interval after it), and tags seen for the first time get one
    first check time for the stream, spread over the interval. Checked one by one, a stream
    of five tags cost five visits (a parse of the stream each) per interval instead of one.

    No I/O; its one side effect is that first check time (recorded in `state`).
    """
    due = []
    scheduled = []
    first_check = now + interval * random.random()  # for tags seen for the first time
    for spec in stream.spec_tags:
        if not is_registry_tag(spec):
            continue
        tag = state.tag(spec.name)
        if spec.reference:
            if streams.seen_generation(stream.history(spec.name)) != streams.tag_generation(
                stream, spec
            ):
                due.append((spec, SPEC))
        elif streams.needs_import(stream, spec):
            due.append((spec, SPEC))
        elif has_failed_at(stream, spec):
            if tag.retry_at <= now:
                due.append((spec, RETRY))
        elif spec.scheduled:
            if tag.next_scheduled is None:
                tag.next_scheduled = first_check
            scheduled.append((spec, tag.next_scheduled))
    if any(at <= now for _, at in scheduled):
        early = now + interval * SCHEDULE_JITTER
        due += [(spec, SCHEDULED) for spec, at in scheduled if at <= early]
    return due


def next_scheduled_check(now: float, interval: float) -> float:
    """When a tag checked now is checked next: 80-100% of the interval later, so that the
    checks of streams imported together spread out instead of arriving together forever."""
    return now + interval * random.uniform(1.0 - SCHEDULE_JITTER, 1.0)


def next_visit(stream: ImageStream, state: StreamState, now: float) -> float | None:
    """Seconds until the earliest scheduled check or retry of this stream, or None.

    A failed import is retried at its `retry_at` whatever `stream` says: the reconcile that
    failed asks this of the stream as it read it, before the failure was written (the write's
    own echo does not bring it back, stream_cache.py)."""
    times = []
    for spec in stream.spec_tags:
        tag = state.tags.get(spec.name)
        if tag is None or not is_registry_tag(spec):
            continue
        if tag.failures:
            times.append(tag.retry_at)
        elif spec.scheduled and tag.next_scheduled is not None:
            times.append(tag.next_scheduled)
    return max(0.0, min(times) - now) if times else None


def backoff(failures: int, retry_after: float | None, cap: float) -> float:
    """Before retrying a failed import: from INITIAL_BACKOFF, never sooner than a registry
    asked."""
    return retry.backoff(failures, initial=INITIAL_BACKOFF, cap=cap, retry_after=retry_after)


def apply_results(
    status_tags: Iterable[Mapping[str, Any]], results: Iterable[ImportResult]
) -> tuple[list[dict[str, Any]], bool]:
    tags = [dict(t) for t in status_tags]
    changed = False
    for result in results:
        if result.event is not None:
            tags, moved = streams.record_event(tags, result.tag, result.event)
        else:
            assert result.condition is not None
            tags, moved = streams.record_failure(tags, result.tag, result.condition)
        changed |= moved
    return tags, changed


def status_tags_of(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((obj.get("status") or {}).get("tags") or [])


def with_status_tags(obj: Mapping[str, Any], status_tags: list[dict[str, Any]]) -> dict[str, Any]:
    status = dict(obj.get("status") or {})
    status["tags"] = status_tags
    return {**obj, "status": status}


def current_images(obj: Mapping[str, Any]) -> dict[str, str]:
    """tag → current image reference: what triggers and logs care about."""
    images = {}
    for entry in (obj.get("status") or {}).get("tags") or []:
        items = entry.get("items") or []
        if items:
            images[entry["tag"]] = str(items[0].get("dockerImageReference", ""))
    return images
