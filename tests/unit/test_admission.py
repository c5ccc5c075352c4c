"""Admission: every kind's image paths and every row of DESIGN.md's resolution rules."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest
from streamdata import (
    DIGEST_A,
    DIGEST_B,
    RESOURCES,
    decoded_patch,
    image_stream,
    index_of,
    pod_spec,
    review,
    workload,
)

from webhook.model.workloads import POD_SPEC_PATHS
from webhook.serving.admission import BadReview, Outcome, mutate
from webhook.serving.admission import review as admit

KEYCLOAK_20 = f"quay.io/keycloak/keycloak@{DIGEST_A}"
KEYCLOAK_19 = f"quay.io/keycloak/keycloak@{DIGEST_B}"
STREAMS = index_of(
    image_stream("keycloak", tags={"20.0": KEYCLOAK_20, "19.0": KEYCLOAK_19, "21.0": None}),
    image_stream("mysql", tags={"latest": f"docker.io/library/mysql@{DIGEST_B}"}),
    image_stream("private", local=False, tags={"1": f"quay.io/x/private@{DIGEST_A}"}),
    image_stream("elsewhere", namespace="other", tags={"1": f"quay.io/x/e@{DIGEST_A}"}),
)

POINTERS = {
    "Pod": "/spec/containers/0/image",
    "Deployment": "/spec/template/spec/containers/0/image",
    "ReplicaSet": "/spec/template/spec/containers/0/image",
    "StatefulSet": "/spec/template/spec/containers/0/image",
    "DaemonSet": "/spec/template/spec/containers/0/image",
    "Job": "/spec/template/spec/containers/0/image",
    "ReplicationController": "/spec/template/spec/containers/0/image",
    "CronJob": "/spec/jobTemplate/spec/template/spec/containers/0/image",
    "PodTemplate": "/template/spec/containers/0/image",
}


def resolve(kind: str, obj: dict, **kw) -> tuple[list[dict], list[str], dict]:
    answer = admit(review(kind, obj, **kw), STREAMS)
    return decoded_patch(answer), answer["response"].get("warnings", []), answer


@pytest.mark.parametrize("kind", sorted(POD_SPEC_PATHS))
def test_every_kind_resolves_at_its_pod_spec_path(kind: str) -> None:
    patch, warnings, _ = resolve(kind, workload(kind, pod_spec("keycloak:20.0")))
    assert patch == [{"op": "replace", "path": POINTERS[kind], "value": KEYCLOAK_20}]
    assert warnings == []


def test_all_container_lists_are_resolved() -> None:
    spec = pod_spec("nginx:1", "keycloak:19.0", init=("mysql",), ephemeral=("keycloak:20.0",))
    patch, _, _ = resolve("Pod", workload("Pod", spec))
    assert sorted((p["path"], p["value"]) for p in patch) == [
        ("/spec/containers/1/image", KEYCLOAK_19),
        ("/spec/ephemeralContainers/0/image", KEYCLOAK_20),
        ("/spec/initContainers/0/image", f"docker.io/library/mysql@{DIGEST_B}"),
    ]


def test_ephemeral_containers_subresource() -> None:
    old = workload("Pod", pod_spec("nginx:1"))
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "keycloak:20.0"}]
    patch, _, _ = resolve(
        "Pod", new, operation="UPDATE", old=old, sub_resource="ephemeralcontainers"
    )
    assert patch == [
        {"op": "replace", "path": "/spec/ephemeralContainers/0/image", "value": KEYCLOAK_20}
    ]


def test_tag_defaults_to_latest() -> None:
    patch, _, _ = resolve("Pod", workload("Pod", pod_spec("mysql")))
    assert patch[0]["value"] == f"docker.io/library/mysql@{DIGEST_B}"


def test_uid_is_echoed_and_response_is_v1() -> None:
    _, _, answer = resolve("Pod", workload("Pod", pod_spec("keycloak:20.0")), uid="abc-123")
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == "abc-123"
    assert answer["response"]["allowed"] is True
    assert answer["response"]["patchType"] == "JSONPatch"


@pytest.mark.parametrize(
    "image",
    [
        "nginx:1.25",  # no such stream
        "private:1",  # stream without lookupPolicy.local
        "elsewhere:1",  # stream in another namespace
        f"keycloak@{DIGEST_B}",  # digests are never rewritten
        f"keycloak:20.0@{DIGEST_B}",
        "quay.io/keycloak/keycloak:20.0",  # not a short name
        "library/keycloak:20.0",  # a path is not a short name either
        "Keycloak:20.0",  # malformed: left for the runtime to report
        "",
    ],
)
def test_images_left_alone(image: str) -> None:
    patch, warnings, answer = resolve("Pod", workload("Pod", pod_spec(image)))
    assert patch == []
    assert warnings == []
    assert "patchType" not in answer["response"]


def test_streams_resolve_only_in_their_own_namespace() -> None:
    patch, _, _ = resolve("Pod", workload("Pod", pod_spec("elsewhere:1")), namespace="other")
    assert patch[0]["value"] == f"quay.io/x/e@{DIGEST_A}"
    patch, _, _ = resolve("Pod", workload("Pod", pod_spec("keycloak:20.0")), namespace="other")
    assert patch == []


def test_unimported_tag_is_left_with_a_warning() -> None:
    patch, warnings, _ = resolve("Pod", workload("Pod", pod_spec("keycloak:21.0")))
    assert patch == []
    assert len(warnings) == 1
    assert "team/keycloak:21.0" in warnings[0]
    assert "no image yet" in warnings[0]


def test_unknown_tag_of_a_stream_is_left_with_a_warning() -> None:
    patch, warnings, _ = resolve("Pod", workload("Pod", pod_spec("keycloak:99")))
    assert patch == []
    assert "has no tag '99'" in warnings[0]


@pytest.mark.parametrize("on_template", [False, True])
def test_resolve_names_annotation_forces_any_tagged_reference(on_template: bool) -> None:
    annotations = {"alpha.image.policy.openshift.io/resolve-names": "*"}
    obj = workload("Deployment", pod_spec("private:1", "quay.io/elsewhere/keycloak:19.0"))
    if on_template:
        obj["spec"]["template"]["metadata"]["annotations"] = annotations
    else:
        obj["metadata"]["annotations"] = annotations
    patch, _, _ = resolve("Deployment", obj)
    assert [p["value"] for p in patch] == [f"quay.io/x/private@{DIGEST_A}", KEYCLOAK_19]


def test_resolve_names_annotation_still_never_rewrites_digests() -> None:
    obj = workload(
        "Pod",
        pod_spec(f"quay.io/x/keycloak@{DIGEST_B}"),
        annotations={"alpha.image.policy.openshift.io/resolve-names": "*"},
    )
    assert resolve("Pod", obj)[0] == []


def _local_stream() -> dict:
    return image_stream(
        "app",
        tags={"1": f"quay.io/x/app@{DIGEST_A}"},
        spec_tags=[
            {
                "name": "1",
                "from": {"kind": "DockerImage", "name": "quay.io/x/app:1"},
                "referencePolicy": {"type": "Local"},
            }
        ],
        repository="registry.local:5000/team/app",
    )


def test_local_reference_policy_uses_the_stream_repository() -> None:
    local = _local_stream()
    local["status"]["tags"][0]["conditions"] = [
        {
            "type": "Mirrored",
            "status": "True",
            "message": f"mirrored to registry.local:5000/team/app@{DIGEST_A}",
        }
    ]
    answer = admit(review("Pod", workload("Pod", pod_spec("app:1"))), index_of(local))
    assert decoded_patch(answer)[0]["value"] == f"registry.local:5000/team/app@{DIGEST_A}"
    assert "warnings" not in answer["response"]


def test_local_tag_not_yet_mirrored_resolves_to_the_source_with_a_warning() -> None:
    answer = admit(review("Pod", workload("Pod", pod_spec("app:1"))), index_of(_local_stream()))
    assert decoded_patch(answer)[0]["value"] == f"quay.io/x/app@{DIGEST_A}"
    [warning] = answer["response"]["warnings"]
    assert "team/app:1 has reference policy Local" in warning
    assert "not complete yet" in warning


@pytest.mark.parametrize(
    ("owner_api", "owner_kind", "skipped"),
    [
        ("apps/v1", "ReplicaSet", True),
        ("batch/v1", "Job", True),
        ("apps/v1", "StatefulSet", True),
        ("apps/v1", "DaemonSet", True),
        ("v1", "ReplicationController", True),
        ("keycloak.org/v1alpha1", "Keycloak", False),  # operator-owned: resolved
    ],
)
def test_controller_owned_pods_are_skipped_but_operator_owned_are_not(
    owner_api: str, owner_kind: str, skipped: bool
) -> None:
    owner = {
        "apiVersion": owner_api,
        "kind": owner_kind,
        "name": "owner",
        "uid": "1",
        "controller": True,
    }
    obj = workload("Pod", pod_spec("keycloak:20.0"), ownerReferences=[owner])
    patch, _, _ = resolve("Pod", obj)
    assert (patch == []) is skipped


def test_operator_owned_deployment_is_resolved() -> None:
    owner = {"apiVersion": "x.io/v1", "kind": "App", "name": "o", "uid": "1", "controller": True}
    obj = workload("Deployment", pod_spec("keycloak:20.0"), ownerReferences=[owner])
    assert resolve("Deployment", obj)[0] != []


def test_non_controller_owner_does_not_skip() -> None:
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "o", "uid": "1"}
    obj = workload("Pod", pod_spec("keycloak:20.0"), ownerReferences=[owner])
    assert resolve("Pod", obj)[0] != []


def test_update_considers_only_changed_images() -> None:
    old = workload("Deployment", pod_spec("keycloak:19.0", "mysql"))
    new = workload("Deployment", pod_spec("keycloak:19.0", "keycloak:20.0"))
    patch, _, _ = resolve("Deployment", new, operation="UPDATE", old=old)
    assert patch == [
        {"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": KEYCLOAK_20}
    ]


def test_update_with_new_container_resolves_it() -> None:
    old = workload("Deployment", pod_spec("nginx"))
    new = workload("Deployment", pod_spec("nginx", "keycloak:20.0"))
    patch, _, _ = resolve("Deployment", new, operation="UPDATE", old=old)
    assert [p["path"] for p in patch] == ["/spec/template/spec/containers/1/image"]


@pytest.mark.parametrize("kind", sorted(POD_SPEC_PATHS))
def test_reinvocation_is_idempotent(kind: str) -> None:
    obj = workload(kind, pod_spec("keycloak:20.0", "mysql", init=("keycloak:19.0",)))
    patch, _, _ = resolve(kind, obj)
    resolved = jsonpatch.apply_patch(obj, patch)
    again, warnings, answer = resolve(kind, resolved)
    assert again == []
    assert warnings == []
    assert "patch" not in answer["response"]


def test_reinvocation_with_forced_names_is_idempotent() -> None:
    obj = workload(
        "Pod",
        pod_spec("quay.io/x/mysql:latest"),
        annotations={"alpha.image.policy.openshift.io/resolve-names": "*"},
    )
    patch, _, _ = resolve("Pod", obj)
    assert patch
    assert resolve("Pod", jsonpatch.apply_patch(obj, patch))[0] == []


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_other_operations_are_allowed_unchanged(operation: str) -> None:
    patch, _, answer = resolve(
        "Pod", workload("Pod", pod_spec("keycloak:20.0")), operation=operation
    )
    assert patch == [] and answer["response"]["allowed"] is True


def test_other_kinds_are_allowed_unchanged() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}}
    patch, _, answer = resolve("ConfigMap", cm)
    assert patch == [] and answer["response"]["allowed"] is True


def test_other_subresources_are_allowed_unchanged() -> None:
    obj = workload("Pod", pod_spec("keycloak:20.0"))
    assert resolve("Pod", obj, operation="UPDATE", old=None, sub_resource="status")[0] == []


@pytest.mark.parametrize(
    "spec",
    [
        {"containers": "nope"},
        {"containers": [None, 3, {"name": "x"}, {"name": "y", "image": 5}]},
        {"containers": [{"image": "keycloak:20.0"}]},  # unnamed: still resolved
        None,
        [],
    ],
)
def test_odd_objects_never_crash(spec: object) -> None:
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}
    answer = admit(review("Pod", obj), STREAMS)
    assert answer["response"]["allowed"] is True


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "text",
        {},
        {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"x": 1}},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": ""}},
    ],
)
def test_bodies_that_are_not_reviews_are_rejected(body: object) -> None:
    with pytest.raises(BadReview):
        admit(body, STREAMS)


def test_every_kind_in_the_table_has_a_resource() -> None:
    assert set(POD_SPEC_PATHS) <= set(RESOURCES)


def test_image_streams_get_generation_stamps() -> None:
    old = image_stream("app", tags={"1": f"quay.io/x/app@{DIGEST_A}"})
    old["metadata"]["generation"] = 3
    old["spec"]["tags"][0]["generation"] = 3
    new = copy.deepcopy(old)
    new["spec"]["tags"][0]["from"]["name"] = "quay.io/x/app:2"
    body = review("ImageStream", new, operation="UPDATE", old=old)
    assert decoded_patch(admit(body, STREAMS)) == [
        {"op": "add", "path": "/spec/tags/0/generation", "value": 4}
    ]
    unchanged = review("ImageStream", old, operation="UPDATE", old=old)
    assert decoded_patch(admit(unchanged, STREAMS)) == []
    status = review("ImageStream", new, operation="UPDATE", old=old, sub_resource="status")
    assert decoded_patch(admit(status, STREAMS)) == []


# --- odd field types: answered, never a crash (issue 15) ------------------------------------


def _odd(change: Any, kind: str = "Deployment", **kw: Any) -> dict[str, Any]:
    if kind == "ImageStream":
        obj = image_stream("app", tags={"1": None})
    else:
        obj = workload(kind, pod_spec("keycloak:20.0"))
    body = review(kind, obj, **kw)
    change(body["request"])
    return body


@pytest.mark.parametrize(
    "body",
    [
        _odd(lambda r: r.update(namespace=["team"])),
        _odd(lambda r: r["kind"].update(group=["apps"])),
        _odd(lambda r: r["kind"].update(kind=["Deployment"])),
        _odd(lambda r: r["object"]["metadata"].update(namespace={"a": 1}), namespace=""),
        _odd(
            lambda r: r["object"]["metadata"].update(
                ownerReferences=[
                    {"apiVersion": "apps/v1", "kind": ["ReplicaSet"], "controller": True}
                ]
            )
        ),
        _odd(
            lambda r: r["object"]["metadata"].update(
                ownerReferences=[
                    {"apiVersion": ["apps/v1"], "kind": "ReplicaSet", "controller": True}
                ]
            )
        ),
        _odd(
            lambda r: r.update(oldObject={"spec": {"tags": 5}}), "ImageStream", operation="UPDATE"
        ),
        _odd(lambda r: r.update(oldObject={"spec": 5}), "ImageStream", operation="UPDATE"),
        _odd(lambda r: r.update(oldObject=[1]), operation="UPDATE"),
    ],
    ids=[
        "namespace-list",
        "group-list",
        "kind-list",
        "object-namespace-dict",
        "owner-kind-list",
        "owner-apiversion-list",
        "old-stream-tags-5",
        "old-stream-spec-5",
        "old-object-list",
    ],
)
def test_odd_field_types_are_answered(body: dict[str, Any]) -> None:
    answer = admit(body, STREAMS)
    assert answer["response"]["allowed"] is True


def test_an_owner_kind_that_is_not_a_string_is_no_builtin_owner() -> None:
    owner = {"apiVersion": "apps/v1", "kind": ["ReplicaSet"], "name": "o", "controller": True}
    obj = workload("Pod", pod_spec("keycloak:20.0"), ownerReferences=[owner])
    assert resolve("Pod", obj)[0] != []


def test_a_namespace_that_is_not_a_string_resolves_nothing() -> None:
    assert resolve("Pod", workload("Pod", pod_spec("keycloak:20.0")), namespace=["team"])[0] == []


def test_image_stream_update_with_odd_old_tags_still_stamps_the_new_ones() -> None:
    new = image_stream("app", tags={"1": f"quay.io/x/app@{DIGEST_A}"})
    old = copy.deepcopy(new)
    old["spec"]["tags"] = 5
    old["metadata"]["generation"] = 1
    patch = decoded_patch(admit(review("ImageStream", new, operation="UPDATE", old=old), STREAMS))
    # Stamped; with which generation is the stamping rule's business (test_streams.py).
    assert [(p["op"], p["path"]) for p in patch] == [("add", "/spec/tags/0/generation")]


# --- an index that has not loaded yet (issue 15) ---------------------------------------------


def test_an_unloaded_index_resolves_nothing_and_says_so() -> None:
    spec = pod_spec("keycloak:20.0", f"quay.io/x/y@{DIGEST_A}", init=("mysql",))
    request = review("Deployment", workload("Deployment", spec))["request"]
    outcome = mutate(request, STREAMS, loaded=False)
    assert outcome.patch == []
    assert outcome.warnings == [
        "image streams not loaded yet (the webhook is starting); left as is: "
        "i0=mysql, c0=keycloak:20.0"
    ]


def test_an_unloaded_index_says_nothing_when_no_image_would_be_looked_up() -> None:
    spec = pod_spec(f"quay.io/x/y@{DIGEST_A}", "quay.io/x/z:1")
    request = review("Deployment", workload("Deployment", spec))["request"]
    assert mutate(request, STREAMS, loaded=False) == Outcome()


def test_an_unloaded_index_still_stamps_image_stream_generations() -> None:
    stream = image_stream("app", tags={"1": None})
    request = review("ImageStream", stream)["request"]
    assert mutate(request, STREAMS, loaded=False).patch != []


# --- bounded answers (issue 15) --------------------------------------------------------------


def test_warnings_are_bounded_as_the_api_server_shows_them() -> None:
    spec = pod_spec(*[f"keycloak:21.0-{i}" for i in range(200)])
    spec["containers"] = [
        {"name": "n" * 5000 + str(i), "image": "keycloak:21.0"} for i in range(200)
    ]
    _, warnings, answer = resolve("Deployment", workload("Deployment", spec))
    assert len(warnings) == 16
    assert all(len(w) <= 256 for w in warnings)
    assert warnings[-1] == "185 more warning(s) not shown"
    assert len(json.dumps(answer)) < 5000
