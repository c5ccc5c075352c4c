"""Stream semantics: parsing, current image, aliases, resolution, generations, history."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from streamdata import DIGEST_A, DIGEST_B, DIGEST_C, image_stream

from webhook.model.streams import (
    InvalidImageStream,
    TagReference,
    current_event,
    generation_stamps,
    needs_import,
    parse_image_stream,
    pinned_reference,
    record_event,
    record_failure,
    seen_generation,
    stream_entry,
    tag_generation,
)


def test_parse_reads_every_field() -> None:
    stream = parse_image_stream(
        {
            "metadata": {"name": "mysql", "namespace": "db"},
            "spec": {
                "lookupPolicy": {"local": True},
                "dockerImageRepository": "docker.io/library/mysql",
                "tags": [
                    {
                        "name": "8.0",
                        "annotations": {"description": "MySQL 8"},
                        "from": {"kind": "DockerImage", "name": "mysql:8.0"},
                        "generation": 3,
                        "importPolicy": {
                            "insecure": True,
                            "scheduled": True,
                            "importMode": "Legacy",
                        },
                        "referencePolicy": {"type": "Local"},
                    },
                    {"name": "latest", "from": {"kind": "ImageStreamTag", "name": "8.0"}},
                ],
            },
            "status": {
                "dockerImageRepository": "reg.local/db/mysql",
                "tags": [
                    {
                        "tag": "8.0",
                        "items": [
                            {
                                "created": "2026-01-01T00:00:00Z",
                                "dockerImageReference": f"docker.io/library/mysql@{DIGEST_A}",
                                "image": DIGEST_A,
                                "generation": 3,
                            }
                        ],
                        "conditions": [
                            {"type": "ImportSuccess", "status": "False", "generation": 2}
                        ],
                    }
                ],
            },
        }
    )
    assert stream.namespace == "db" and stream.lookup_local
    assert stream.spec_repository == "docker.io/library/mysql"
    assert stream.status_repository == "reg.local/db/mysql"
    tag = stream.spec_tag("8.0")
    assert tag == TagReference(
        name="8.0",
        source=tag.source if tag else None,
        reference=False,
        generation=3,
        insecure=True,
        scheduled=True,
        import_mode="Legacy",
        reference_policy="Local",
        annotations={"description": "MySQL 8"},
    )
    assert stream.spec_tag("latest").reference_policy == "Source"  # type: ignore[union-attr]
    history = stream.history("8.0")
    assert history is not None and history.items[0].image == DIGEST_A
    assert history.conditions[0].generation == 2


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda s: s["metadata"].pop("name"), "metadata.name"),
        (lambda s: s["spec"].update(tags={"a": 1}), "spec.tags"),
        (lambda s: s["spec"]["tags"][0].pop("name"), "spec.tags[0].name"),
        (lambda s: s["spec"].update(lookupPolicy={"local": "yes"}), "spec.lookupPolicy.local"),
        (lambda s: s["spec"]["tags"][0].update(generation="1"), "spec.tags[0].generation"),
        (lambda s: s["status"]["tags"][0].update(items=[{"image": 3}]), "items[0].image"),
    ],
)
def test_parse_errors_name_the_field(mutate: Any, where: str) -> None:
    stream = image_stream("app", tags={"1": f"quay.io/x/app@{DIGEST_A}"})
    mutate(stream)
    with pytest.raises(InvalidImageStream, match=where.replace("[", r"\[").replace("]", r"\]")):
        parse_image_stream(stream)


def test_pinned_reference_is_fully_qualified_by_digest() -> None:
    stream = parse_image_stream(image_stream("mysql", tags={"8": f"mysql@{DIGEST_A}"}))
    assert pinned_reference(stream, "8") == f"docker.io/library/mysql@{DIGEST_A}"
    assert pinned_reference(stream, "9") is None


def test_pinned_reference_prefers_the_image_field_over_a_tag_reference() -> None:
    obj = image_stream("app", tags={"1": f"quay.io/x/app@{DIGEST_A}"})
    obj["status"]["tags"][0]["items"][0]["dockerImageReference"] = "quay.io/x/app:1"
    assert pinned_reference(parse_image_stream(obj), "1") == f"quay.io/x/app@{DIGEST_A}"


def test_reference_without_digest_resolves_to_itself_qualified() -> None:
    obj = image_stream("app", tags={"1": f"quay.io/x/app@{DIGEST_A}"})
    item = obj["status"]["tags"][0]["items"][0]
    item.update(dockerImageReference="app:1", image="")
    assert pinned_reference(parse_image_stream(obj), "1") == "docker.io/library/app:1"


def test_local_policy_without_a_local_repository_falls_back_to_source() -> None:
    obj = image_stream("app", tags={"1": f"quay.io/x/app@{DIGEST_A}"})
    obj["spec"]["tags"][0]["referencePolicy"] = {"type": "Local"}
    assert pinned_reference(parse_image_stream(obj), "1") == f"quay.io/x/app@{DIGEST_A}"
    obj["status"]["dockerImageRepository"] = "reg.local/team/app"
    # Named but not copied yet: still the source.
    assert pinned_reference(parse_image_stream(obj), "1") == f"quay.io/x/app@{DIGEST_A}"
    obj["status"]["tags"][0]["conditions"] = [
        {
            "type": "Mirrored",
            "status": "True",
            "message": f"mirrored to reg.local/team/app@{DIGEST_A}",
        }
    ]
    assert pinned_reference(parse_image_stream(obj), "1") == f"reg.local/team/app@{DIGEST_A}"


def _aliased(latest_from: str, **extra: Any) -> dict[str, Any]:
    obj = image_stream("app", tags={"1.0": f"quay.io/x/app@{DIGEST_A}"})
    obj["spec"]["tags"].append(
        {"name": "latest", "from": {"kind": "ImageStreamTag", "name": latest_from, **extra}}
    )
    return obj


@pytest.mark.parametrize("name", ["1.0", "app:1.0"])
def test_same_stream_alias_follows_its_source(name: str) -> None:
    stream = parse_image_stream(_aliased(name))
    assert pinned_reference(stream, "latest") == f"quay.io/x/app@{DIGEST_A}"


@pytest.mark.parametrize(
    ("name", "extra"), [("other:1.0", {}), ("app:1.0", {"namespace": "elsewhere"})]
)
def test_tags_from_other_streams_are_not_aliases(name: str, extra: dict[str, str]) -> None:
    assert pinned_reference(parse_image_stream(_aliased(name, **extra)), "latest") is None


def test_status_wins_over_an_alias() -> None:
    obj = _aliased("1.0")
    obj["status"]["tags"].append(
        {
            "tag": "latest",
            "items": [
                {
                    "created": "2026-11-01T00:00:00Z",
                    "dockerImageReference": f"quay.io/x/app@{DIGEST_C}",
                    "image": DIGEST_C,
                    "generation": 1,
                }
            ],
        }
    )
    assert pinned_reference(parse_image_stream(obj), "latest") == f"quay.io/x/app@{DIGEST_C}"


def test_alias_loops_end() -> None:
    obj = image_stream("app", tags={})
    obj["spec"]["tags"] = [
        {"name": "a", "from": {"kind": "ImageStreamTag", "name": "b"}},
        {"name": "b", "from": {"kind": "ImageStreamTag", "name": "a"}},
    ]
    stream = parse_image_stream(obj)
    assert current_event(stream, "a") is None
    assert stream_entry(stream).images == {"a": None, "b": None}


def test_stream_entry_lists_spec_and_status_tags() -> None:
    obj = image_stream("app", tags={"1": f"quay.io/x/app@{DIGEST_A}", "2": None})
    obj["spec"]["tags"].append({"name": "3", "from": {"kind": "DockerImage", "name": "x:3"}})
    entry = stream_entry(parse_image_stream(obj))
    assert entry.images == {"1": f"quay.io/x/app@{DIGEST_A}", "2": None, "3": None}
    assert entry.lookup_local and entry.namespace == "team" and entry.name == "app"


# --- generations -------------------------------------------------------------------------


def _stream_with(spec_generation: int | None, stream_generation: int = 2, **tag: Any) -> Any:
    obj = image_stream("app", tags={"1": f"quay.io/x/app@{DIGEST_A}"})  # items[0].generation 2
    obj["metadata"]["generation"] = stream_generation
    obj["spec"]["tags"][0]["generation"] = spec_generation
    obj["spec"]["tags"][0].update(tag)
    stream = parse_image_stream(obj)
    return stream, stream.spec_tag("1")


@pytest.mark.parametrize(
    ("generation", "stream_generation", "tag", "expected"),
    [
        (2, 2, {}, False),  # status has seen generation 2
        (1, 2, {}, False),
        (3, 3, {}, True),  # spec moved ahead
        (2, 5, {}, False),  # an explicit tag generation wins over the stream's
        (0, 2, {}, False),  # unstamped: at the stream's generation, already seen
        (None, 2, {}, False),
        (0, 3, {}, True),  # the spec changed since (e.g. `tag` wrote generation 0)
        (None, 3, {}, True),
        (3, 3, {"reference": True}, False),  # reference tags are recorded, not imported
        (3, 3, {"from": {"kind": "ImageStreamTag", "name": "2"}}, False),
    ],
)
def test_needs_import(
    generation: int | None, stream_generation: int, tag: dict[str, Any], expected: bool
) -> None:
    stream, spec = _stream_with(generation, stream_generation, **tag)
    assert needs_import(stream, spec) is expected
    if not tag:
        assert tag_generation(stream, spec) == (generation or stream_generation)


def test_a_failure_condition_counts_as_seen() -> None:
    obj = image_stream("app", tags={"1": f"quay.io/x/app@{DIGEST_A}"})
    obj["spec"]["tags"][0]["generation"] = 5
    obj["status"]["tags"][0]["conditions"] = [
        {"type": "ImportSuccess", "status": "False", "reason": "NotFound", "generation": 5}
    ]
    stream = parse_image_stream(obj)
    assert seen_generation(stream.history("1")) == 5
    assert not needs_import(stream, stream.spec_tag("1"))  # type: ignore[arg-type]


def test_new_tag_needs_import() -> None:
    obj = image_stream("app", tags={})
    obj["spec"]["tags"] = [{"name": "1", "from": {"kind": "DockerImage", "name": "x:1"}}]
    stream = parse_image_stream(obj)
    assert needs_import(stream, stream.spec_tag("1"))  # type: ignore[arg-type]


# --- history -----------------------------------------------------------------------------


def _event(digest: str, generation: int = 3, ref: str = "quay.io/x/app") -> dict[str, Any]:
    return {
        "created": "2026-11-02T00:00:00Z",
        "dockerImageReference": f"{ref}@{digest}",
        "image": digest,
        "generation": generation,
    }


def test_new_image_is_prepended_and_clears_conditions() -> None:
    tags = image_stream("app", tags={"1": f"quay.io/x/app@{DIGEST_A}"})["status"]["tags"]
    tags[0]["conditions"] = [{"type": "ImportSuccess", "status": "False", "generation": 2}]
    before = copy.deepcopy(tags)
    result, changed = record_event(tags, "1", _event(DIGEST_B))
    assert changed
    assert [i["image"] for i in result[0]["items"]] == [DIGEST_B, DIGEST_A]
    assert "conditions" not in result[0]
    assert tags == before  # inputs are never modified


def test_same_image_adds_no_history_item() -> None:
    tags = image_stream("app", tags={"1": f"quay.io/x/app@{DIGEST_A}"})["status"]["tags"]
    result, changed = record_event(tags, "1", _event(DIGEST_A, generation=2))
    assert not changed and result == tags
    result, changed = record_event(tags, "1", _event(DIGEST_A, generation=4))
    assert changed and len(result[0]["items"]) == 1
    assert result[0]["items"][0]["generation"] == 4
    assert result[0]["items"][0]["created"] == "2026-11-01T10:00:00Z"  # first seen, kept


def test_same_digest_from_another_repository_is_a_new_item() -> None:
    tags = image_stream("app", tags={"1": f"quay.io/x/app@{DIGEST_A}"})["status"]["tags"]
    result, changed = record_event(tags, "1", _event(DIGEST_A, ref="ghcr.io/x/app"))
    assert changed and len(result[0]["items"]) == 2


def test_event_for_a_new_tag_adds_the_tag() -> None:
    result, changed = record_event([], "2", _event(DIGEST_C))
    assert changed and result == [{"tag": "2", "items": [_event(DIGEST_C)]}]


def test_failure_keeps_the_history() -> None:
    tags = image_stream("app", tags={"1": f"quay.io/x/app@{DIGEST_A}"})["status"]["tags"]
    condition = {
        "type": "ImportSuccess",
        "status": "False",
        "reason": "NotFound",
        "message": "quay.io/x/app:1 not found",
        "generation": 3,
        "lastTransitionTime": "2026-11-02T00:00:00Z",
    }
    result, changed = record_failure(tags, "1", condition)
    assert changed
    assert result[0]["items"] == tags[0]["items"]
    assert result[0]["conditions"] == [condition]
    again, changed = record_failure(result, "1", {**condition, "lastTransitionTime": "later"})
    assert not changed and again == result


# --- generation stamps (admission of ImageStreams) -----------------------------------------


def _with_tags(*tags: dict[str, Any], generation: int = 4) -> dict[str, Any]:
    return {
        "metadata": {"name": "app", "namespace": "team", "generation": generation},
        "spec": {"tags": list(tags)},
    }


def _tag(name: str, source: str = "quay.io/x/app:1", **extra: Any) -> dict[str, Any]:
    return {"name": name, "from": {"kind": "DockerImage", "name": source}, **extra}


def test_create_stamps_every_tag_without_a_generation() -> None:
    obj = _with_tags(_tag("a"), _tag("b", generation=None), _tag("c", generation=0))
    obj["spec"]["tags"].append(_tag("d", generation=7))  # an export's explicit value stays
    assert generation_stamps(obj, None) == {0: 1, 1: 1, 2: 1}


def test_update_stamps_new_and_changed_tags_with_the_next_generation() -> None:
    old = _with_tags(_tag("same", generation=2), _tag("moved", generation=2), generation=4)
    new = _with_tags(
        _tag("same", generation=2),
        _tag("moved", "quay.io/x/app:2", generation=2),  # from changed, generation not
        _tag("added"),
    )
    assert generation_stamps(new, old) == {1: 5, 2: 5}


@pytest.mark.parametrize(
    ("change", "stamped"),
    [
        ({"reference": True}, True),
        ({"importPolicy": {"importMode": "Legacy"}}, True),
        ({"importPolicy": {"scheduled": True}}, False),  # not a new source
        ({"annotations": {"a": "b"}}, False),
        ({"generation": 0}, True),  # a user asks for a re-import
        ({"generation": 9}, False),  # a user (or the CLI) chose the generation
    ],
)
def test_which_changes_restamp(change: dict[str, Any], stamped: bool) -> None:
    old = _with_tags(_tag("a", generation=2))
    new = _with_tags(_tag("a", **{"generation": 2, **change}))
    assert generation_stamps(new, old) == ({0: 5} if stamped else {})


def test_stamping_is_idempotent_on_reinvocation() -> None:
    old = _with_tags(_tag("a", generation=2))
    new = _with_tags(_tag("a", "quay.io/x/app:2", generation=2))
    stamps = generation_stamps(new, old)
    new["spec"]["tags"][0]["generation"] = stamps[0]
    assert generation_stamps(new, old) == {}
