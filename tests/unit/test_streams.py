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
    tag_ref_changed,
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


def test_same_digest_from_another_repository_updates_the_current_item() -> None:
    # OpenShift: only when both the reference and the image differ is history added.
    tags = image_stream("app", tags={"1": f"quay.io/x/app@{DIGEST_A}"})["status"]["tags"]
    result, changed = record_event(tags, "1", _event(DIGEST_A, ref="ghcr.io/x/app"))
    assert changed and len(result[0]["items"]) == 1
    assert result[0]["items"][0]["dockerImageReference"] == f"ghcr.io/x/app@{DIGEST_A}"


# OpenShift's TestAddTagEventToImageStream (imageutil/helpers_test.go), on tag `latest`, and
# two rows of our own: a generation-only change clears conditions but keeps Mirrored.
REF, NEWREF = "registry/ns/app@sha256:" + "1" * 64, "registry/ns/app@sha256:" + "2" * 64
IMAGE, NEWIMAGE = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def _item(ref: str, image: str, generation: int = 0) -> dict[str, Any]:
    return {"created": "t0", "dockerImageReference": ref, "image": image, "generation": generation}


@pytest.mark.parametrize(
    ("existing", "ref", "image", "updated", "items"),
    [
        (None, REF, IMAGE, True, [(REF, IMAGE)]),
        ([], REF, IMAGE, True, [(REF, IMAGE)]),
        ([(REF, IMAGE)], REF, IMAGE, False, [(REF, IMAGE)]),
        ([(REF, IMAGE)], REF, NEWIMAGE, True, [(REF, NEWIMAGE)]),
        ([(REF, IMAGE)], NEWREF, IMAGE, True, [(NEWREF, IMAGE)]),
        ([(REF, IMAGE)], NEWREF, NEWIMAGE, True, [(NEWREF, NEWIMAGE), (REF, IMAGE)]),
    ],
)
def test_add_tag_event_table(
    existing: list[tuple[str, str]] | None,
    ref: str,
    image: str,
    updated: bool,
    items: list[tuple[str, str]],
) -> None:
    tags = [] if existing is None else [{"tag": "latest", "items": [_item(*i) for i in existing]}]
    result, changed = record_event(tags, "latest", {**_item(ref, image), "created": "t1"})
    assert changed is updated
    got = [(i["dockerImageReference"], i["image"]) for i in result[0]["items"]]
    assert got == items
    if existing and len(items) == len(existing):
        assert result[0]["items"][0]["created"] == "t0"  # updated in place: first seen kept


def test_a_generation_bump_clears_conditions_but_keeps_mirrored() -> None:
    mirrored = {"type": "Mirrored", "status": "True", "reason": "Mirrored", "generation": 1}
    failed = {"type": "ImportSuccess", "status": "False", "reason": "NotFound", "generation": 1}
    tags = [{"tag": "latest", "items": [_item(REF, IMAGE, 1)], "conditions": [mirrored, failed]}]
    result, changed = record_event(tags, "latest", _item(REF, IMAGE, 2))
    assert changed and result[0]["items"][0]["generation"] == 2
    assert result[0]["conditions"] == [mirrored]
    result, changed = record_event(result, "latest", _item(REF, IMAGE, 2))
    assert not changed  # nothing new: OpenShift's row 8
    result, changed = record_event(result, "latest", _item(NEWREF, NEWIMAGE, 3))
    assert changed and "conditions" not in result[0]  # a new image: the copy was of the old one


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


# --- OpenShift's TestTagRefChanged (strategy_test.go), ns = streamnamespace; and rows of ours
# for kind, reference, importMode (the spec's derivations from tagRefChanged) ---------------

NS = "streamnamespace"


def _from(kind: str | None, name: str, namespace: str = "") -> dict[str, Any]:
    source: dict[str, Any] = {"name": name} if kind is None else {"kind": kind, "name": name}
    if namespace:
        source["namespace"] = namespace
    return {"name": "t", "from": source}


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        ({"name": "t"}, {"name": "t"}, False),
        (_from("DockerImage", "foo"), _from("DockerImage", "foo"), False),
        (_from("DockerImage", "foo"), _from("DockerImage", "bar"), True),
        ({"name": "t"}, {"name": "t", "from": {}}, False),
        ({"name": "t"}, _from("ImageStreamTag", "other:latest", "another"), True),
        (
            _from("ImageStreamTag", "other:latest"),
            _from("ImageStreamTag", "other:latest", "another"),
            True,
        ),
        (
            _from("ImageStreamTag", "other:latest", "something"),
            _from("ImageStreamTag", "other:latest", "another"),
            True,
        ),
        (
            _from("ImageStreamTag", "other:latest", "something"),
            _from("ImageStreamTag", "other:latest"),
            True,
        ),
        (_from("ImageStreamTag", "other:latest"), _from("ImageStreamTag", "other:other", NS), True),
        (
            _from("ImageStreamTag", "other:latest", NS),
            _from("ImageStreamTag", "other:other", NS),
            True,
        ),
        (_from("ImageStreamTag", "other:latest", NS), _from("ImageStreamTag", "other:other"), True),
        (
            _from("ImageStreamTag", "other:latest"),
            _from("ImageStreamTag", "other:latest", NS),
            False,
        ),
        (
            _from("ImageStreamTag", "other:latest", NS),
            _from("ImageStreamTag", "other:latest", NS),
            False,
        ),
        (_from("ImageStreamTag", "other:latest"), _from("ImageStreamTag", "other:latest"), False),
        # Not compared: kind; removing `from`. Compared: reference, importMode (missing = ours).
        (_from("ImageStreamTag", "x:1"), _from("DockerImage", "x:1"), False),
        (_from("DockerImage", "foo"), {"name": "t"}, False),
        (_from("DockerImage", "foo"), {**_from("DockerImage", "foo"), "reference": True}, True),
        (
            {**_from("DockerImage", "foo"), "importPolicy": {"importMode": "Legacy"}},
            {**_from("DockerImage", "foo"), "importPolicy": {"importMode": "PreserveOriginal"}},
            True,
        ),
        (
            _from("DockerImage", "foo"),
            {**_from("DockerImage", "foo"), "importPolicy": {"importMode": "PreserveOriginal"}},
            False,
        ),
        (
            _from("DockerImage", "foo"),
            {**_from("DockerImage", "foo"), "importPolicy": {"scheduled": True, "insecure": True}},
            False,
        ),
    ],
)
def test_tag_ref_changed_table(old: dict[str, Any], new: dict[str, Any], changed: bool) -> None:
    assert tag_ref_changed(old, new, NS) is changed


def _stream_at(generation: int, *tags: dict[str, Any], seen: int | None = None) -> dict[str, Any]:
    obj = _with_tags(*tags, generation=generation)
    obj["metadata"]["namespace"] = NS
    if seen is not None:
        items = [{"created": "t", "dockerImageReference": "r", "image": "i", "generation": seen}]
        obj["status"] = {"tags": [{"tag": t["name"], "items": items} for t in tags]}
    return obj


def test_spelling_out_the_own_namespace_is_no_edit() -> None:
    old = _stream_at(
        5, {"name": "t", "from": {"kind": "ImageStreamTag", "name": "s:1"}, "generation": 3}
    )
    new = _stream_at(
        5,
        {
            "name": "t",
            "from": {"kind": "ImageStreamTag", "name": "s:1", "namespace": NS},
            "generation": 3,
        },
    )
    assert generation_stamps(new, old) == {}


def test_an_edit_is_stamped_newer_than_what_status_recorded() -> None:
    # A stream applied from another cluster: tags and status at 5, metadata.generation 1.
    old = _stream_at(1, _tag("t", generation=5), seen=5)
    new = _stream_at(1, _tag("t", "quay.io/x/app:2", generation=5), seen=5)
    assert generation_stamps(new, old) == {0: 6}
    # …and newer than the stream's next generation when that is the larger.
    old = _stream_at(9, _tag("t", generation=2), seen=2)
    new = _stream_at(9, _tag("t", "quay.io/x/app:2", generation=2), seen=2)
    assert generation_stamps(new, old) == {0: 10}


def test_a_stream_is_read_once_per_round_of_a_tee() -> None:
    """Inside reading_once (one object's round of a Tee's sinks) the object is read once
    and its entry computed once; outside, and in the next round, it is read afresh."""
    from webhook.model.streams import entry_once, read_once, reading_once

    obj = {
        "metadata": {"name": "a", "namespace": "team"},
        "spec": {"lookupPolicy": {"local": True}},
        "status": {"tags": [{"tag": "1", "items": [_event(DIGEST_A)]}]},
    }
    with reading_once():
        first = read_once(obj)
        assert read_once(obj) is first
        assert entry_once(first) is entry_once(first)
    assert read_once(obj) is not first
    obj["spec"]["lookupPolicy"]["local"] = False
    with reading_once():
        assert read_once(obj).lookup_local is False
    with reading_once(), pytest.raises(InvalidImageStream):
        read_once({"metadata": {}})
