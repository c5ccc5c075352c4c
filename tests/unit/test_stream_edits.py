"""The user verbs' object changes, on plain dicts: oc tag / create istag / set image-lookup
semantics, import requests, rollback."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from webhook.cli import edits as se
from webhook.cli.edits import EditError, Source, StreamTag, TagOptions
from webhook.model.workloads import WORKLOADS

A, B, C = ("sha256:" + ch * 64 for ch in "abc")
REG = "quay.io/keycloak/keycloak"


def stream(
    tags: list[dict[str, Any]] | None = None,
    status: list[dict[str, Any]] | None = None,
    generation: int = 3,
    name: str = "keycloak",
) -> dict[str, Any]:
    return {
        "apiVersion": "image.openshift.io/v1",
        "kind": "ImageStream",
        "metadata": {
            "name": name,
            "namespace": "demo",
            "generation": generation,
            "resourceVersion": "42",
        },
        "spec": {"tags": tags or []},
        "status": {"tags": status or []},
    }


def docker_tag(name: str, ref: str, generation: int | None = 1, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "from": {"kind": "DockerImage", "name": ref},
        "generation": generation,
        **extra,
    }


def event(image: str, generation: int = 1, ref: str | None = None) -> dict[str, Any]:
    return {
        "created": "2024-05-01T10:00:00Z",
        "dockerImageReference": ref or f"{REG}@{image}",
        "image": image,
        "generation": generation,
    }


# --- names and sources ---------------------------------------------------------------------


def test_stream_tag_parsing() -> None:
    assert se.parse_stream_tag("keycloak:20.0", "demo") == StreamTag("demo", "keycloak", "20.0")
    assert se.parse_stream_tag("other/keycloak:20.0", "demo") == StreamTag(
        "other", "keycloak", "20.0", True
    )
    assert se.parse_stream_tag("keycloak", "demo", default_tag="latest").tag == "latest"
    assert se.parse_stream_tag("ns/k:1", "demo").display("demo") == "ns/k:1"


@pytest.mark.parametrize("text", ["keycloak", "keycloak:", "a/b/c:1", "Keycloak:1", "k:-x"])
def test_stream_tag_errors(text: str) -> None:
    with pytest.raises(EditError):
        se.parse_stream_tag(text, "demo")


def test_missing_tag_error_is_ocs() -> None:
    with pytest.raises(EditError, match=r"'keycloak' must be of the form <stream_name>:<tag>"):
        se.parse_stream_tag("keycloak", "demo")


@pytest.mark.parametrize(
    ("text", "hint", "expected"),
    [
        (f"{REG}:20.0.2", None, Source("DockerImage", f"{REG}:20.0.2")),
        ("localhost:5000/k:1", None, Source("DockerImage", "localhost:5000/k:1")),
        ("mysql", None, Source("DockerImage", "mysql")),
        ("keycloak:20.0", None, Source("ImageStreamTag", "keycloak:20.0")),
        ("ops/keycloak:20.0", None, Source("ImageStreamTag", "keycloak:20.0", "ops")),
        (f"keycloak@{A}", None, Source("ImageStreamImage", f"keycloak@{A}")),
        (f"ops/keycloak@{A}", None, Source("ImageStreamImage", f"keycloak@{A}", "ops")),
        ("openshift/ruby:2.0", "docker", Source("DockerImage", "openshift/ruby:2.0")),
        ("keycloak:20.0", "istag", Source("ImageStreamTag", "keycloak:20.0")),
    ],
)
def test_source_kinds_follow_oc(text: str, hint: str | None, expected: Source) -> None:
    assert se.parse_source(text, hint) == expected


@pytest.mark.parametrize(
    ("text", "hint", "message"),
    [
        ("keycloak:1", "bogus", "invalid source 'bogus'"),
        (f"{REG}:1", "istag", "server in SOURCE is only allowed"),
        ("keycloak", "istag", "requires a valid <name>:<tag>"),
        ("keycloak:1", "isimage", "requires a valid <name>@<digest>"),
        ("UPPER:1", None, "invalid SOURCE"),
    ],
)
def test_source_errors(text: str, hint: str | None, message: str) -> None:
    with pytest.raises(EditError, match=message):
        se.parse_source(text, hint)


def test_copy_current_image_pins_the_source_tags_image() -> None:
    src = stream(
        [docker_tag("20.0", f"{REG}:20.0")], [{"tag": "20.0", "items": [event(B), event(A)]}]
    )
    copied = se.copy_current_image(Source("ImageStreamTag", "keycloak:20.0", "ops"), src)
    assert copied == Source("ImageStreamImage", f"keycloak@{B}", "ops")


def test_copy_follows_an_alias() -> None:
    src = stream(
        [
            docker_tag("20.0", f"{REG}:20.0"),
            {"name": "latest", "from": {"kind": "ImageStreamTag", "name": "20.0"}},
        ],
        [{"tag": "20.0", "items": [event(C)]}],
    )
    assert (
        se.copy_current_image(Source("ImageStreamTag", "keycloak:latest"), src).name
        == f"keycloak@{C}"
    )


def test_copy_of_a_tag_without_image_says_not_imported() -> None:
    src = stream([docker_tag("20.0", f"{REG}:20.0")])
    with pytest.raises(EditError, match=r"not currently pointing to an image \(not imported yet\)"):
        se.copy_current_image(Source("ImageStreamTag", "keycloak:20.0"), src)


def test_copy_without_digest_falls_back_to_the_reference() -> None:
    src = stream([], [{"tag": "t", "items": [event("", ref=f"{REG}:t")]}])
    assert se.copy_current_image(Source("ImageStreamTag", "keycloak:t"), src) == Source(
        "DockerImage", f"{REG}:t"
    )


# --- tag ------------------------------------------------------------------------------------


def test_tag_reference_shape() -> None:
    options = TagOptions(
        scheduled=True, insecure=True, reference_policy="local", import_mode="preserveoriginal"
    )
    entry = se.tag_reference("20.0", Source("DockerImage", f"{REG}:20.0.3"), options, 7)
    assert entry == {
        "name": "20.0",
        "from": {"kind": "DockerImage", "name": f"{REG}:20.0.3"},
        "generation": 7,
        "importPolicy": {"insecure": True, "scheduled": True, "importMode": "PreserveOriginal"},
        "referencePolicy": {"type": "Local"},
    }


def test_next_generation_is_above_everything_seen() -> None:
    assert se.next_generation(None) == 1
    obj = stream([docker_tag("a", "x:1", 9)], [{"tag": "b", "items": [event(A, 12)]}], generation=4)
    assert se.next_generation(obj) == 13


def test_retagging_keeps_annotations_and_replaces_the_rest() -> None:
    old = docker_tag(
        "20.0",
        f"{REG}:20.0.2",
        2,
        annotations={"description": "SSO"},
        importPolicy={"scheduled": True},
    )
    obj = stream([old, docker_tag("19.0", f"{REG}:19.0")])
    new = se.tag_reference("20.0", Source("DockerImage", f"{REG}:20.0.3"), TagOptions(), 5)
    tags = se.with_tag(obj, new)
    assert [t["name"] for t in tags] == ["20.0", "19.0"]
    assert tags[0]["annotations"] == {"description": "SSO"}
    assert tags[0]["from"]["name"] == f"{REG}:20.0.3"
    assert tags[0]["importPolicy"] == {}
    assert obj["spec"]["tags"][0] == old  # the input is not modified


def test_with_tag_appends_and_new_stream_carries_tags() -> None:
    entry = se.tag_reference("1", Source("DockerImage", "x:1"), TagOptions(), 1)
    assert se.with_tag(None, entry) == [entry]
    created = se.new_stream("demo", "x", [entry])
    assert created["metadata"] == {"name": "x", "namespace": "demo"}
    assert created["spec"] == {"lookupPolicy": {"local": False}, "tags": [entry]}


def test_spec_patch_is_guarded_by_resource_version() -> None:
    obj = stream()
    assert se.spec_patch(obj, []) == {"metadata": {"resourceVersion": "42"}, "spec": {"tags": []}}
    assert se.status_patch(obj, [])["status"] == {"tags": []}


@pytest.mark.parametrize(
    ("source", "alias", "delete", "options", "message"),
    [
        (None, True, True, TagOptions(), "--alias and --delete"),
        (None, False, True, TagOptions(scheduled=True), "cannot set flags for importing"),
        (
            Source("ImageStreamTag", "k:1"),
            False,
            False,
            TagOptions(scheduled=True),
            "only container images can have importing flags",
        ),
        (
            Source("DockerImage", "x:1"),
            True,
            False,
            TagOptions(insecure=True),
            "cannot set a container image tag as an alias",
        ),
        (
            Source("DockerImage", "x:1"),
            False,
            False,
            TagOptions(reference_policy="bogus"),
            "reference policy must be set to 'source' or 'local'",
        ),
    ],
)
def test_tag_flag_rules(
    source: Source | None, alias: bool, delete: bool, options: TagOptions, message: str
) -> None:
    with pytest.raises(EditError, match=message):
        se.validate_tag_flags(source, alias=alias, delete=delete, options=options)


def test_alias_must_stay_within_the_stream() -> None:
    source = Source("ImageStreamTag", "keycloak:20.0")
    se.check_alias(source, [StreamTag("demo", "keycloak", "latest")], "demo")
    with pytest.raises(EditError, match="cannot set alias across different Image Streams"):
        se.check_alias(source, [StreamTag("demo", "other", "latest")], "demo")
    with pytest.raises(EditError, match="across different"):
        se.check_alias(source, [StreamTag("ops", "keycloak", "latest")], "demo")


def test_dest_source_names_the_namespace_only_when_needed() -> None:
    local = Source("ImageStreamImage", f"keycloak@{A}")
    assert se.dest_source(local, StreamTag("demo", "k", "1"), "demo") == local
    assert se.dest_source(local, StreamTag("ops", "k", "1"), "demo").namespace == "demo"
    docker = Source("DockerImage", "x:1")
    assert se.dest_source(docker, StreamTag("ops", "k", "1"), "demo") == docker


@pytest.mark.parametrize(
    ("dest", "alias", "scheduled", "text"),
    [
        (
            StreamTag("demo", "keycloak", "20.0"),
            False,
            False,
            f"Tag keycloak:20.0 set to {REG}:20.0.3.",
        ),
        (
            StreamTag("ops", "keycloak", "20.0"),
            False,
            False,
            f"Tag ops/keycloak:20.0 set to {REG}:20.0.3.",
        ),
        (
            StreamTag("demo", "keycloak", "20.0"),
            False,
            True,
            f"Tag keycloak:20.0 set to import {REG}:20.0.3 periodically.",
        ),
        (
            StreamTag("ops", "keycloak", "20.0"),
            False,
            True,
            f"Tag ops/keycloak:20.0 set to {REG}:20.0.3 periodically.",
        ),
        (
            StreamTag("demo", "keycloak", "latest"),
            True,
            False,
            f"Tag keycloak:latest set up to track {REG}:20.0.3.",
        ),
    ],
)
def test_tag_messages_are_ocs(dest: StreamTag, alias: bool, scheduled: bool, text: str) -> None:
    source = Source("DockerImage", f"{REG}:20.0.3")
    assert se.tag_message(dest, source, "demo", alias=alias, scheduled=scheduled) == text


def test_delete_removes_spec_and_history() -> None:
    obj = stream(
        [docker_tag("20.0", "x:20"), docker_tag("19.0", "x:19")],
        [{"tag": "20.0", "items": [event(A)]}, {"tag": "19.0", "items": [event(B)]}],
    )
    spec, status = se.delete_tag(obj, "20.0")
    assert [t["name"] for t in spec] == ["19.0"]
    assert [t["tag"] for t in status] == ["19.0"]
    with pytest.raises(
        EditError, match=r'imagestreamtags\.image\.openshift\.io "keycloak:nope" not found'
    ):
        se.delete_tag(obj, "nope")


# --- create istag ---------------------------------------------------------------------------


def test_create_istag_adds_a_tag_or_refuses_an_existing_one() -> None:
    source = Source("DockerImage", f"{REG}:20.0.2")
    tags = se.create_istag(None, "20.0", source, TagOptions())
    assert tags[0]["from"] == {"kind": "DockerImage", "name": f"{REG}:20.0.2"}
    assert tags[0]["generation"] == 1
    obj = stream([docker_tag("20.0", "x:1")])
    with pytest.raises(EditError, match=r'"keycloak:20\.0" already exists'):
        se.create_istag(obj, "20.0", source, TagOptions())
    status_only = stream([], [{"tag": "20.0", "items": [event(A)]}])
    assert se.create_istag(status_only, "20.0", source, TagOptions())[0]["name"] == "20.0"


def test_create_istag_sources() -> None:
    assert se.create_from_source("quay.io/x:1", None) == Source("DockerImage", "quay.io/x:1")
    assert se.create_from_source(None, "ops/k:1") == Source("ImageStreamTag", "k:1", "ops")
    assert se.create_from_source(None, f"k@{A}") == Source("ImageStreamImage", f"k@{A}")
    assert se.create_from_source(None, ":20.0") == Source("ImageStreamTag", "20.0")
    with pytest.raises(EditError, match="may not be used together"):
        se.create_from_source("x:1", "k:1")
    with pytest.raises(EditError, match="registry may not be specified"):
        se.create_from_source(None, "quay.io/x:1")
    with pytest.raises(EditError, match="--from-image"):
        se.create_from_source(None, None)


def test_create_istag_refuses_import_flags_on_stream_sources() -> None:
    with pytest.raises(EditError, match="importing flags"):
        se.create_istag(None, "1", Source("ImageStreamTag", "k:1"), TagOptions(scheduled=True))


# --- import-image ---------------------------------------------------------------------------


def test_request_import_bumps_one_tag() -> None:
    obj = stream([docker_tag("20.0", "x:20", 2), docker_tag("19.0", "x:19", 3)], generation=3)
    tags, wanted = se.request_import(obj, "20.0")
    assert wanted == {"20.0": 4}
    assert [t["generation"] for t in tags] == [4, 3]


def test_request_import_of_a_stream_bumps_every_registry_tag() -> None:
    alias = {"name": "latest", "from": {"kind": "ImageStreamTag", "name": "20.0"}}
    ref = docker_tag("ref", "x:r", 1, reference=True)
    obj = stream([docker_tag("20.0", "x:20", 2), alias, ref, docker_tag("19.0", "x:19", 1)])
    tags, wanted = se.request_import(obj, None)
    assert wanted == {"20.0": 4, "19.0": 4}
    assert "generation" not in tags[1]


@pytest.mark.parametrize(
    ("tags", "tag", "message"),
    [
        ([], "20.0", '"keycloak:20.0" not found'),
        (
            [{"name": "latest", "from": {"kind": "ImageStreamTag", "name": "20.0"}}],
            "latest",
            "not imported from a registry",
        ),
        ([], None, "has no registry tags to import"),
    ],
)
def test_request_import_errors(tags: list[dict[str, Any]], tag: str | None, message: str) -> None:
    with pytest.raises(EditError, match=message):
        se.request_import(stream(tags), tag)


def test_import_outcome_pending_imported_failed() -> None:
    spec = [docker_tag("20.0", f"{REG}:20.0", 5)]
    pending = stream(spec, [{"tag": "20.0", "items": [event(A, 4)]}])
    assert not se.import_outcome(pending, "20.0", 5).done
    imported = stream(spec, [{"tag": "20.0", "items": [event(B, 5), event(A, 4)]}])
    assert se.import_outcome(imported, "20.0", 5) == se.ImportOutcome("20.0", True, f"{REG}@{B}")
    condition = {
        "type": "ImportSuccess",
        "status": "False",
        "reason": "NotFound",
        "message": "manifest unknown",
        "generation": 5,
    }
    failed = stream(spec, [{"tag": "20.0", "items": [event(A, 4)], "conditions": [condition]}])
    outcome = se.import_outcome(failed, "20.0", 5)
    assert outcome.failed and (outcome.reason, outcome.message) == ("NotFound", "manifest unknown")


# --- rollback -------------------------------------------------------------------------------


def history_stream() -> dict[str, Any]:
    spec = [
        docker_tag(
            "20.0",
            f"{REG}:20.0",
            6,
            importPolicy={"scheduled": True, "importMode": "Legacy"},
            referencePolicy={"type": "Local"},
        )
    ]
    items = [event(C, 6), event(B, 5), event(C, 4), event(A, 2)]
    return stream(spec, [{"tag": "20.0", "items": items}], generation=6)


def test_rollback_to_the_previous_distinct_image() -> None:
    result = se.rollback(history_stream(), "20.0")
    assert (result.old, result.new) == (f"{REG}@{C}", f"{REG}@{B}")
    assert result.was_tracking == f"{REG}:20.0"
    assert result.tags == [
        {
            "name": "20.0",
            "from": {"kind": "ImageStreamImage", "name": f"keycloak@{B}"},
            "generation": 7,
            "importPolicy": {"importMode": "Legacy"},
            "referencePolicy": {"type": "Local"},
        }
    ]


def test_rollback_to_revision_counts_distinct_images() -> None:
    assert se.rollback(history_stream(), "20.0", 3).new == f"{REG}@{A}"


@pytest.mark.parametrize(
    ("revision", "message"),
    [
        (4, "has 3 distinct image.s. in its history, so there is no revision 4"),
        (1, "already at revision 1"),
        (0, "must be 1"),
    ],
)
def test_rollback_revision_errors(revision: int, message: str) -> None:
    with pytest.raises(EditError, match=message):
        se.rollback(history_stream(), "20.0", revision)


def test_rollback_errors_name_the_tag() -> None:
    with pytest.raises(EditError, match="not found"):
        se.rollback(history_stream(), "nope")
    with pytest.raises(EditError, match="no image yet"):
        se.rollback(stream([docker_tag("1", "x:1")]), "1")
    alias = stream([{"name": "latest", "from": {"kind": "ImageStreamTag", "name": "20.0"}}])
    with pytest.raises(EditError, match=r"tracks keycloak:20\.0; roll back keycloak:20\.0"):
        se.rollback(alias, "latest")
    single = stream([docker_tag("1", "x:1")], [{"tag": "1", "items": [event(A), event(A)]}])
    with pytest.raises(EditError, match="1 distinct image"):
        se.rollback(single, "1")


# --- image lookup ---------------------------------------------------------------------------


def test_lookup_patch() -> None:
    obj = stream()
    assert se.lookup_patch(obj, True) == {"spec": {"lookupPolicy": {"local": True}}}
    assert se.lookup_patch(obj, False) is None
    obj["spec"]["lookupPolicy"] = {"local": True}
    assert se.lookup_patch(obj, True) is None


def deployment(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    template: dict[str, Any] = {"spec": {"containers": [{"name": "web", "image": "web:1"}]}}
    if annotations is not None:
        template["metadata"] = {"annotations": annotations}
    return {"metadata": {"name": "web"}, "spec": {"template": template}}


def test_resolve_names_on_the_pod_template() -> None:
    key = "alpha.image.policy.openshift.io/resolve-names"
    assert se.resolve_names_patch(deployment(), "Deployment", True) == {
        "spec": {"template": {"metadata": {"annotations": {key: "*"}}}}
    }
    on = deployment({key: "*"})
    assert se.resolve_names_enabled(on, "Deployment")
    assert se.resolve_names_patch(on, "Deployment", True) is None
    assert se.resolve_names_patch(on, "Deployment", False) == {
        "spec": {"template": {"metadata": {"annotations": {key: None}}}}
    }
    assert se.resolve_names_patch(deployment(), "Deployment", False) is None
    assert se.resolve_names_patch({"metadata": {}}, "Pod", True) == {
        "metadata": {"annotations": {key: "*"}}
    }
    cron = se.resolve_names_patch({}, "CronJob", True)
    assert cron == {
        "spec": {"jobTemplate": {"spec": {"template": {"metadata": {"annotations": {key: "*"}}}}}}
    }


@pytest.mark.parametrize(
    ("text", "kind", "name"),
    [
        ("deploy/web", "Deployment", "web"),
        ("deployment.apps/web", "Deployment", "web"),
        ("deployments/web", "Deployment", "web"),
        ("sts/db", "StatefulSet", "db"),
        ("ds/agent", "DaemonSet", "agent"),
        ("rs/x", "ReplicaSet", "x"),
        ("job/x", "Job", "x"),
        ("cj/x", "CronJob", "x"),
        ("cronjob.batch/x", "CronJob", "x"),
        ("rc/x", "ReplicationController", "x"),
        ("po/x", "Pod", "x"),
        ("pod/x", "Pod", "x"),
    ],
)
def test_workload_arguments(text: str, kind: str, name: str) -> None:
    parsed, parsed_name = se.parse_workload(text)
    assert (parsed.kind, parsed_name) == (kind, name)


def test_workload_type_names() -> None:
    assert WORKLOADS["Deployment"].type_name == "deployment.apps"
    assert WORKLOADS["Pod"].type_name == "pod"


@pytest.mark.parametrize("text", ["web", "svc/web", "deploy/", "deploy/a/b"])
def test_workload_argument_errors(text: str) -> None:
    with pytest.raises(EditError):
        se.parse_workload(text)


def test_inputs_are_never_modified() -> None:
    obj = history_stream()
    before = copy.deepcopy(obj)
    se.rollback(obj, "20.0")
    se.request_import(obj, "20.0")
    se.delete_tag(obj, "20.0")
    se.with_tag(obj, {"name": "20.0"})
    assert obj == before
