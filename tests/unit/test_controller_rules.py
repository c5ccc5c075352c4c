"""The controller's pure rules: which tags are due, when to come back, backoff, folding."""

from __future__ import annotations

from typing import Any

import pytest
from streamdata import DIGEST_A, DIGEST_B, image_stream

from webhook.controller.importer import ImportResult
from webhook.controller.planning import (
    RETRY,
    SCHEDULED,
    SPEC,
    StreamState,
    apply_results,
    backoff,
    due_tags,
    next_scheduled_check,
    next_visit,
    remembered,
)
from webhook.model.streams import parse_image_stream

NOW = 1000.0
INTERVAL = 900.0


def stream(generation: int = 2, **tag: Any) -> Any:
    obj = image_stream("app", tags={"1": f"quay.io/x/app@{DIGEST_A}"})  # seen generation 2
    obj["metadata"]["generation"] = generation
    obj["spec"]["tags"][0].update(tag)
    return obj


def due(obj: dict[str, Any], state: StreamState | None = None, now: float = NOW) -> list[str]:
    state = state or StreamState()
    return [why for _, why in due_tags(parse_image_stream(obj), state, now, INTERVAL)]


def test_up_to_date_tag_is_not_due() -> None:
    assert due(stream()) == []


def test_spec_change_makes_the_tag_due() -> None:
    assert due(stream(generation=3)) == [SPEC]


def test_new_tag_is_due() -> None:
    obj = stream()
    obj["spec"]["tags"].append({"name": "2", "from": {"kind": "DockerImage", "name": "x:2"}})
    assert due(obj) == [SPEC]


def test_stream_sourced_tags_are_not_registry_work() -> None:
    obj = stream(generation=3, **{"from": {"kind": "ImageStreamTag", "name": "other:1"}})
    assert due(obj) == []


def test_reference_tags_are_recorded_once_per_generation() -> None:
    assert due(stream(generation=3, reference=True)) == [SPEC]
    assert due(stream(generation=2, reference=True)) == []


def failed(generation: int = 2) -> dict[str, Any]:
    obj = stream(generation=generation)
    obj["status"]["tags"][0]["conditions"] = [
        {"type": "ImportSuccess", "status": "False", "reason": "NotFound", "generation": 2}
    ]
    return obj


def test_failed_tag_is_retried_after_its_backoff() -> None:
    state = StreamState()
    state.tag("1").failures, state.tag("1").retry_at = 1, NOW + 30
    assert due(failed(), state) == []
    assert next_visit(parse_image_stream(failed()), state, NOW) == 30
    assert due(failed(), state, now=NOW + 30) == [RETRY]


def test_failed_tag_after_a_restart_is_retried_at_once() -> None:
    assert due(failed()) == [RETRY]


def test_a_spec_change_overrides_a_pending_backoff() -> None:
    state = StreamState()
    state.tag("1").failures, state.tag("1").retry_at = 3, NOW + 300
    assert due(failed(generation=3), state) == [SPEC]


def test_scheduled_tags_are_spread_then_checked_each_interval() -> None:
    obj = stream(importPolicy={"scheduled": True})
    state = StreamState()
    assert due(obj, state) in ([], [SCHEDULED])
    first = state.tag("1").next_scheduled
    assert first is not None and NOW <= first < NOW + INTERVAL
    assert next_visit(parse_image_stream(obj), state, NOW) == pytest.approx(first - NOW)
    assert due(obj, state, now=first) == [SCHEDULED]


def test_unscheduled_tags_have_no_next_visit() -> None:
    assert next_visit(parse_image_stream(stream()), StreamState(), NOW) is None


@pytest.mark.parametrize(
    ("failures", "retry_after", "low", "high"),
    [(1, None, 4, 5), (2, None, 8, 10), (3, None, 16, 20), (20, None, 240, 300), (1, 60, 60, 60)],
)
def test_backoff_doubles_to_a_cap_and_honours_retry_after(
    failures: int, retry_after: float | None, low: float, high: float
) -> None:
    assert low <= backoff(failures, retry_after, cap=300) <= high


def event(digest: str, generation: int = 3) -> dict[str, Any]:
    return {
        "created": "2026-11-02T00:00:00Z",
        "dockerImageReference": f"quay.io/x/app@{digest}",
        "image": digest,
        "generation": generation,
    }


def test_apply_results_folds_events_and_failures() -> None:
    tags = stream()["status"]["tags"]
    condition = {
        "type": "ImportSuccess",
        "status": "False",
        "reason": "Unauthorized",
        "message": "m",
        "generation": 3,
        "lastTransitionTime": "t",
    }
    results = [
        ImportResult("1", event=event(DIGEST_B)),
        ImportResult("2", condition=condition),
    ]
    folded, changed = apply_results(tags, results)
    assert changed
    assert [i["image"] for i in folded[0]["items"]] == [DIGEST_B, DIGEST_A]
    assert folded[1] == {"tag": "2", "items": [], "conditions": [condition]}


def test_apply_results_reports_no_change_for_the_same_image() -> None:
    tags = stream()["status"]["tags"]
    _, changed = apply_results(tags, [ImportResult("1", event=event(DIGEST_A, generation=2))])
    assert not changed


def test_a_success_is_remembered_only_where_status_cannot_stand_in() -> None:
    event = {"created": "t", "dockerImageReference": f"quay.io/a@{DIGEST_A}", "image": DIGEST_A}
    original = ImportResult(
        "1", event=event, import_mode="PreserveOriginal", manifest_digest=DIGEST_A
    )
    legacy = ImportResult("1", event=event, import_mode="Legacy", manifest_digest=DIGEST_B)
    assert remembered(original) is None  # its status item is the next HEAD's comparison
    assert remembered(legacy) is legacy  # the index digest a HEAD sees is not in status


def scheduled_stream(tags: int) -> dict[str, Any]:
    obj = image_stream("app", tags={str(t): f"quay.io/x/app@{DIGEST_A}" for t in range(tags)})
    obj["metadata"]["generation"] = 2
    for spec in obj["spec"]["tags"]:
        spec["importPolicy"] = {"scheduled": True}
    return obj


def test_a_streams_scheduled_tags_start_together() -> None:
    state = StreamState()
    due(scheduled_stream(5), state)
    assert len({state.tag(str(t)).next_scheduled for t in range(5)}) == 1


def test_a_scheduled_tag_due_soon_is_checked_with_the_one_due_now() -> None:
    state = StreamState()
    state.tag("0").next_scheduled = NOW - 1  # due
    state.tag("1").next_scheduled = NOW + 0.2 * INTERVAL  # due within the jitter: with it
    state.tag("2").next_scheduled = NOW + 0.2 * INTERVAL + 1  # later: on its own visit
    assert [
        spec.name
        for spec, _ in due_tags(parse_image_stream(scheduled_stream(3)), state, NOW, INTERVAL)
    ] == ["0", "1"]


def test_nothing_is_checked_early_when_no_tag_is_due() -> None:
    state = StreamState()
    for t in range(3):
        state.tag(str(t)).next_scheduled = NOW + 1
    assert due(scheduled_stream(3), state) == []


def test_the_next_check_comes_80_to_100_percent_of_the_interval_later() -> None:
    checks = [next_scheduled_check(NOW, INTERVAL) for _ in range(200)]
    assert all(NOW + 0.8 * INTERVAL <= c <= NOW + INTERVAL for c in checks)


def test_a_failure_not_yet_in_status_is_still_retried() -> None:
    """The reconcile that failed plans its next visit from the stream it read, whose status
    does not hold the failure it is about to write."""
    state = StreamState()
    state.tag("1").failures, state.tag("1").retry_at = 1, NOW + 5
    assert next_visit(parse_image_stream(stream(generation=3)), state, NOW) == 5
