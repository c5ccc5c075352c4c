"""Image triggers on plain dicts: the annotation, field paths, the patch, tag moves only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from webhook.model import streams, triggers
from webhook.model.streams import ImageStream
from webhook.model.triggers import InvalidTrigger, Trigger

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


# --- the annotation -------------------------------------------------------------------------


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
    assert triggers.parse_triggers(None) == []
    assert triggers.parse_triggers("") == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"from": {}}', "must be a JSON list"),
        ('["x"]', "trigger 0 must be an object"),
        (json.dumps([{"fieldPath": WEB}]), "trigger 0: from is required"),
        (
            json.dumps([trig() | {"from": {"kind": "DockerImage", "name": "x:1"}}]),
            "from.kind must be ImageStreamTag, not 'DockerImage'",
        ),
        (json.dumps([trig("keycloak")]), "from.name must be STREAM:TAG, not 'keycloak'"),
        (json.dumps([trig("ns/keycloak:1")]), "from.name must be STREAM:TAG"),
        (json.dumps([trig(path="")]), "fieldPath is required"),
        (json.dumps([trig(paused="yes")]), "paused must be true or false"),
        (json.dumps([trig(), trig("other:1")]), "triggers 0 and 1 both set"),
    ],
)
def test_invalid_annotations_say_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(InvalidTrigger, match=message):
        triggers.parse_triggers(value)


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
        ("spec.containers[0].image", "not valid for a Deployment"),
        ("spec.template.spec.containers[0].env", "not valid for a Deployment"),
        ("spec.template.spec.containers[3].image", r"no containers\[3\] \(1 containers\)"),
        ('spec.template.spec.containers[?(@.name=="db")].image', "no containers named 'db' .web."),
        ("spec.template.spec.containers[name=web].image", "by index or"),
        ('spec.template.spec.initContainers[?(@.name=="web")].image', "no initContainers named"),
    ],
)
def test_bad_field_paths(path: str, message: str) -> None:
    with pytest.raises(InvalidTrigger, match=message):
        triggers.resolve_field(workload(), "Deployment", path)


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


def test_one_bad_trigger_does_not_stop_the_others() -> None:
    bad = trig("keycloak:20.0", 'spec.template.spec.containers[?(@.name=="gone")].image')
    good = trig("keycloak:20.0", "spec.template.spec.initContainers[0].image")
    obj = workload(annotation=[bad, good], init=[{"name": "init", "image": "i:1"}])
    result = triggers.plan(obj, "Deployment", lookup_for(image_stream({"20.0": B})))
    assert [op["path"] for op in result.patch] == ["/spec/template/spec/initContainers/0/image"]
    assert len(result.problems) == 1 and "trigger 0 (keycloak:20.0)" in result.problems[0]


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


def test_follows_stream() -> None:
    obj = workload(annotation=[trig(source={"namespace": "ops"})])
    assert triggers.follows_stream(obj, "ops", "keycloak")
    assert not triggers.follows_stream(obj, "demo", "keycloak")
    assert not triggers.follows_stream(workload(annotation="["), "demo", "keycloak")


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
