"""ImagePolicy: parsing, selectors, every rule and mode, denial messages, the import rule,
the caches that feed validation, the namespace labels, `/validate` and `policy check`."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from streamdata import DIGEST_A, DIGEST_B, DIGEST_C, image_stream, pod_spec, review, workload

from webhook.cli.policy_check import check, parse_manifests
from webhook.cli.policy_check import run as run_check
from webhook.controller.policy_labels import (
    ENFORCED_VALUE,
    PolicyLabeler,
    label_changes,
    label_patch,
)
from webhook.kube.policy_cache import (
    NamespaceLabels,
    PolicyIndex,
    PolicySet,
    StreamImages,
    load_policy_documents,
)
from webhook.kube.watch import Tee
from webhook.model import policy
from webhook.model.policy import InvalidPolicy, Policy, parse_policy, parse_registry_prefix
from webhook.model.workloads import POD_SPEC_PATHS
from webhook.serving.app import AppConfig, create_app
from webhook.serving.stream_index import StreamIndex
from webhook.serving.validation import answer, new_policy_metrics, respond

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = REPO_ROOT / "charts" / "imagestreams" / "files" / "crds" / "imagepolicies.yaml"
KEYCLOAK = f"quay.io/keycloak/keycloak@{DIGEST_A}"
TEAM = {"kubernetes.io/metadata.name": "team", "tier": "prod"}
PROD = {"tier": "prod"}


def policy_obj(
    name: str = "platform",
    mode: str = "Enforce",
    selector: dict[str, Any] | None = None,
    object_selector: dict[str, Any] | None = None,
    **rules: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "mode": mode,
        "namespaceSelector": {} if selector is None else selector,
        "rules": rules,
    }
    if object_selector is not None:
        spec["objectSelector"] = object_selector
    return {
        "apiVersion": "imagestreams.io/v1alpha1",
        "kind": "ImagePolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    """A selector with one match expression."""
    requirement: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        requirement["values"] = list(values)
    return {"matchExpressions": [requirement]}


def make(**kw: Any) -> Policy:
    return parse_policy(policy_obj(**kw))


class Streams:
    """The stream view validation reads, built from ImageStream objects."""

    def __init__(self, *streams: dict[str, Any]) -> None:
        self.index = StreamIndex()
        self.images = StreamImages()
        Tee(self.index, self.images).replace_all(streams)

    def get(self, namespace: str, name: str) -> Any:
        return self.index.get(namespace, name)

    def has_image(self, namespace: str, repository: str, digest: str) -> bool:
        return self.images.contains(namespace, repository, digest)


KEYCLOAK_STREAM = image_stream("keycloak", tags={"20.0": KEYCLOAK, "21.0": None})
STREAMS = Streams(KEYCLOAK_STREAM)


def judge(
    *images: str,
    policies: list[Policy],
    kind: str = "Deployment",
    labels: dict[str, str] | None = None,
    streams: Any = STREAMS,
    **kw: Any,
) -> policy.Verdict:
    obj = workload(kind, pod_spec(*images), name="web")
    request = review(kind, obj, **kw)["request"]
    return policy.validate(request, policies, TEAM if labels is None else labels, streams)


def rules_of(verdict: policy.Verdict) -> list[str]:
    return [v.rule for v in verdict.violations]


# --- parsing -----------------------------------------------------------------------------


def test_a_full_policy_parses() -> None:
    parsed = make(
        selector={
            "matchLabels": {"tier": "prod"},
            "matchExpressions": [{"key": "team", "operator": "Exists"}],
        },
        object_selector={"matchLabels": {"app": "web"}},
        requireDigest=True,
        requireImageStream=True,
        allowedRegistries=["quay.io/myorg/", "Registry.Example.com:5000"],
        blockedRegistries=["index.docker.io"],
        allowedRegistriesForImport=["quay.io"],
    )
    assert parsed.mode == "Enforce"
    assert parsed.rules.allowed_registries == ("quay.io/myorg", "registry.example.com:5000")
    assert parsed.rules.blocked_registries == ("docker.io",)
    assert parsed.object_selector is not None


@pytest.mark.parametrize(
    ("obj", "error"),
    [
        ([], "must be an object"),
        ({"spec": {}}, "metadata.name is required"),
        (policy_obj(mode="Deny", requireDigest=True), 'spec.mode must be one of .*"Deny"'),
        (
            {"metadata": {"name": "p"}, "spec": {"mode": "Warn", "rules": {"requireDigest": True}}},
            "namespaceSelector is required",
        ),
        (policy_obj(), "sets no rule"),
        (policy_obj(requireDigest="yes"), "requireDigest must be true or false"),
        (policy_obj(allowedRegistries="quay.io"), "allowedRegistries must be a list"),
        (policy_obj(allowedRegistries=["myorg"]), r"allowedRegistries\[0\].*registry host"),
        (policy_obj(blockedRegistries=["quay.io/x:1.0"]), "not a registry host or repository"),
        (policy_obj(blockedRegistries=[""]), "must be a registry host"),
        (
            policy_obj(
                selector={"matchExpressions": [{"key": "a", "operator": "In"}]}, requireDigest=True
            ),
            r"matchExpressions\[0\]\.values must not be empty",
        ),
        (
            policy_obj(
                selector={
                    "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
                },
                requireDigest=True,
            ),
            "values must be empty for operator Exists",
        ),
        (
            policy_obj(
                selector={"matchExpressions": [{"key": "a", "operator": "Is"}]}, requireDigest=True
            ),
            "operator must be one of",
        ),
        (policy_obj(selector={"matchLabels": {"a": 1}}, requireDigest=True), "matchLabels"),
        (policy_obj(selector={"labels": {}}, requireDigest=True), 'unknown field "labels"'),
        (
            policy_obj(
                selector={"matchLabels": {policy.ENFORCED_LABEL: "true"}}, requireDigest=True
            ),
            "must not use the label imagestreams.io/policy-enforced",
        ),
    ],
)
def test_invalid_policies_are_rejected_with_the_field(obj: Any, error: str) -> None:
    with pytest.raises(InvalidPolicy, match=error):
        parse_policy(obj)


def test_the_error_names_the_policy() -> None:
    with pytest.raises(InvalidPolicy, match=r'^ImagePolicy "strict": spec.rules'):
        parse_policy(policy_obj("strict"))


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        ("quay.io", "quay.io"),
        ("quay.io/", "quay.io"),
        ("quay.io/myorg/", "quay.io/myorg"),
        ("Quay.IO/myorg/team", "quay.io/myorg/team"),
        ("index.docker.io/library", "docker.io/library"),
        ("registry.example.com:5000", "registry.example.com:5000"),
        ("localhost", "localhost"),
        ("localhost:5000/x", "localhost:5000/x"),
        ("registry:5000", "registry:5000"),
        ("[::1]:5000", "[::1]:5000"),
    ],
)
def test_registry_prefixes_are_normalized(text: str, prefix: str) -> None:
    assert parse_registry_prefix(text) == prefix


@pytest.mark.parametrize(
    ("image", "prefix", "matches"),
    [
        ("nginx", "docker.io", True),
        ("nginx", "docker.io/library", True),
        ("nginx", "docker.io/library/nginx", True),
        ("nginx", "docker.io/library/ngin", False),
        ("bitnami/nginx", "docker.io/library", False),
        ("index.docker.io/bitnami/nginx", "docker.io/bitnami", True),
        ("quay.io/myorg/app", "quay.io/myorg", True),
        ("quay.io/myorganisation/app", "quay.io/myorg", False),
        ("quay.io/myorg", "quay.io/myorg", True),
        ("QUAY.io/myorg/app:1", "quay.io", True),
        ("registry.example.com:5000/a", "registry.example.com", False),
        ("registry.example.com/a", "registry.example.com:5000", False),
        ("registry.example.com:5000/a/b", "registry.example.com:5000/a", True),
        ("quay.io.evil.com/myorg/app", "quay.io", False),
    ],
)
def test_registry_matching_is_on_component_boundaries(
    image: str, prefix: str, matches: bool
) -> None:
    from webhook.model.reference import parse_normalized

    repository = parse_normalized(image).name
    assert policy.registry_matches(repository, parse_registry_prefix(prefix)) is matches


# --- selectors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {}, True),
        ({"matchLabels": {"tier": "prod"}}, {"tier": "prod", "x": "y"}, True),
        ({"matchLabels": {"tier": "prod"}}, {"tier": "dev"}, False),
        ({"matchLabels": {"tier": "prod"}}, {}, False),
        (expr("tier", "In", "a", "prod"), {"tier": "prod"}, True),
        (expr("tier", "In", "a"), {"tier": "prod"}, False),
        (expr("tier", "In", "a"), {}, False),
        (expr("tier", "NotIn", "dev"), {"tier": "prod"}, True),
        (expr("tier", "NotIn", "dev"), {"tier": "dev"}, False),
        (expr("tier", "NotIn", "dev"), {}, True),
        (expr("tier", "Exists"), {"tier": ""}, True),
        (expr("tier", "Exists"), {}, False),
        (expr("tier", "DoesNotExist"), {}, True),
        (expr("tier", "DoesNotExist"), {"tier": "x"}, False),
        (
            {
                "matchLabels": {"a": "1"},
                "matchExpressions": [{"key": "b", "operator": "Exists"}],
            },
            {"a": "1"},
            False,
        ),
    ],
)
def test_selectors(selector: dict[str, Any], labels: dict[str, str], matches: bool) -> None:
    assert policy.parse_selector(selector, "s").matches(labels) is matches


def test_a_policy_applies_by_namespace_and_object_labels() -> None:
    p = make(
        selector={"matchLabels": {"tier": "prod"}},
        object_selector={"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
        requireDigest=True,
    )
    assert p.applies_to({"tier": "prod"}, {"app": "web"})
    assert not p.applies_to({"tier": "prod"}, {"app": "db"})
    assert not p.applies_to({"tier": "dev"}, {"app": "web"})


def test_policies_of_other_namespaces_do_not_apply() -> None:
    p = make(selector={"matchLabels": {"tier": "dev"}}, requireDigest=True)
    assert judge("nginx", policies=[p]).violations == []
    by_name = make(
        selector={"matchLabels": {"kubernetes.io/metadata.name": "team"}}, requireDigest=True
    )
    assert rules_of(judge("nginx", policies=[by_name])) == ["requireDigest"]


def test_object_selector_uses_the_objects_own_labels() -> None:
    p = make(object_selector={"matchLabels": {"policy": "strict"}}, requireDigest=True)
    obj = workload("Deployment", pod_spec("nginx"), name="web")
    request = review("Deployment", obj)["request"]
    assert policy.validate(request, [p], TEAM, STREAMS).violations == []
    obj["metadata"]["labels"] = {"policy": "strict"}
    assert rules_of(policy.validate(request, [p], TEAM, STREAMS)) == ["requireDigest"]


# --- rules -------------------------------------------------------------------------------


DIGEST = make(requireDigest=True)
STREAM = make(requireImageStream=True)


@pytest.mark.parametrize(
    ("image", "violated"),
    [
        ("nginx", True),
        ("nginx:1.25", True),
        ("quay.io/x/app:1", True),
        (f"quay.io/x/app@{DIGEST_B}", False),
        (f"quay.io/x/app:1@{DIGEST_B}", False),
        (f"nginx@{DIGEST_B}", False),
    ],
)
def test_require_digest(image: str, violated: bool) -> None:
    assert rules_of(judge(image, policies=[DIGEST])) == (["requireDigest"] if violated else [])


def test_require_digest_checks_every_container_list() -> None:
    obj = workload("Pod", pod_spec(KEYCLOAK, init=("busybox",), ephemeral=("debug:1",)))
    verdict = policy.validate(review("Pod", obj)["request"], [DIGEST], TEAM, STREAMS)
    assert [v.subject for v in verdict.violations] == [
        'init container "i0"',
        'ephemeral container "e0"',
    ]


@pytest.mark.parametrize("kind", sorted(POD_SPEC_PATHS))
def test_every_pod_bearing_kind_is_checked(kind: str) -> None:
    verdict = judge("nginx", policies=[DIGEST], kind=kind)
    assert rules_of(verdict) == ["requireDigest"]
    assert verdict.violations[0].message.startswith(f'{kind} "web" container "c0"')


@pytest.mark.parametrize(
    ("image", "violated"),
    [
        ("keycloak:20.0", False),  # a short name the stream resolves
        (KEYCLOAK, False),  # the stream's pinned reference
        (f"quay.io/keycloak/keycloak:20.0@{DIGEST_A}", False),  # with a tag, same image
        (f"quay.io/keycloak/keycloak@{DIGEST_B}", True),  # another digest
        (f"quay.io/other/keycloak@{DIGEST_A}", True),  # same digest, other repository
        ("keycloak:21.0", True),  # tag with no image yet
        ("keycloak:22.0", True),  # no such tag
        ("nginx:1.25", True),  # no such stream
        ("quay.io/keycloak/keycloak:20.0", True),  # a tag is not a stream's image
    ],
)
def test_require_image_stream(image: str, violated: bool) -> None:
    assert rules_of(judge(image, policies=[STREAM])) == (["requireImageStream"] if violated else [])


def test_require_image_stream_accepts_history_and_local_copies() -> None:
    stream = image_stream(
        "app", tags={"1": f"quay.io/x/app@{DIGEST_A}"}, repository="registry.local:5000/team/app"
    )
    stream["spec"]["tags"][0]["referencePolicy"] = {"type": "Local"}
    stream["status"]["tags"][0]["items"].append(
        {
            "created": "2026-10-01T00:00:00Z",
            "dockerImageReference": f"quay.io/x/app@{DIGEST_B}",
            "image": DIGEST_B,
            "generation": 1,
        }
    )
    streams = Streams(stream)
    for image in (
        f"registry.local:5000/team/app@{DIGEST_A}",  # current, Local
        f"quay.io/x/app@{DIGEST_B}",  # history
        f"registry.local:5000/team/app@{DIGEST_B}",  # history, Local copy
        "app:1",  # short name resolves
    ):
        assert judge(image, policies=[STREAM], streams=streams).violations == [], image
    assert rules_of(judge(f"quay.io/x/app@{DIGEST_C}", policies=[STREAM], streams=streams))


def test_a_stream_of_another_namespace_does_not_count() -> None:
    other = Streams(image_stream("keycloak", namespace="other", tags={"20.0": KEYCLOAK}))
    assert rules_of(judge("keycloak:20.0", policies=[STREAM], streams=other))
    assert rules_of(judge(KEYCLOAK, policies=[STREAM], streams=other))


def test_a_stream_without_lookup_counts_by_pinned_reference_only() -> None:
    streams = Streams(image_stream("keycloak", local=False, tags={"20.0": KEYCLOAK}))
    assert judge(KEYCLOAK, policies=[STREAM], streams=streams).violations == []
    verdict = judge("keycloak:20.0", policies=[STREAM], streams=streams)
    assert "kubectl imagestream set image-lookup keycloak -n team" in verdict.violations[0].message


def test_resolve_names_annotation_makes_any_reference_a_candidate() -> None:
    streams = Streams(image_stream("keycloak", local=False, tags={"20.0": KEYCLOAK}))
    obj = workload("Deployment", pod_spec("quay.io/keycloak/keycloak:20.0"), name="web")
    obj["spec"]["template"]["metadata"]["annotations"] = {
        "alpha.image.policy.openshift.io/resolve-names": "*"
    }
    request = review("Deployment", obj)["request"]
    assert policy.validate(request, [STREAM], TEAM, streams).violations == []


def test_require_image_stream_implies_require_digest() -> None:
    both = make(requireDigest=True, requireImageStream=True)
    assert rules_of(judge("nginx:1.25", policies=[both])) == ["requireImageStream"]
    assert rules_of(judge(f"quay.io/x/app@{DIGEST_B}", policies=[both])) == ["requireImageStream"]
    # resolvable but not resolved (the mutating webhook did not run): digest still required
    verdict = judge("keycloak:20.0", policies=[both])
    assert rules_of(verdict) == ["requireDigest"]
    assert f"resolves it to {KEYCLOAK}" in verdict.violations[0].message


@pytest.mark.parametrize(
    ("image", "allowed", "blocked", "violations"),
    [
        ("nginx", ["docker.io/library"], [], []),
        ("nginx", ["quay.io"], [], ["allowedRegistries"]),
        ("bitnami/nginx", ["docker.io/library"], [], ["allowedRegistries"]),
        (f"quay.io/myorg/app@{DIGEST_A}", ["quay.io/myorg/"], [], []),
        ("quay.io/myorganisation/app", ["quay.io/myorg/"], [], ["allowedRegistries"]),
        ("nginx", [], ["docker.io"], ["blockedRegistries"]),
        (f"evil.example.com/x@{DIGEST_A}", [], ["evil.example.com"], ["blockedRegistries"]),
        ("quay.io/myorg/app", [], ["docker.io"], []),
        ("quay.io/myorg/bad/app", ["quay.io/myorg"], ["quay.io/myorg/bad"], ["blockedRegistries"]),
        (
            "docker.io/x/app",
            ["quay.io"],
            ["docker.io"],
            ["blockedRegistries", "allowedRegistries"],
        ),
    ],
)
def test_registries(
    image: str, allowed: list[str], blocked: list[str], violations: list[str]
) -> None:
    p = make(allowedRegistries=allowed, blockedRegistries=blocked)
    assert rules_of(judge(image, policies=[p])) == violations


def test_an_invalid_image_violates_any_workload_rule() -> None:
    p = make(blockedRegistries=["evil.example.com"])
    verdict = judge("Not An Image", policies=[p])
    assert rules_of(verdict) == ["validReference"]
    assert "is not a valid image reference" in verdict.violations[0].message


def test_a_policy_with_only_the_import_rule_ignores_workloads() -> None:
    p = make(allowedRegistriesForImport=["quay.io"])
    assert judge("nginx", policies=[p]).violations == []


def test_update_judges_only_changed_images() -> None:
    old = workload("Deployment", pod_spec("nginx:1.24", "redis"), name="web")
    new = workload("Deployment", pod_spec("nginx:1.25", "redis"), name="web")
    request = review("Deployment", new, operation="UPDATE", old=old)["request"]
    verdict = policy.validate(request, [DIGEST], TEAM, STREAMS)
    assert [v.image for v in verdict.violations] == ["nginx:1.25"]
    unchanged = review("Deployment", old, operation="UPDATE", old=old)["request"]
    assert policy.validate(unchanged, [DIGEST], TEAM, STREAMS).violations == []


def test_ephemeral_containers_subresource_is_checked() -> None:
    pod = workload("Pod", pod_spec(KEYCLOAK))
    debug = workload("Pod", pod_spec(KEYCLOAK, ephemeral=("busybox",)))
    request = review("Pod", debug, operation="UPDATE", old=pod, sub_resource="ephemeralcontainers")[
        "request"
    ]
    verdict = policy.validate(request, [DIGEST], TEAM, STREAMS)
    assert [v.subject for v in verdict.violations] == ['ephemeral container "e0"']


def test_what_is_not_ours_is_allowed() -> None:
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    assert policy.validate(
        review("ConfigMap", configmap)["request"], [DIGEST], TEAM, STREAMS
    ).allowed
    status = review("Pod", workload("Pod", pod_spec("nginx")), sub_resource="status")["request"]
    assert policy.validate(status, [DIGEST], TEAM, STREAMS).violations == []
    delete = review("Pod", workload("Pod", pod_spec("nginx")), operation="DELETE")["request"]
    assert policy.validate(delete, [DIGEST], TEAM, STREAMS).violations == []
    broken = review("Pod", workload("Pod", pod_spec("nginx")))["request"]
    broken["object"] = "nonsense"
    assert policy.validate(broken, [DIGEST], TEAM, STREAMS).violations == []


def test_pods_of_workloads_are_judged_too() -> None:
    # ownerReferences are written by whoever creates the Pod: they are no reason to trust it.
    pod = workload("Pod", pod_spec("nginx"))
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "controller": True}
    ]
    del pod["metadata"]["name"]
    pod["metadata"]["generateName"] = "web-1-"
    verdict = policy.validate(review("Pod", pod)["request"], [DIGEST], TEAM, STREAMS)
    assert verdict.violations[0].message.startswith('Pod "web-1-<generated>" container "c0"')


# --- messages ----------------------------------------------------------------------------


def test_denial_of_a_short_name_without_a_stream() -> None:
    verdict = judge("nginx:1.25", policies=[STREAM])
    assert verdict.violations[0].message == (
        'Deployment "web" container "c0": image "nginx:1.25" does not come from an image '
        'stream of namespace "team" (ImagePolicy "platform", rule requireImageStream); '
        "create the tag with: kubectl imagestream tag <registry>/nginx:1.25 nginx:1.25 -n team, "
        "enable lookup with: kubectl imagestream set image-lookup nginx -n team, "
        "and use the image nginx:1.25"
    )


def test_denial_of_a_full_reference_names_the_tag_to_create() -> None:
    verdict = judge("quay.io/keycloak/keycloak:20.0", policies=[STREAM], streams=Streams())
    assert (
        "create the tag with: kubectl imagestream tag quay.io/keycloak/keycloak:20.0 "
        "keycloak:20.0 -n team" in verdict.violations[0].message
    )
    assert verdict.violations[0].message.endswith("and use the image keycloak:20.0")


@pytest.mark.parametrize(
    ("image", "fix"),
    [
        (
            "keycloak:21.0",
            "has no image yet; import it with: "
            "kubectl imagestream import-image keycloak:21.0 -n team",
        ),
        (
            "keycloak:22.0",
            "create the tag with: kubectl imagestream tag <registry>/keycloak:22.0 keycloak:22.0 "
            "-n team and use the image keycloak:22.0",
        ),
        (
            "quay.io/x/app:1",
            "create the tag with: kubectl imagestream tag quay.io/x/app:1 app:1 -n team",
        ),
    ],
)
def test_fixes_name_the_command(image: str, fix: str) -> None:
    both = make(requireDigest=True, requireImageStream=True)
    digest_only = make(requireDigest=True)
    for p in (both, digest_only):
        messages = [v.message for v in judge(image, policies=[p]).violations]
        assert any(fix in m for m in messages), messages


def test_a_tag_without_a_stream_rule_may_also_be_pinned() -> None:
    (violation,) = judge("quay.io/x/app:1", policies=[make(requireDigest=True)]).violations
    assert "; pin it (quay.io/x/app@sha256:…), or create the tag with:" in violation.message


def test_registry_messages() -> None:
    p = make(allowedRegistries=["quay.io/myorg/"], blockedRegistries=["docker.io"])
    messages = [v.message for v in judge("nginx:1.25", policies=[p]).violations]
    assert messages == [
        'Deployment "web" container "c0": image "nginx:1.25" comes from docker.io/library/nginx, '
        'under the blocked registry prefix docker.io (ImagePolicy "platform", rule '
        "blockedRegistries); use an image from another registry",
        'Deployment "web" container "c0": image "nginx:1.25" comes from docker.io/library/nginx, '
        'which is not under an allowed registry (quay.io/myorg) (ImagePolicy "platform", rule '
        "allowedRegistries); use an image from an allowed registry, or tag one into an image "
        "stream: kubectl imagestream tag <registry>/nginx:1.25 nginx:1.25 -n team",
    ]


# --- modes and the response --------------------------------------------------------------


def test_enforce_denies_with_403_and_the_message() -> None:
    verdict = judge("nginx", policies=[DIGEST])
    response = respond("uid-1", verdict)["response"]
    assert response["uid"] == "uid-1"
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["message"] == verdict.violations[0].message
    assert "warnings" not in response and "auditAnnotations" not in response


def test_several_denials_are_listed() -> None:
    verdict = judge("nginx", "redis", policies=[DIGEST])
    message = respond("u", verdict)["response"]["status"]["message"]
    assert message.startswith("2 image policy violations:\n- ")
    assert '"c0"' in message and '"c1"' in message


def test_warn_allows_with_warnings() -> None:
    verdict = judge("nginx", policies=[make(mode="Warn", requireDigest=True)])
    response = respond("u", verdict)["response"]
    assert response["allowed"] is True and "status" not in response
    assert response["warnings"] == [verdict.violations[0].message]
    assert "\n" not in response["warnings"][0]


def test_audit_allows_with_an_audit_annotation() -> None:
    verdict = judge(
        "nginx", policies=[make(name="audit-digests", mode="Audit", requireDigest=True)]
    )
    response = respond("u", verdict)["response"]
    assert response["allowed"] is True and "warnings" not in response
    key = policy.AUDIT_ANNOTATION
    assert re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", key) and len(key) <= 63
    assert json.loads(response["auditAnnotations"][key]) == [
        {
            "policy": "audit-digests",
            "rule": "requireDigest",
            "subject": 'container "c0"',
            "image": "nginx",
        }
    ]


def test_modes_combine() -> None:
    policies = [
        make(name="a", mode="Audit", requireDigest=True),
        make(name="w", mode="Warn", blockedRegistries=["docker.io"]),
        make(name="e", mode="Enforce", allowedRegistries=["quay.io"]),
    ]
    response = respond("u", judge("nginx", policies=policies))["response"]
    assert response["allowed"] is False
    assert 'ImagePolicy "e"' in response["status"]["message"]
    assert len(response["warnings"]) == 1 and 'ImagePolicy "w"' in response["warnings"][0]
    assert json.loads(response["auditAnnotations"]["violations"])[0]["policy"] == "a"


def test_no_violation_is_a_plain_allow() -> None:
    response = respond("u", judge(KEYCLOAK, policies=[DIGEST, STREAM]))["response"]
    assert response == {"uid": "u", "allowed": True}


# --- import rule -------------------------------------------------------------------------

IMPORT = make(allowedRegistriesForImport=["quay.io/keycloak/", "registry.example.com:5000"])


def stream_review(obj: dict[str, Any], **kw: Any) -> dict[str, Any]:
    request = review("Pod", obj, **kw)["request"]
    request["kind"] = {"group": "image.openshift.io", "version": "v1", "kind": "ImageStream"}
    request["resource"] = {
        "group": "image.openshift.io",
        "version": "v1",
        "resource": "imagestreams",
    }
    return request  # type: ignore[no-any-return]


def stream_with(*sources: str, kind: str = "DockerImage") -> dict[str, Any]:
    spec_tags = [
        {"name": f"t{i}", "from": {"kind": kind, "name": source}}
        for i, source in enumerate(sources)
    ]
    return image_stream("s", spec_tags=spec_tags)


def test_imports_from_allowed_registries_pass() -> None:
    obj = stream_with("quay.io/keycloak/keycloak:20.0", "registry.example.com:5000/x:1")
    assert policy.validate(stream_review(obj), [IMPORT], TEAM, STREAMS).violations == []


def test_imports_from_elsewhere_are_denied() -> None:
    obj = stream_with("quay.io/keycloak/keycloak:20.0", "nginx:1.25", "quay.io/evil/x:1")
    verdict = policy.validate(stream_review(obj), [IMPORT], TEAM, STREAMS)
    assert [v.subject for v in verdict.violations] == ['tag "t1"', 'tag "t2"']
    assert verdict.violations[0].message == (
        'ImageStream "s" tag "t1": imports from "nginx:1.25" (docker.io/library/nginx), which is '
        'not under an allowed registry (ImagePolicy "platform", rule allowedRegistriesForImport); '
        "import from an allowed registry (quay.io/keycloak, registry.example.com:5000) instead "
        'in namespace "team"'
    )
    assert respond("u", verdict)["response"]["allowed"] is False


def test_import_rule_ignores_stream_tags_and_checks_the_deprecated_repository() -> None:
    obj = stream_with("other:1", kind="ImageStreamTag")
    assert policy.validate(stream_review(obj), [IMPORT], TEAM, STREAMS).violations == []
    obj["spec"]["dockerImageRepository"] = "docker.io/library/nginx"
    verdict = policy.validate(stream_review(obj), [IMPORT], TEAM, STREAMS)
    assert [v.subject for v in verdict.violations] == ["spec.dockerImageRepository"]


def test_import_rule_on_update_judges_changed_tags_only() -> None:
    old = stream_with("nginx:1.24")
    new = stream_with("nginx:1.24", "nginx:1.25")
    request = stream_review(new, operation="UPDATE", old=old)
    assert [v.subject for v in policy.validate(request, [IMPORT], TEAM, STREAMS).violations] == [
        'tag "t1"'
    ]


def test_import_rule_ignores_status_and_workload_rules_ignore_streams() -> None:
    obj = stream_with("nginx:1.25")
    status = stream_review(obj, sub_resource="status")
    assert policy.validate(status, [IMPORT], TEAM, STREAMS).violations == []
    assert policy.validate(stream_review(obj), [DIGEST], TEAM, STREAMS).violations == []


def test_an_invalid_import_source_is_denied() -> None:
    verdict = policy.validate(stream_review(stream_with("Not Valid")), [IMPORT], TEAM, STREAMS)
    assert "is not a valid image reference" in verdict.violations[0].message


# --- the caches --------------------------------------------------------------------------


def test_policy_set_drops_invalid_policies() -> None:
    changes: list[int] = []
    policies = PolicySet(lambda: changes.append(1))
    assert not policies.ready
    policies.replace_all([policy_obj("a", requireDigest=True), policy_obj("bad")])
    assert policies.ready and [p.name for p in policies.all()] == ["a"]
    policies.upsert(policy_obj("b", mode="Warn", requireDigest=True))
    policies.upsert(policy_obj("a"))  # an update that breaks it removes the old one
    assert [p.name for p in policies.all()] == ["b"]
    policies.delete({"metadata": {"name": "b"}})
    assert policies.all() == () and len(changes) == 4


def test_namespace_labels_wait_for_a_namespace_on_its_way() -> None:
    namespaces = NamespaceLabels(wait=5.0)
    namespaces.replace_all([{"metadata": {"name": "a", "labels": {"x": "1"}}}])
    assert namespaces.labels("a") == {"x": "1", "kubernetes.io/metadata.name": "a"}

    def arrive() -> None:
        time.sleep(0.2)
        namespaces.upsert({"metadata": {"name": "new", "labels": {"tier": "prod"}}})

    threading.Thread(target=arrive).start()
    started = time.monotonic()
    assert namespaces.labels("new")["tier"] == "prod"
    assert time.monotonic() - started < 4
    quick = NamespaceLabels(wait=0.05)
    quick.replace_all([])
    assert quick.labels("never") == {"kubernetes.io/metadata.name": "never"}
    namespaces.delete({"metadata": {"name": "a"}})
    assert not namespaces.known("a")


def test_stream_images_follow_updates() -> None:
    images = StreamImages()
    images.replace_all([image_stream("a", tags={"1": f"quay.io/x/a@{DIGEST_A}"})])
    assert images.contains("team", "quay.io/x/a", DIGEST_A)
    assert not images.contains("other", "quay.io/x/a", DIGEST_A)
    images.upsert(image_stream("a", tags={"1": f"quay.io/x/a@{DIGEST_B}"}))
    assert images.contains("team", "quay.io/x/a", DIGEST_B)
    assert not images.contains("team", "quay.io/x/a", DIGEST_A)
    images.delete({"metadata": {"name": "a", "namespace": "team"}})
    assert not images.contains("team", "quay.io/x/a", DIGEST_B)


def test_stream_images_shared_by_two_streams_stay_until_both_let_go() -> None:
    images = StreamImages()
    shared = {"1": f"quay.io/x/a@{DIGEST_A}"}
    images.replace_all([image_stream("a", tags=shared), image_stream("b", tags=shared)])
    images.upsert(image_stream("a", tags={"1": f"quay.io/x/a@{DIGEST_B}"}))
    assert images.contains("team", "quay.io/x/a", DIGEST_A)  # still held by b
    images.delete({"metadata": {"name": "b", "namespace": "team"}})
    assert not images.contains("team", "quay.io/x/a", DIGEST_A)
    assert images.contains("team", "quay.io/x/a", DIGEST_B) and len(images) == 1
    images.delete({"metadata": {"name": "never", "namespace": "elsewhere"}})


def ready_index(
    *policies: dict[str, Any], namespaces: list[dict[str, Any]] | None = None
) -> PolicyIndex:
    index = StreamIndex()
    images = StreamImages()
    Tee(index, images).replace_all([KEYCLOAK_STREAM])
    policy_index = PolicyIndex(index, images, namespace_wait=0)
    policy_index.policies.replace_all(policies)
    policy_index.namespaces.replace_all(
        namespaces if namespaces is not None else [{"metadata": {"name": "team", "labels": PROD}}]
    )
    return policy_index


def test_answer_counts_violations_but_not_dry_runs() -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    metrics = new_policy_metrics(registry)
    index = ready_index(policy_obj("audit", mode="Audit", requireDigest=True))
    body = review("Pod", workload("Pod", pod_spec("nginx")))
    assert answer(body["request"], index, metrics)["response"]["auditAnnotations"]
    body["request"]["dryRun"] = True
    answer(body["request"], index, metrics)
    labels = {"policy": "audit", "mode": "Audit", "rule": "requireDigest"}
    assert registry.get_sample_value("imagestreams_policy_violations_total", labels) == 1
    assert (
        registry.get_sample_value("imagestreams_policy_validations_total", {"result": "audited"})
        == 1
    )


def test_answer_reads_the_namespace_labels() -> None:
    index = ready_index(policy_obj(selector={"matchLabels": {"tier": "prod"}}, requireDigest=True))
    pod = workload("Pod", pod_spec("nginx"))
    assert answer(review("Pod", pod)["request"], index)["response"]["allowed"] is False
    assert answer(review("Pod", pod, namespace="dev")["request"], index)["response"]["allowed"]


def test_load_policy_documents(tmp_path: Path) -> None:
    file = tmp_path / "policies.yaml"
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    file.write_text(yaml.safe_dump_all([policy_obj(requireDigest=True), namespace]))
    policies, namespaces = load_policy_documents(file)
    assert len(policies) == 1 and namespaces == [namespace]
    file.write_text(yaml.safe_dump(policy_obj("broken")))
    with pytest.raises(InvalidPolicy, match='ImagePolicy "broken"'):
        load_policy_documents(file)


# --- the enforced-namespace label --------------------------------------------------------


def test_label_changes_follow_enforce_policies() -> None:
    policies = [
        make(name="e", selector={"matchLabels": {"tier": "prod"}}, requireDigest=True),
        make(name="w", mode="Warn", selector={}, requireDigest=True),
    ]
    namespaces = {
        "prod": {"tier": "prod"},
        "prod-labelled": {"tier": "prod", policy.ENFORCED_LABEL: "true"},
        "dev": {"tier": "dev"},
        "dev-stale": {"tier": "dev", policy.ENFORCED_LABEL: "true"},
        "dev-odd": {policy.ENFORCED_LABEL: "yes"},
    }
    assert label_changes(policies, namespaces) == {
        "prod": ENFORCED_VALUE,
        "dev-stale": None,
        "dev-odd": None,
    }
    assert label_patch(None) == {"metadata": {"labels": {policy.ENFORCED_LABEL: None}}}


def test_label_changes_select_by_name_and_ignore_the_label_itself() -> None:
    by_name = make(
        selector=expr("kubernetes.io/metadata.name", "In", "a"),
        requireDigest=True,
    )
    assert label_changes([by_name], {"a": {}, "b": {}}) == {"a": "true"}
    # a selector that would only match because of the label itself does not keep it
    not_in = make(
        selector={"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]},
        requireDigest=True,
    )
    assert label_changes([not_in], {"a": {"x": "1", policy.ENFORCED_LABEL: "true"}}) == {"a": None}


def test_the_controller_import_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from webhook.controller import policy_labels

    labeler = PolicyLabeler(api_client=None)
    labeler.index.policies.replace_all(
        [
            policy_obj(
                "strict", selector={"matchLabels": PROD}, allowedRegistriesForImport=["quay.io"]
            ),
            policy_obj("lenient", mode="Warn", allowedRegistriesForImport=["ghcr.io"]),
        ]
    )
    labeler.index.namespaces.replace_all(
        [{"metadata": {"name": "team", "labels": PROD}}, {"metadata": {"name": "dev"}}]
    )
    denial = labeler.import_denial("team", {}, "docker.io/library/nginx:1.25")
    assert denial == (
        'imports from "docker.io/library/nginx:1.25" (docker.io/library/nginx), which is not '
        'under an allowed registry (ImagePolicy "strict", rule allowedRegistriesForImport)'
    )
    assert labeler.import_denial("team", {}, "quay.io/x/nginx:1.25") is None
    assert labeler.import_denial("dev", {}, "docker.io/library/nginx:1.25") is None  # Warn only
    monkeypatch.setattr(policy_labels, "CACHE_WAIT", 0.01)
    assert PolicyLabeler(api_client=None).import_denial("team", {}, "docker.io/x:1") is None


# --- /validate ---------------------------------------------------------------------------


def test_validate_endpoint() -> None:
    index = ready_index(policy_obj(requireImageStream=True))
    streams = StreamIndex()
    streams.replace_all([KEYCLOAK_STREAM])
    client = create_app(AppConfig(index=streams, policy=index)).test_client()
    body = review("Deployment", workload("Deployment", pod_spec("nginx:1.25")))
    answer_ = client.post("/validate", json=body).get_json()
    assert answer_["response"]["allowed"] is False
    assert answer_["response"]["status"]["code"] == 403
    body = review("Deployment", workload("Deployment", pod_spec(KEYCLOAK)))
    assert client.post("/validate", json=body).get_json()["response"]["allowed"] is True
    bad = client.post("/validate", data=b"{", content_type="application/json")
    assert bad.status_code == 400 and "not valid JSON" in bad.get_json()["error"]
    wrong = client.post("/validate", json={"apiVersion": "v1"})
    assert wrong.status_code == 400 and "AdmissionReview" in wrong.get_json()["error"]


def test_validate_is_an_error_until_the_policies_are_loaded() -> None:
    index = StreamIndex()
    index.replace_all([])
    policy_index = PolicyIndex(index, StreamImages())
    client = create_app(AppConfig(index=index, policy=policy_index)).test_client()
    body = review("Pod", workload("Pod", pod_spec("nginx")))
    assert client.post("/validate", json=body).status_code == 503
    assert client.get("/readyz").status_code == 503
    no_policy = create_app(AppConfig(index=index)).test_client()
    assert no_policy.post("/validate", json=body).get_json()["response"]["allowed"] is True


# --- policy check ------------------------------------------------------------------------

MANIFESTS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
        - {name: web, image: "keycloak:20.0"}
        - {name: sidecar, image: "nginx:1.25"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
---
apiVersion: image.openshift.io/v1
kind: ImageStream
metadata: {name: nginx}
spec:
  tags:
    - {name: "1.25", from: {kind: DockerImage, name: "docker.io/library/nginx:1.25"}}
"""


def test_check_resolves_then_judges() -> None:
    policies = [
        make(name="e", requireImageStream=True, allowedRegistriesForImport=["quay.io"]),
        make(name="w", mode="Warn", requireDigest=True),
    ]
    result = check(parse_manifests(MANIFESTS), "team", policies, lambda n: TEAM, [KEYCLOAK_STREAM])
    assert result.objects == 2 and result.denied
    assert [(v.policy, v.subject) for v in result.violations] == [
        ("e", 'container "sidecar"'),  # keycloak:20.0 resolved, so it passes
        ("w", 'container "sidecar"'),
        ("e", 'tag "1.25"'),
    ]
    report = result.report()
    assert report.splitlines()[0].startswith('DENY  Deployment "web" container "sidecar"')
    assert report.splitlines()[1].startswith("WARN  ")
    assert report.endswith("2 object(s) checked; violations: 2 deny, 1 warn, 0 audit\n")


def test_check_run_from_files_without_a_cluster(tmp_path: Path) -> None:
    policies = tmp_path / "policies.yaml"
    namespace = {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": "team", "labels": {"tier": "prod"}},
    }
    strict = policy_obj(selector={"matchLabels": PROD}, requireDigest=True)
    policies.write_text(yaml.safe_dump_all([strict, namespace]))
    streams = tmp_path / "streams.yaml"
    streams.write_text(yaml.safe_dump(KEYCLOAK_STREAM))

    def no_cluster() -> Any:
        raise AssertionError("offline check must not connect")

    result = run_check(MANIFESTS, "team", str(policies), str(streams), no_cluster)
    assert [v.image for v in result.violations] == ["nginx:1.25"]
    elsewhere = run_check(MANIFESTS, "dev", str(policies), str(streams), no_cluster)
    assert elsewhere.violations == [] and not elsewhere.denied


def test_check_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from webhook.cli.main import main

    policies = tmp_path / "policies.yaml"
    policies.write_text(yaml.safe_dump(policy_obj(requireImageStream=True)))
    streams = tmp_path / "streams.yaml"
    streams.write_text(yaml.safe_dump(KEYCLOAK_STREAM))
    manifests = tmp_path / "app.yaml"
    manifests.write_text(MANIFESTS)
    args = ["policy", "check", "-f", str(manifests), "-n", "team"]
    args += ["--policies-file", str(policies), "--streams-file", str(streams)]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert (
        "DENY" in out and "kubectl imagestream tag <registry>/nginx:1.25 nginx:1.25 -n team" in out
    )
    manifests.write_text(MANIFESTS.replace("nginx:1.25", "keycloak:20.0"))
    assert main(args) == 0
    assert "violations: 0 deny" in capsys.readouterr().out
    policies.write_text(yaml.safe_dump(policy_obj("broken")))
    assert main(args) == 1
    assert 'error: ImagePolicy "broken"' in capsys.readouterr().err


# --- the CRD -----------------------------------------------------------------------------


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    assert crd["spec"]["group"] == policy.GROUP and crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["plural"] == policy.PLURAL
    (version,) = crd["spec"]["versions"]
    assert version["name"] == policy.VERSION and version["served"] and version["storage"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_crd_schema_matches_the_validator() -> None:
    schema = crd_schema()
    spec = schema["properties"]["spec"]
    assert tuple(spec["properties"]["mode"]["enum"]) == policy.MODES
    operators = spec["properties"]["namespaceSelector"]["properties"]["matchExpressions"]
    assert operators["items"]["properties"]["operator"]["enum"] == [
        "In",
        "NotIn",
        "Exists",
        "DoesNotExist",
    ]
    for valid in (
        policy_obj(requireDigest=True),
        policy_obj(mode="Audit", allowedRegistriesForImport=["quay.io"]),
    ):
        jsonschema.validate(valid, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(policy_obj(mode="Deny", requireDigest=True), schema)


def registry_rule() -> re.Pattern[str]:
    rules = crd_schema()["properties"]["spec"]["properties"]["rules"]["properties"]
    (validation,) = rules["allowedRegistries"]["items"]["x-kubernetes-validations"]
    match = re.fullmatch(r"self\.matches\(r'(.*)'\)", validation["rule"])
    assert match
    return re.compile(match.group(1))


@pytest.mark.parametrize(
    "prefix",
    [
        "quay.io",
        "quay.io/",
        "quay.io/myorg/",
        "registry.example.com:5000",
        "localhost",
        "localhost:5000/team",
        "registry:5000",
        "[::1]:5000",
        "docker.io/library",
        "a.b/c-d/e_f/",
    ],
)
def test_crd_accepts_what_the_validator_accepts(prefix: str) -> None:
    parse_registry_prefix(prefix)
    assert registry_rule().search(prefix)


@pytest.mark.parametrize(
    "prefix", ["myorg", "quay.io/x:1.0", f"quay.io/x@{DIGEST_A}", "quay.io/MyOrg", "", "/quay.io"]
)
def test_crd_rejects_what_the_validator_rejects(prefix: str) -> None:
    with pytest.raises(InvalidPolicy):
        parse_registry_prefix(prefix)
    assert not registry_rule().search(prefix)


def test_build_app_in_file_mode(tmp_path: Path) -> None:
    from webhook.serving.server import ServeOptions, build_app

    streams = tmp_path / "streams.yaml"
    streams.write_text(yaml.safe_dump(KEYCLOAK_STREAM))
    policies = tmp_path / "policies.yaml"
    policies.write_text(yaml.safe_dump(policy_obj(requireImageStream=True)))
    body = review("Deployment", workload("Deployment", pod_spec("nginx:1.25")))

    def allowed(**options: Any) -> bool:
        app = build_app(ServeOptions("127.0.0.1:0", "c", "k", str(streams), **options))
        client = app.test_client()
        assert client.get("/readyz").status_code == 200
        return bool(client.post("/validate", json=body).get_json()["response"]["allowed"])

    assert not allowed(policies_file=str(policies))
    assert allowed(policies_file=str(policies), policies=False)
    assert allowed()  # streams from a file and no policies file: no policies


# --- hostile reviews (issue 15) ----------------------------------------------------------


@pytest.mark.parametrize("operator", ["In", "NotIn", "Exists"])
def test_a_label_value_that_is_a_list_is_no_label(operator: str) -> None:
    values = ("web",) if operator != "Exists" else ()
    p = make(object_selector=expr("app", operator, *values), requireDigest=True)
    obj = workload("Deployment", pod_spec("nginx"), name="web")
    obj["metadata"]["labels"] = {"app": ["web"], "tier": {"x": 1}}
    request = review("Deployment", obj)["request"]
    applies = operator == "NotIn"  # the odd value counts as absent
    assert bool(policy.validate(request, [p], TEAM, STREAMS).violations) is applies


def test_a_namespace_that_is_not_a_string_is_none() -> None:
    request = review("Deployment", workload("Deployment", pod_spec("keycloak:20.0")))["request"]
    request["namespace"] = ["team"]
    verdict = policy.validate(request, [STREAM], TEAM, STREAMS)
    assert 'namespace ""' in verdict.violations[0].message


def test_messages_quote_a_huge_value_shortened() -> None:
    spec = {"containers": [{"name": f"c{i}", "image": f"nginx:{i}"} for i in range(120)]}
    obj = workload("Deployment", spec, name="x" * 100_000)
    request = review("Deployment", obj, namespace="n" * 1_000_000)["request"]
    policies = [
        make(name="w", mode="Warn", requireImageStream=True, allowedRegistries=["quay.io"]),
        make(name="a", mode="Audit", requireDigest=True),
    ]
    verdict = policy.validate(request, policies, {}, STREAMS)
    assert len(verdict.violations) == 360
    assert max(len(v.message) for v in verdict.violations) < 2000
    assert 'Deployment "' + "x" * (policy.QUOTED_CHARS - 1) + '…"' in verdict.violations[0].message


def test_a_denial_lists_the_first_violations_and_counts_the_rest() -> None:
    verdict = judge(*[f"nginx:{i}" for i in range(30)], policies=[DIGEST])
    message = respond("u", verdict)["response"]["status"]["message"]
    assert message.startswith("30 image policy violations:\n")
    assert message.count("\n- ") == 11 and message.endswith("\n- and 20 more")


def test_warnings_and_audit_records_are_bounded() -> None:
    policies = [make(mode="Warn", requireDigest=True), make(mode="Audit", requireDigest=True)]
    verdict = judge(*[f"nginx:{i}" for i in range(100)], policies=policies)
    response = respond("u", verdict)["response"]
    assert len(response["warnings"]) == 16
    assert response["warnings"][-1] == "85 more warning(s) not shown"
    records = json.loads(response["auditAnnotations"][policy.AUDIT_ANNOTATION])
    assert len(records) == 21 and records[-1] == {"omitted": 80}
    assert len(json.dumps(response)) < 8000
