"""Image triggers on plain dicts: the annotation, field paths, the patch, tag moves only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from webhook.model import streams, triggers
from webhook.model.streams import ImageStream
from webhook.model.triggers import Annotation, Followed, InvalidTrigger, Trigger

A, B, C = ("sha256:" + ch * 64 for ch in "abc")
REG = "quay.io/keycloak/keycloak"
WEB = 'spec.template.spec.containers[?(@.name=="web")].image'


def image_stream(
    current: dict[str, str], namespace: str = "demo", name: str = "keycloak", local_repo: str = ""
) -> ImageStream:
    """A stream whose tags point at the given digests."""
    return streams.parse_image_stream(
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "tags": [
                    {
                        "name": tag,
                        "from": {"kind": "DockerImage", "name": f"{REG}:{tag}"},
                        **({"referencePolicy": {"type": "Local"}} if local_repo else {}),
                    }
                    for tag in current
                ]
            },
            "status": {
                "dockerImageRepository": local_repo,
                "tags": [
                    {
                        "tag": tag,
                        "items": [
                            {
                                "created": "",
                                "dockerImageReference": f"{REG}@{d}",
                                "image": d,
                                "generation": 1,
                            }
                        ],
                        # What the mirror writes once the image is in the local registry.
                        **(
                            {
                                "conditions": [
                                    {
                                        "type": "Mirrored",
                                        "status": "True",
                                        "message": f"mirrored to {local_repo}@{d}",
                                    }
                                ]
                            }
                            if local_repo
                            else {}
                        ),
                    }
                    for tag, d in current.items()
                ],
            },
        }
    )


def workload(
    kind: str = "Deployment",
    annotation: Any = None,
    containers: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    pod: dict[str, Any] = {"containers": containers or [{"name": "web", "image": f"{REG}@{A}"}]}
    if init is not None:
        pod["initContainers"] = init
    template = {"metadata": {"labels": {"app": "x"}}, "spec": pod}
    spec: dict[str, Any] = {"template": template}
    if kind == "CronJob":
        spec = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}
    metadata: dict[str, Any] = {"name": "web", "namespace": "demo", "resourceVersion": "7"}
    if annotation is not None:
        text = annotation if isinstance(annotation, str) else json.dumps(annotation)
        metadata["annotations"] = {triggers.TRIGGERS_ANNOTATION: text}
    return {"metadata": metadata, "spec": spec}


def trig(name: str = "keycloak:20.0", path: str = WEB, **extra: Any) -> dict[str, Any]:
    return {
        "from": {"kind": "ImageStreamTag", "name": name, **extra.pop("source", {})},
        "fieldPath": path,
        **extra,
    }


def lookup_for(*found: ImageStream) -> triggers.StreamLookup:
    table = {(s.namespace, s.name): s for s in found}
    return lambda namespace, name: table.get((namespace, name))


# --- the annotation: OpenShift's rules (library-go pkg/image/trigger) -----------------------


def test_parse_the_openshift_format() -> None:
    text = json.dumps(
        [
            trig(),
            trig(
                "db:1",
                "spec.template.spec.containers[0].image",
                source={"namespace": "ops"},
                paused=True,
            ),
        ]
    )
    assert triggers.parse_triggers(text) == [
        Trigger("keycloak", "20.0", WEB),
        Trigger("db", "1", "spec.template.spec.containers[0].image", "ops", paused=True),
    ]


def test_no_annotation_and_null_mean_no_triggers() -> None:
    assert triggers.parse_annotation(None) == Annotation()
    assert triggers.parse_annotation("null") == Annotation()  # P2
    assert triggers.parse_annotation("[]") == Annotation()


# The whole annotation is unusable (no trigger of the workload applies): not JSON, not a
# list, a field of the wrong JSON type (json.Unmarshal fails), or a fieldPath twice.
WHOLE_ANNOTATION_INVALID = [
    pytest.param("", "is not valid JSON", id="P1-empty"),
    pytest.param("{not json", "is not valid JSON", id="not-json"),
    pytest.param(json.dumps(trig()), "must be a JSON list", id="P3-object"),
    pytest.param('["x"]', r"triggers\[0\] must be an object", id="entry-a-string"),
    pytest.param(json.dumps([trig(), 5]), r"triggers\[1\] must be an object", id="entry-a-number"),
    pytest.param(json.dumps([trig(paused="yes")]), "paused must be true or false", id="P5"),
    pytest.param(
        json.dumps([trig(paused="true")]), "paused must be true or false", id="paused-str"
    ),
    pytest.param(json.dumps([trig(path=3)]), "fieldPath must be a string", id="path-a-number"),
    pytest.param(
        json.dumps([trig() | {"from": "keycloak:20.0"}]), "from must be an object", id="from-str"
    ),
    pytest.param(
        json.dumps([trig() | {"from": {"kind": "ImageStreamTag", "name": 1}}]),
        "from.name must be a string",
        id="name-a-number",
    ),
    pytest.param(
        json.dumps([trig(source={"namespace": ["ops"]})]),
        "from.namespace must be a string",
        id="namespace-a-list",
    ),
    pytest.param(
        json.dumps([trig(), trig("other:1")]),
        r"triggers\[0\] and \[1\] both have .*duplicate triggers are not allowed",
        id="P4-duplicate",
    ),
    pytest.param(
        json.dumps([{"from": {"kind": "ImageStreamTag", "name": "a:1"}}, {"from": {}}]),
        r"\[0\] and \[1\] both have no fieldPath",
        id="duplicate-no-path",
    ),
    pytest.param(
        # Duplicates count before anything else: even two entries that would be skipped.
        json.dumps([trig("bad", "p"), trig("worse", "p")]),
        "duplicate triggers",
        id="duplicate-skipped-entries",
    ),
]


@pytest.mark.parametrize(("value", "message"), WHOLE_ANNOTATION_INVALID)
def test_annotations_unusable_as_a_whole(value: str, message: str) -> None:
    with pytest.raises(InvalidTrigger, match=message):
        triggers.parse_annotation(value)
    result = triggers.plan(workload(annotation=value), "Deployment", lookup_for(image_stream({})))
    assert result.patch == [] and len(result.problems) == 1


# One entry is wrong in what it says: that entry is skipped, the others apply. OpenShift
# skips these silently (its indexer ignores them); here each is named in a Warning Event.
SKIPPED_ENTRIES = [
    pytest.param(
        {"from": {"kind": "ImageStreamTag", "name": "keycloak:20.0"}},
        "fieldPath is required",
        id="P6-no-path",
    ),
    pytest.param(
        trig() | {"from": {"kind": "DockerImage", "name": "keycloak:20.0"}},
        "from.kind must be ImageStreamTag, not 'DockerImage'",
        id="P7-docker-image",
    ),
    pytest.param(trig("keycloak"), "from.name must be STREAM:TAG", id="P8-no-colon"),
    pytest.param(trig("ops/keycloak:1"), "the namespace goes in from.namespace", id="ns-in-name"),
    pytest.param(trig("keycloak:20.0:1"), "from.name must be STREAM:TAG", id="two-colons"),
    pytest.param(trig(":20.0"), "from.name must be STREAM:TAG", id="no-stream"),
    pytest.param({"fieldPath": "p"}, "from.kind must be ImageStreamTag, not ''", id="no-from"),
    pytest.param(None, "from.kind must be ImageStreamTag", id="null-entry"),
    pytest.param(
        trig(source={"apiVersion": "image.openshift.io/v1"}),
        "from.apiVersion must not be set",
        id="api-version",
    ),
]


@pytest.mark.parametrize(("entry", "reason"), SKIPPED_ENTRIES)
def test_one_malformed_entry_is_skipped(entry: Any, reason: str) -> None:
    good = trig("keycloak:20.0", "spec.template.spec.initContainers[0].image")
    text = json.dumps([entry, good])
    annotation = triggers.parse_annotation(text)
    assert annotation.triggers == (
        Trigger("keycloak", "20.0", "spec.template.spec.initContainers[0].image"),
    )
    (skipped,) = annotation.skipped
    assert skipped.position == 0 and reason in skipped.reason
    assert str(skipped).startswith("image.openshift.io/triggers[0]: ")
    # Planned: the good one applies, the bad one is a problem naming it.
    obj = workload(annotation=text, init=[{"name": "init", "image": "i:1"}])
    result = triggers.plan(obj, "Deployment", lookup_for(image_stream({"20.0": B})))
    assert [op["path"] for op in result.patch] == ["/spec/template/spec/initContainers/0/image"]
    assert result.problems == [
        f"image.openshift.io/triggers[0]: {skipped.reason}; that trigger is skipped,"
        " the others apply"
    ]
    # Editing the annotation (`set triggers`) refuses rather than drop the entry.
    with pytest.raises(InvalidTrigger, match=r"image.openshift.io/triggers\[0\]"):
        triggers.parse_triggers(text)


def test_a_name_ending_in_a_colon_means_latest() -> None:
    assert triggers.parse_annotation(json.dumps([trig("keycloak:")])).triggers == (
        Trigger("keycloak", "latest", WEB),
    )


def test_unknown_fields_are_ignored() -> None:
    text = json.dumps([trig() | {"extra": 1, "from": {"kind": "ImageStreamTag", "name": "k:1"}}])
    assert triggers.parse_annotation(text).triggers == (Trigger("k", "1", WEB),)


def test_written_as_go_marshals_it() -> None:
    value = triggers.triggers_json(
        [Trigger("keycloak", "20.0", WEB), Trigger("db", "1", "p", "ops", paused=True)]
    )
    assert value == (
        '[{"from":{"kind":"ImageStreamTag","name":"keycloak:20.0"},'
        '"fieldPath":"spec.template.spec.containers[?(@.name==\\"web\\")].image"},'
        '{"from":{"kind":"ImageStreamTag","name":"db:1","namespace":"ops"},'
        '"fieldPath":"p","paused":true}]'
    )
    assert triggers.parse_triggers(value)[1].paused


# --- field paths ----------------------------------------------------------------------------


def test_field_by_name_and_by_index() -> None:
    obj = workload(containers=[{"name": "side", "image": "s:1"}, {"name": "web", "image": "w:1"}])
    by_name = triggers.resolve_field(obj, "Deployment", WEB)
    assert (by_name.pointer, by_name.container, by_name.image) == (
        "/spec/template/spec/containers/1/image",
        "web",
        "w:1",
    )
    by_index = triggers.resolve_field(obj, "Deployment", "spec.template.spec.containers[0].image")
    assert (by_index.index, by_index.container) == (0, "side")
    single = "spec.template.spec.containers[?(@.name=='web')].image"
    assert triggers.resolve_field(obj, "Deployment", single).index == 1


def test_init_containers() -> None:
    obj = workload(init=[{"name": "migrate", "image": "m:1"}])
    path = 'spec.template.spec.initContainers[?(@.name=="migrate")].image'
    found = triggers.resolve_field(obj, "Deployment", path)
    assert found.pointer == "/spec/template/spec/initContainers/0/image"
    assert triggers.container_names(obj, "Deployment") == {
        "web": "containers",
        "migrate": "initContainers",
    }


def test_cronjob_paths() -> None:
    obj = workload("CronJob")
    path = 'spec.jobTemplate.spec.template.spec.containers[?(@.name=="web")].image'
    found = triggers.resolve_field(obj, "CronJob", path)
    assert found.pointer == "/spec/jobTemplate/spec/template/spec/containers/0/image"
    assert triggers.field_path_for("CronJob", "web") == path
    with pytest.raises(InvalidTrigger, match="not valid for a CronJob"):
        triggers.resolve_field(obj, "CronJob", WEB)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("spec.containers[0].image", "not valid for a Deployment"),  # P9: another prefix
        ("spec.template.spec.containers[0].env", "not valid for a Deployment"),
        ('spec.template.spec.containers[?(@.name=="web")]', "not valid"),  # row 3: no .image
        ('spec.template.spec.containers[?(@.name=="web").image', "not valid"),  # row 4: no ]
        ("spec.template.spec.containers[@.name=web].image", "by index or"),  # row 5
        ("spec.template.spec.containers[3].image", r"no containers\[3\] \(1 containers\)"),
        ("spec.template.spec.containers[-1].image", r"no containers\[-1\]"),
        (
            'spec.template.spec.containers[?(@.name=="db")].image',
            r"no container named 'db' \(web\)",
        ),
    ],
)
def test_bad_field_paths(path: str, message: str) -> None:
    with pytest.raises(InvalidTrigger, match=message):
        triggers.resolve_field(workload(), "Deployment", path)


@pytest.mark.parametrize(
    ("selector", "pointer"),
    [
        ("containers[0]image", "containers/0"),  # P10: the dot is optional
        ("containers[+1].image", "containers/1"),  # P11: what strconv.Atoi takes
        ("containers[01].image", "containers/1"),
        # P13: a name is looked up in both lists (names are unique across a pod).
        ('containers[?(@.name=="init")].image', "initContainers/0"),
        ('initContainers[?(@.name=="side")].image', "containers/1"),
        # P12: OpenShift wants exactly ?(@.name=="NAME"); spaces and single quotes are
        # accepted here too (a superset: whatever OpenShift reads, we read alike).
        ("containers[?(@.name == 'side')].image", "containers/1"),
    ],
)
def test_field_paths_as_openshift_reads_them(selector: str, pointer: str) -> None:
    obj = workload(
        containers=[{"name": "web", "image": "w"}, {"name": "side", "image": "s"}],
        init=[{"name": "init", "image": "i"}],
    )
    found = triggers.resolve_field(obj, "Deployment", f"spec.template.spec.{selector}")
    assert found.pointer == f"/spec/template/spec/{pointer}/image"


def test_kinds_without_triggers() -> None:
    with pytest.raises(InvalidTrigger, match="Job does not support image triggers"):
        triggers.field_path_for("Job", "web")


# --- the rule -------------------------------------------------------------------------------


def test_plan_sets_the_pinned_reference() -> None:
    obj = workload(annotation=[trig()])
    result = triggers.plan(obj, "Deployment", lookup_for(image_stream({"20.0": B})))
    assert result.patch == [
        {"op": "add", "path": "/spec/template/spec/containers/0/image", "value": f"{REG}@{B}"}
    ]
    assert result.updates == [
        triggers.FieldUpdate(WEB, "web", f"{REG}@{A}", f"{REG}@{B}", "keycloak:20.0")
    ]
    assert result.problems == []


def test_plan_uses_the_local_repository_for_local_tags() -> None:
    stream = image_stream({"20.0": B}, local_repo="registry.svc:5000/demo/keycloak")
    result = triggers.plan(workload(annotation=[trig()]), "Deployment", lookup_for(stream))
    assert result.patch[0]["value"] == f"registry.svc:5000/demo/keycloak@{B}"


def test_nothing_to_do_when_the_field_already_has_it() -> None:
    obj = workload(annotation=[trig()])
    assert triggers.plan(obj, "Deployment", lookup_for(image_stream({"20.0": A}))).patch == []


def test_paused_triggers_and_unknown_streams_and_tags_without_image() -> None:
    stream = image_stream({"20.0": B})
    paused = workload(annotation=[trig(paused=True)])
    assert triggers.plan(paused, "Deployment", lookup_for(stream)).patch == []
    other = workload(annotation=[trig("other:1")])
    assert triggers.plan(other, "Deployment", lookup_for(stream)).patch == []
    no_image = workload(annotation=[trig("keycloak:21.0")])
    assert triggers.plan(no_image, "Deployment", lookup_for(stream)).patch == []


def test_cross_namespace_trigger() -> None:
    ops = image_stream({"20.0": C}, namespace="ops")
    obj = workload(annotation=[trig(source={"namespace": "ops"})])
    result = triggers.plan(obj, "Deployment", lookup_for(ops, image_stream({"20.0": B})))
    assert result.patch[0]["value"] == f"{REG}@{C}"
    assert result.updates[0].source == "ops/keycloak:20.0"


def test_p14_a_path_naming_no_container_stops_only_its_trigger() -> None:
    """OpenShift stops every trigger of the workload (and retries forever) when a resolved
    trigger's path names no container; here that trigger is a problem, the others apply."""
    bad = trig("keycloak:20.0", 'spec.template.spec.containers[?(@.name=="gone")].image')
    good = trig("keycloak:20.0", "spec.template.spec.initContainers[0].image")
    obj = workload(annotation=[bad, good], init=[{"name": "init", "image": "i:1"}])
    result = triggers.plan(obj, "Deployment", lookup_for(image_stream({"20.0": B})))
    assert [op["path"] for op in result.patch] == ["/spec/template/spec/initContainers/0/image"]
    assert result.problems == [
        "trigger from keycloak:20.0: fieldPath"
        """ 'spec.template.spec.containers[?(@.name=="gone")].image':"""
        " no container named 'gone' (init, web)"
    ]


def test_path_problems_are_found_only_once_the_tag_resolves() -> None:
    bad = trig("keycloak:21.0", 'spec.template.spec.containers[?(@.name=="gone")].image')
    result = triggers.plan(
        workload(annotation=[bad]), "Deployment", lookup_for(image_stream({"20.0": B}))
    )
    assert result.patch == [] and result.problems == []


def statefulset(annotation: Any, containers: list[dict[str, Any]], init: Any = None) -> Any:
    obj = workload("StatefulSet", annotation, init=init)
    obj["spec"]["template"]["spec"]["containers"] = containers
    obj["metadata"].update(name="test", namespace="default")
    return obj


def p(name: str, where: str = "containers") -> str:
    return f'spec.template.spec.{where}[?(@.name=="{name}")].image'


def other(name: str, path: str, **extra: Any) -> dict[str, Any]:
    return trig(name, path, source={"namespace": "other"}, **extra)


# TestAnnotationsReactor (library-go annotations_test.go): StatefulSet default/test, tag
# other/stream-1:1 → image-lookup-1 (here IMAGE_LOOKUP_1); the images after the update
# ("init:" marks an init container), or None: no update.
IMAGE_LOOKUP_1 = f"{REG}@{B}"
REACTOR_ROWS = [
    pytest.param(None, {"test": ""}, None, id="1-no-annotation"),
    pytest.param([other("stream-1:1", p("test"))], {"test": ""}, {"test": IMAGE_LOOKUP_1}, id="7"),
    pytest.param(
        [other("stream-1:1", p("test", "initContainers"))],
        {"init:test": ""},
        {"init:test": IMAGE_LOOKUP_1},
        id="8-init",
    ),
    pytest.param([other("stream-1:1", p("test"), paused=True)], {"test": ""}, None, id="9-paused"),
    pytest.param(
        [other("stream-1:1", p("test")), other("stream-2:1", p("test2"))],
        {"test": "", "test2": ""},
        {"test": IMAGE_LOOKUP_1, "test2": ""},
        id="10-one-stream-unknown",
    ),
    pytest.param(
        [other("stream-1:1", p("test")), other("stream-2:1", p("test2"))],
        {"test": "", "test2": "old-image"},
        {"test": IMAGE_LOOKUP_1, "test2": "old-image"},
        id="11",
    ),
    pytest.param(
        [other("stream-1:1", p("test")), other("stream-1:1", p("test2"))],
        {"test": "", "test2": ""},
        {"test": IMAGE_LOOKUP_1, "test2": IMAGE_LOOKUP_1},
        id="12-two-fields-one-tag",
    ),
]


def images_after(obj: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, str]:
    spec = obj["spec"]["template"]["spec"]
    for op in patch:
        *_, list_name, index, _image = op["path"].split("/")
        spec[list_name][int(index)]["image"] = op["value"]
    found = {c["name"]: c["image"] for c in spec["containers"]}
    return found | {f"init:{c['name']}": c["image"] for c in spec.get("initContainers", [])}


@pytest.mark.parametrize(("annotation", "before", "after"), REACTOR_ROWS)
def test_openshift_reactor_table(
    annotation: Any, before: dict[str, str], after: dict[str, str] | None
) -> None:
    containers = [{"name": n, "image": i} for n, i in before.items() if ":" not in n]
    init = [{"name": n[5:], "image": i} for n, i in before.items() if n.startswith("init:")]
    obj = statefulset(annotation, containers, init or None)
    stream = image_stream({"1": B}, namespace="other", name="stream-1")
    result = triggers.plan(obj, "StatefulSet", lookup_for(stream))
    assert result.problems == []
    if after is None:
        assert result.patch == []
    else:
        assert images_after(obj, result.patch) == after


@pytest.mark.parametrize(
    ("path", "containers"),
    [
        pytest.param(p("test"), [], id="2-no-containers"),
        pytest.param(p("test").removesuffix(".image"), [{"name": "test"}], id="3-no-image"),
        pytest.param(
            'spec.template.spec.containers[?(@.name=="test").image', [{"name": "test"}], id="4"
        ),
        pytest.param(
            "spec.template.spec.containers[@.name=test].image", [{"name": "test"}], id="5"
        ),
    ],
)
def test_openshift_reactor_error_rows_are_problems(path: str, containers: Any) -> None:
    """Rows 2-5 are errors in OpenShift (the whole object); here a problem of that trigger."""
    obj = statefulset([other("stream-1:1", path)], containers)
    stream = image_stream({"1": B}, namespace="other", name="stream-1")
    result = triggers.plan(obj, "StatefulSet", lookup_for(stream))
    assert result.patch == [] and len(result.problems) == 1


def test_reactor_row_6_no_tags_known() -> None:
    obj = statefulset([other("stream-1:1", p("test"))], [{"name": "test", "image": ""}])
    stream = image_stream({}, namespace="other", name="stream-1")
    assert triggers.plan(obj, "StatefulSet", lookup_for(stream)) == triggers.Plan()


def test_a_refused_stream_is_a_problem_of_its_trigger() -> None:
    def refuse(namespace: str, name: str) -> ImageStream | None:
        raise InvalidTrigger(f"may not read {namespace}")

    obj = workload(annotation=[trig(source={"namespace": "ops"})])
    result = triggers.plan(obj, "Deployment", refuse)
    assert result.problems == ["trigger from ops/keycloak:20.0: may not read ops"]


def test_an_invalid_annotation_is_a_problem_not_a_crash() -> None:
    result = triggers.plan(workload(annotation="[{"), "Deployment", lookup_for())
    assert result.patch == [] and "not valid JSON" in result.problems[0]


# --- tag moves only -------------------------------------------------------------------------


def test_moved_tags() -> None:
    before = image_stream({"20.0": A, "19.0": B})
    after = image_stream({"20.0": C, "19.0": B, "21.0": A})
    assert triggers.moved_tags(after, before) == {"20.0", "21.0"}
    assert triggers.moved_tags(after, after) == set()
    assert triggers.moved_tags(after, None) == {"20.0", "19.0", "21.0"}


def test_only_triggers_on_moved_tags_act() -> None:
    """A workload rolled back by hand (field ≠ tag) holds while its tag stays put, even
    when another tag of the same stream moves; it rolls when its own tag moves."""
    path19 = 'spec.template.spec.containers[?(@.name=="old")].image'
    obj = workload(
        annotation=[trig("keycloak:20.0"), trig("keycloak:19.0", path19)],
        containers=[
            {"name": "web", "image": f"{REG}@{A}"},  # rolled back by hand
            {"name": "old", "image": f"{REG}@{A}"},
        ],
    )
    before = image_stream({"20.0": B, "19.0": A})
    after = image_stream({"20.0": B, "19.0": C})
    moved = {("demo", "keycloak", t) for t in triggers.moved_tags(after, before)}
    result = triggers.plan(obj, "Deployment", lookup_for(after), moved)
    assert [u.container for u in result.updates] == ["old"]
    moved_again = {("demo", "keycloak", "20.0")}
    result = triggers.plan(obj, "Deployment", lookup_for(after), moved_again)
    assert [u.container for u in result.updates] == ["web"]


# --- workload events: created, annotation added or changed ----------------------------------

WEB_20 = trig("keycloak:20.0")
WEB_21 = trig("keycloak:21.0")
INIT_DB = trig("db:1", "spec.template.spec.initContainers[0].image")
ABSENT = object()  # no annotation


def annotation_text(entries: Any) -> str | None:
    if entries is ABSENT:
        return None
    return entries if isinstance(entries, str) else json.dumps(entries)


def spelt(entry: dict[str, Any]) -> Trigger:
    """The trigger an entry gives on a workload in namespace demo, as remembered."""
    (trigger,) = triggers.parse_annotation(json.dumps([entry])).triggers
    return trigger.spelt_out("demo")


# (what the controller saw before, the annotation now, the event) → the triggers applied
# now, and whether problems are reported. OpenShift (openshift-controller-manager's trigger
# cache, rows T1-T13 of the spec) applies every trigger on Added and on any Updated; here
# only new or changed entries apply, so an edit that leaves a trigger as it was, or a
# rollout undo, does not move the image.
WORKLOAD_EVENTS = [
    pytest.param(ABSENT, [WEB_20], "added", [WEB_20], False, id="T1-created"),
    pytest.param(ABSENT, [WEB_20], "modified", [WEB_20], False, id="T3-annotation-added"),
    pytest.param([WEB_20, INIT_DB], [INIT_DB, WEB_20], "modified", [], False, id="T4-reordered"),
    pytest.param(
        [WEB_20 | {"paused": True}], [WEB_20], "modified", [WEB_20], False, id="T5-resumed"
    ),
    pytest.param([WEB_20], [WEB_20 | {"paused": True}], "modified", [], False, id="paused"),
    pytest.param([WEB_20], [WEB_20], "modified", [], False, id="T6-T7-unchanged-undo"),
    pytest.param([WEB_20], [WEB_21], "modified", [WEB_21], False, id="tag-changed"),
    pytest.param([WEB_20], [WEB_20, INIT_DB], "modified", [INIT_DB], False, id="entry-added"),
    pytest.param([WEB_20, INIT_DB], [WEB_20], "modified", [], False, id="undo-to-fewer"),
    pytest.param(
        [WEB_20],
        [trig(source={"namespace": "demo"})],
        "modified",
        [],
        False,
        id="own-namespace-spelt-out",
    ),
    pytest.param([WEB_20], [WEB_20], "added", [WEB_20], False, id="recreated"),
    pytest.param([WEB_20], "[", "modified", [], True, id="T8-became-invalid"),
    pytest.param(ABSENT, [{"from": {}}], "added", [], True, id="only-a-bad-entry"),
    pytest.param(ABSENT, [{"from": {}}, WEB_20], "added", [WEB_20], True, id="bad-next-to-good"),
    pytest.param(
        [{"from": {}}, WEB_20], [{"from": {}}, WEB_20], "modified", [], False, id="still-bad"
    ),
    pytest.param(ABSENT, [WEB_20], "listed", [], False, id="there-at-start"),
    pytest.param(ABSENT, "[", "listed", [], False, id="invalid-at-start"),
    pytest.param([WEB_20], ABSENT, "modified", [], False, id="T12-removed"),
]


@pytest.mark.parametrize(("before", "now", "event", "applied", "report"), WORKLOAD_EVENTS)
def test_workload_events(
    before: Any, now: Any, event: triggers.WorkloadEvent, applied: list[Any], report: bool
) -> None:
    old = triggers.react(None, annotation_text(before), "demo", "added").remember
    reaction = triggers.react(old, annotation_text(now), "demo", event)
    assert reaction.apply == tuple(spelt(entry) for entry in applied)
    assert reaction.report is report


def test_what_is_remembered() -> None:
    remembered = triggers.react(
        None, json.dumps([WEB_20, INIT_DB | {"paused": True}, {"from": {}}]), "demo", "added"
    ).remember
    # Unpaused triggers only, namespaces spelt out; the problems, so as not to repeat them.
    assert remembered == Followed(
        (Trigger("keycloak", "20.0", WEB, "demo"),),
        ("image.openshift.io/triggers[2]: from.kind must be ImageStreamTag, not ''",),
    )
    assert triggers.react(remembered, None, "demo", "modified").remember is None
    nothing = json.dumps([INIT_DB | {"paused": True}])
    assert triggers.react(None, nothing, "demo", "added").remember is None


def test_an_unusable_annotation_keeps_the_triggers_remembered() -> None:
    """As OpenShift's cache: breaking the JSON and fixing it again applies nothing that was
    there before (the workload may have been rolled back by hand meanwhile)."""
    old = triggers.react(None, json.dumps([WEB_20]), "demo", "added").remember
    broken = triggers.react(old, "[", "demo", "modified")
    assert old is not None and broken.remember is not None
    assert broken.remember.triggers == old.triggers
    assert triggers.react(broken.remember, "[", "demo", "modified").report is False
    fixed = triggers.react(broken.remember, json.dumps([WEB_20]), "demo", "modified")
    assert fixed.apply == () and fixed.remember == old


@pytest.mark.parametrize(("generation", "event"), [(1, "added"), (2, "listed"), (None, "listed")])
def test_workloads_found_at_start(generation: Any, event: str) -> None:
    """A workload whose spec never changed since it was created (generation 1) was created
    while the controller was away: its triggers apply. Any other may have been rolled back
    by hand, and holds until its tag moves."""
    assert triggers.listed_event(generation) == event


def test_plan_only_the_given_triggers() -> None:
    obj = workload(annotation=[WEB_20, INIT_DB], init=[{"name": "init", "image": "i:1"}])
    found = lookup_for(image_stream({"20.0": B}), image_stream({"1": C}, name="db"))
    result = triggers.plan(obj, "Deployment", found, only={spelt(INIT_DB)})
    assert [u.container for u in result.updates] == ["init"]
    assert triggers.plan(obj, "Deployment", found, only=set()).patch == []


# --- set triggers ---------------------------------------------------------------------------


def test_set_image_trigger_adds_one_per_container() -> None:
    obj = workload(containers=[{"name": "web", "image": "w"}, {"name": "side", "image": "s"}])
    result = triggers.set_image_trigger(obj, "Deployment", "keycloak:20.0", "demo", ["web", "side"])
    assert [t.field_path for t in result] == [
        WEB,
        'spec.template.spec.containers[?(@.name=="side")].image',
    ]
    assert all(t.namespace == "" for t in result)  # the workload's own namespace is implied


def test_set_image_trigger_defaults_to_the_only_container_and_can_pause() -> None:
    result = triggers.set_image_trigger(workload(), "Deployment", "k:1", "ops", [], auto=False)
    assert result == [Trigger("k", "1", WEB, "ops", paused=True)]


def test_set_image_trigger_updates_the_same_trigger_in_place() -> None:
    obj = workload(
        annotation=[trig(), trig("db:1", "spec.template.spec.initContainers[0].image")],
        init=[{"name": "i", "image": "i"}],
    )
    result = triggers.set_image_trigger(
        obj, "Deployment", "keycloak:20.0", "demo", ["web"], auto=False
    )
    assert [(t.from_name, t.paused) for t in result] == [("db:1", False), ("keycloak:20.0", True)]


@pytest.mark.parametrize(
    ("containers", "message"),
    [
        (["db"], r"not all container names exist: db \(accepts: side, web\)"),
        ([], "you must specify --containers"),
    ],
)
def test_set_image_trigger_errors(containers: list[str], message: str) -> None:
    obj = workload(containers=[{"name": "web", "image": "w"}, {"name": "side", "image": "s"}])
    with pytest.raises(InvalidTrigger, match=message):
        triggers.set_image_trigger(obj, "Deployment", "k:1", "demo", containers)


def test_one_trigger_per_container() -> None:
    obj = workload(annotation=[trig("other:1")])
    with pytest.raises(InvalidTrigger, match="web already follows other:1"):
        triggers.set_image_trigger(obj, "Deployment", "keycloak:20.0", "demo", ["web"])


def test_remove_and_reset() -> None:
    current = [Trigger("k", "1", "a"), Trigger("k", "1", "b", "ops"), Trigger("d", "2", "c")]
    assert triggers.remove_image_trigger(current, "k:1", "demo", "demo") == current[1:]
    assert triggers.remove_image_trigger(current, "k:1", "ops", "demo") == [current[0], current[2]]
    assert all(t.paused for t in triggers.reset_triggers(current, auto=False))
    assert not any(t.paused for t in triggers.reset_triggers(current, auto=True))


def test_annotation_patch() -> None:
    obj = workload()
    patch = triggers.annotation_patch(obj, [Trigger("k", "1", WEB)])
    assert patch["metadata"]["resourceVersion"] == "7"
    assert (
        json.loads(patch["metadata"]["annotations"][triggers.TRIGGERS_ANNOTATION])[0]["fieldPath"]
        == WEB
    )
    assert triggers.annotation_patch(obj, [])["metadata"]["annotations"] == {
        triggers.TRIGGERS_ANNOTATION: None
    }


def test_trigger_rows_are_ocs_table() -> None:
    obj = workload(annotation=[trig(), trig("db:1", "spec.template.spec.containers[5].image")])
    obj["spec"]["paused"] = True
    assert triggers.trigger_rows(obj, "Deployment", "deployments") == [
        ("deployments/web", "config", "", "false"),
        ("deployments/web", "image", "keycloak:20.0 (web)", "true"),
    ]
    broken = workload(annotation="[")
    assert triggers.trigger_rows(broken, "StatefulSet", "statefulsets")[1][1] == "<error>"
