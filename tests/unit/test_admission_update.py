"""Which images admission considers on UPDATE: OpenShift's rule (issue 14, point 1).

The rows come from OpenShift's apiserver-library-go `imagereferencemutators`
(`Test_podSpecV1Mutator_Mutate` in pods_test.go, rows 1-5) and from its code (`ResolveAllNames`,
`hasIdenticalPodSpecV1Image`; rows 6-14), as written up in the issue's research notes:

- on CREATE every container is considered;
- on UPDATE a container is skipped when the old pod spec has a container of the same name
  (looked up across init and regular containers) with the same image,
- unless the resolve-names annotation was turned on or off: `ResolveAllNames` (the annotation
  equal to "*" on the object or its pod template) differs between old and new. It compares
  the booleans, so moving the annotation between object and template is no change.

Rows 13 and 14 are our deliberate differences (DESIGN.md): a Pod owned by an operator is
resolved (OpenShift skips every controller-owned object), and ephemeral containers are
resolved (OpenShift never considers them).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from streamdata import DIGEST_A, decoded_patch, image_stream, index_of, review, workload

from webhook.model.workloads import RESOLVE_NAMES_ANNOTATION, images_to_resolve
from webhook.serving.admission import review as admit

PRIVATE = f"quay.io/x/private@{DIGEST_A}"
# `private` has no local lookup: only the resolve-names annotation makes it resolve.
STREAMS = index_of(image_stream("private", local=False, tags={"1": PRIVATE}))


def spec(containers: dict[str, str], init: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod spec from {name: image} (init containers first, as OpenShift lists them)."""
    built: dict[str, Any] = {"containers": [{"name": n, "image": i} for n, i in containers.items()]}
    if init:
        built["initContainers"] = [{"name": n, "image": i} for n, i in init.items()]
    return built


def deployment(
    containers: dict[str, str],
    init: dict[str, str] | None = None,
    *,
    own: str | None = None,
    template: str | None = None,
) -> dict[str, Any]:
    """A Deployment with the resolve-names annotation `own` on itself, `template` on its
    pod template (None: absent)."""
    obj = workload("Deployment", spec(containers, init), name="web")
    if own is not None:
        obj["metadata"]["annotations"] = {RESOLVE_NAMES_ANNOTATION: own}
    if template is not None:
        obj["spec"]["template"]["metadata"]["annotations"] = {RESOLVE_NAMES_ANNOTATION: template}
    return obj


def considered(new: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
    return [image.container for image in images_to_resolve(new, "Deployment", old)]


# (row, old, new, considered containers)
ROWS = [
    ("1 create, init container", None, deployment({}, {"1": "test"}), ["1"]),
    ("2 create, container", None, deployment({"1": "test"}), ["1"]),
    ("3 create, both lists", None, deployment({"2": "test-2"}, {"1": "test"}), ["1", "2"]),
    (
        "4 update, one image changed",
        deployment({"2": "test-2"}, {"1": "test-1"}),
        deployment({"2": "test-2"}, {"1": "test"}),
        ["1"],
    ),
    (
        "5 update, same images, annotation turned on",
        deployment({"2": "test-2"}, {"1": "test-1"}),
        deployment({"2": "test-2"}, {"1": "test-1"}, own="*"),
        ["1", "2"],
    ),
    (
        "6 template annotation added, images unchanged",
        deployment({"a": "x:1", "b": "y:1"}),
        deployment({"a": "x:1", "b": "y:1"}, template="*"),
        ["a", "b"],
    ),
    (
        "7 object annotation removed (true to false is a change too)",
        deployment({"a": "x:1", "b": "y:1"}, own="*"),
        deployment({"a": "x:1", "b": "y:1"}),
        ["a", "b"],
    ),
    (
        "8 annotation moved from object to template: no change",
        deployment({"a": "x:1", "b": "y:1"}, own="*"),
        deployment({"a": "x:1", "b": "y:2"}, template="*"),
        ["b"],
    ),
    (
        "9 template '*' to 'yes' ('yes' is not '*': turned off)",
        deployment({"a": "x:1"}, template="*"),
        deployment({"a": "x:1"}, template="yes"),
        ["a"],
    ),
    (
        "10 'a' to 'b': off both times, no change",
        deployment({"a": "x:1", "b": "y:1"}, own="a"),
        deployment({"a": "x:1", "b": "y:2"}, own="b"),
        ["b"],
    ),
    ("11 container renamed", deployment({"web": "x"}), deployment({"api": "x"}), ["api"]),
    (
        "12 moved from init to regular containers with its image",
        deployment({}, {"x": "img"}),
        deployment({"x": "img"}),
        [],
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_images_considered_on_update(
    old: dict[str, Any] | None, new: dict[str, Any], expected: list[str]
) -> None:
    assert considered(new, old) == expected


def test_row_3_rewrites_the_second_container() -> None:
    """pods_test.go: the resolver rewrites `test-2`; only that image is patched."""
    obj = deployment({"2": "private:1"}, {"1": "busybox"})
    obj["spec"]["template"]["metadata"]["annotations"] = {RESOLVE_NAMES_ANNOTATION: "*"}
    patch = decoded_patch(admit(review("Deployment", obj), STREAMS))
    assert patch == [
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": PRIVATE}
    ]


@pytest.mark.parametrize("on", ["object", "template"])
def test_set_image_lookup_on_an_existing_deployment_pins_its_images(on: str) -> None:
    """What `imagestreams set image-lookup deploy/web` (template) and `kubectl annotate
    deploy/web` (object) send: the images are unchanged, the annotation is new."""
    old = deployment({"web": "private:1"})
    new = copy.deepcopy(old)
    holder = new if on == "object" else new["spec"]["template"]
    holder["metadata"]["annotations"] = {RESOLVE_NAMES_ANNOTATION: "*"}
    patch = decoded_patch(admit(review("Deployment", new, operation="UPDATE", old=old), STREAMS))
    assert patch == [
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": PRIVATE}
    ]


def test_an_unrelated_update_of_an_annotated_deployment_leaves_its_images() -> None:
    """Annotation on before and after: only changed images, as before (and reinvocation of
    the webhook on its own patched object changes nothing)."""
    old = deployment({"web": "private:1"}, template="*")
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 3
    answer = admit(review("Deployment", new, operation="UPDATE", old=old), STREAMS)
    assert decoded_patch(answer) == []


def test_reinvocation_after_the_annotation_change_is_idempotent() -> None:
    old = deployment({"web": f"quay.io/x/private@{DIGEST_A}"})
    new = deployment({"web": f"quay.io/x/private@{DIGEST_A}"}, template="*")
    answer = admit(review("Deployment", new, operation="UPDATE", old=old), STREAMS)
    assert decoded_patch(answer) == []


def test_row_13_operator_owned_pod_is_resolved_on_purpose() -> None:
    """OpenShift skips any object with a controller owner; we skip only built-in owners."""
    owner = {"apiVersion": "x.io/v1", "kind": "MyOperator", "name": "o", "controller": True}
    obj = workload("Pod", spec({"web": "private:1"}), ownerReferences=[owner])
    obj["metadata"]["annotations"] = {RESOLVE_NAMES_ANNOTATION: "*"}
    assert decoded_patch(admit(review("Pod", obj), STREAMS)) != []


def test_row_14_ephemeral_containers_are_resolved_on_purpose() -> None:
    old = workload("Pod", spec({"web": "busybox"}))
    old["metadata"]["annotations"] = {RESOLVE_NAMES_ANNOTATION: "*"}
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "private:1"}]
    body = review("Pod", new, operation="UPDATE", old=old, sub_resource="ephemeralcontainers")
    assert decoded_patch(admit(body, STREAMS)) == [
        {"op": "replace", "path": "/spec/ephemeralContainers/0/image", "value": PRIVATE}
    ]


def test_a_job_keeps_its_images_when_the_annotation_is_turned_on() -> None:
    """A Job's pod template is immutable: a patch of its images would make the API server
    reject `kubectl annotate job/NAME resolve-names=*` (OpenShift rewrites no Job update)."""
    old = workload("Job", spec({"web": "private:1"}), name="once")
    new = copy.deepcopy(old)
    new["metadata"]["annotations"] = {RESOLVE_NAMES_ANNOTATION: "*"}
    assert [i.container for i in images_to_resolve(new, "Job", old)] == []
    answer = admit(review("Job", new, operation="UPDATE", old=old), STREAMS)
    assert decoded_patch(answer) == []
