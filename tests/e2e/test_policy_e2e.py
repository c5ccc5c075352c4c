"""Image policies against a real kube-apiserver: the ImagePolicy CRD, the validating webhook
registered twice (fail-closed where a namespace carries the enforced label, fail-open
elsewhere), the label kept by `PolicyLabeler`, and kubectl as users drive it.

Each test selects its own namespace with its own policy (policies are cluster-scoped, the
cluster is shared by the session), and waits until the webhook's caches show the policy
before it asserts anything.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from localcluster import (
    EXCLUDED_NAMESPACES,
    REPO_ROOT,
    WEBHOOK_RESOURCES,
    Cluster,
    webhook_rules,
)

from webhook.controller.policy_labels import PolicyLabeler
from webhook.kube.connect import connect
from webhook.model.policy import ENFORCED_LABEL

if TYPE_CHECKING:
    from clusterkit import Image, Namespace

pytestmark = pytest.mark.e2e

CRD = REPO_ROOT / "charts" / "imagestreams" / "files" / "crds" / "imagepolicies.yaml"
CRD_NAME = "imagepolicies.imagestreams.io"
CONFIGURATION = "imagestreams-policy"
ENFORCE_WEBHOOK = "enforce.policy.imagestreams.io"
SELECT_LABEL = "e2e.imagestreams.io/policy"
POD_SPEC = "{.spec.template.spec.containers[0].image}"
BLOCKED = "evil.example.com/x@sha256:" + "e" * 64
_probes = itertools.count(1)


def validating_configuration(cluster: Cluster) -> dict[str, Any]:
    """The policy webhook, registered as the chart registers it: one fail-closed entry for
    namespaces labelled enforced, one fail-open entry for every other namespace."""
    resources = [*WEBHOOK_RESOURCES, ("image.openshift.io", ["imagestreams"])]

    def webhook(name: str, failure: str, operator: str) -> dict[str, Any]:
        return {
            "name": name,
            "clientConfig": cluster.webhook_client_config("/validate"),
            "rules": webhook_rules(resources),
            "failurePolicy": failure,
            "matchPolicy": "Equivalent",
            "timeoutSeconds": 5,
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": ENFORCED_LABEL, "operator": operator, "values": ["true"]},
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "NotIn",
                        "values": EXCLUDED_NAMESPACES,
                    },
                ]
            },
        }

    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION},
        "webhooks": [
            webhook(ENFORCE_WEBHOOK, "Fail", "In"),
            webhook("policy.imagestreams.io", "Ignore", "NotIn"),
        ],
    }


@pytest.fixture(scope="module")
def policies(cluster: Cluster) -> Iterator[Cluster]:
    """The CRD, the registration and the label reconciler, for this module's tests."""
    cluster.kubectl("apply", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=established", "--timeout=60s", f"crd/{CRD_NAME}")
    # The webhook's policy watch found no CRD at start and retries with backoff: a restart
    # lists policies at once.
    cluster.stop_webhook()
    cluster.start_webhook()
    cluster.apply(validating_configuration(cluster))
    labeler = PolicyLabeler(connect(str(cluster.kubeconfig)).api_client, resync=10).start()
    yield cluster
    labeler.stop()
    cluster.kubectl("delete", "validatingwebhookconfiguration", CONFIGURATION, check=False)
    cluster.kubectl("delete", "imagepolicies", "-l", SELECT_LABEL, check=False)
    # What the controller would do once the policies are gone: no namespace stays enforced.
    cluster.kubectl("label", "namespaces", "-l", SELECT_LABEL, f"{ENFORCED_LABEL}-", check=False)


def apply_policy(namespace: Namespace, mode: str, **rules: Any) -> None:
    """A policy selecting only `namespace` (through a label of its own)."""
    namespace.kubectl(
        "label", "--overwrite", "namespace", namespace.name, f"{SELECT_LABEL}={namespace.name}"
    )
    namespace.cluster.apply(
        {
            "apiVersion": "imagestreams.io/v1alpha1",
            "kind": "ImagePolicy",
            "metadata": {"name": namespace.name, "labels": {SELECT_LABEL: namespace.name}},
            "spec": {
                "mode": mode,
                "namespaceSelector": {"matchLabels": {SELECT_LABEL: namespace.name}},
                "rules": rules,
            },
        }
    )


def dry_run(namespace: Namespace, image: str) -> subprocess.CompletedProcess[str]:
    name = f"probe-{next(_probes)}"
    return namespace.kubectl(
        "run", name, f"--image={image}", "--restart=Never", "--dry-run=server", check=False
    )


def wait_for_policy(namespace: Namespace, violating: str, mode: str = "Enforce") -> None:
    """Until the webhook applies the namespace's policy to `violating`."""

    def effective() -> bool:
        result = dry_run(namespace, violating)
        if mode == "Enforce":
            return result.returncode != 0 and "ImagePolicy" in result.stderr
        return "ImagePolicy" in result.stderr

    namespace.cluster.wait(f"the webhook to apply the policy of {namespace.name}", effective)


def wait_for_label(namespace: Namespace, value: str | None) -> None:
    def labelled() -> bool:
        out = namespace.cluster.kubectl("get", "namespace", namespace.name, "-o", "json").stdout
        return json.loads(out)["metadata"].get("labels", {}).get(ENFORCED_LABEL) == value

    namespace.cluster.wait(f"{ENFORCED_LABEL}={value} on {namespace.name}", labelled)


@pytest.fixture
def enforced(policies: Cluster, namespace: Namespace) -> Namespace:
    """A namespace under an Enforce policy: images from its streams, from our registry."""
    apply_policy(
        namespace,
        "Enforce",
        requireImageStream=True,
        requireDigest=True,
        allowedRegistries=[policies.registry],
        blockedRegistries=["evil.example.com"],
    )
    wait_for_policy(namespace, "nginx:1.25")
    return namespace


def test_short_name_without_a_stream_is_denied_with_the_fix(enforced: Namespace) -> None:
    created = enforced.kubectl("create", "deployment", "x", "--image", "nginx:1.25", check=False)
    assert created.returncode != 0
    assert f'admission webhook "{ENFORCE_WEBHOOK}" denied the request' in created.stderr
    assert 'Deployment "x" container "nginx": image "nginx:1.25"' in created.stderr
    assert f'does not come from an image stream of namespace "{enforced.name}"' in created.stderr
    assert (
        f"create the tag with: kubectl imagestream tag <registry>/nginx:1.25 nginx:1.25 "
        f"-n {enforced.name}, enable lookup with: kubectl imagestream set image-lookup nginx "
        f"-n {enforced.name}, and use the image nginx:1.25" in created.stderr
    )
    assert enforced.kubectl("get", "deployment", "x", check=False).returncode != 0


def test_with_a_stream_and_lookup_it_is_admitted_pinned(
    enforced: Namespace, app_image: Image, cluster: Cluster
) -> None:
    enforced.stream("nginx", {"1.25": app_image})
    enforced.kubectl("create", "deployment", "x", "--image", "nginx:1.25", "--replicas", "2")
    assert enforced.get("deployment", "x", POD_SPEC) == app_image.pinned
    # kube-controller-manager's ReplicaSet and Pods pass the same policy.
    cluster.wait(
        "the ReplicaSet controller to create the Pods",
        lambda: len(enforced.pod_images("app=x")) == 2,
    )
    assert enforced.pod_images("app=x") == [app_image.pinned] * 2


def test_a_digest_from_a_blocked_registry_is_denied(enforced: Namespace) -> None:
    created = enforced.kubectl("create", "deployment", "x", "--image", BLOCKED, check=False)
    assert created.returncode != 0
    assert "under the blocked registry prefix evil.example.com" in created.stderr
    assert "rule blockedRegistries" in created.stderr


def test_warn_namespace_prints_warnings_through_kubectl(
    policies: Cluster, namespace: Namespace
) -> None:
    apply_policy(namespace, "Warn", requireDigest=True)
    wait_for_policy(namespace, "nginx:1.25", mode="Warn")
    created = namespace.kubectl("create", "deployment", "x", "--image", "nginx:1.25")
    assert namespace.get("deployment", "x", POD_SPEC) == "nginx:1.25"
    assert "Warning: " in created.stderr
    assert 'image "nginx:1.25" is not pinned to a digest' in created.stderr
    assert f'(ImagePolicy "{namespace.name}", rule requireDigest)' in created.stderr


def audit_count(cluster: Cluster, policy_name: str) -> float:
    """The webhook's count of Audit violations of one policy."""
    metrics = requests.get(
        f"{cluster.webhook_url}/metrics", verify=str(cluster.webhook_certs / "ca.crt"), timeout=5
    ).text
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("imagestreams_policy_violations_total{") and (
            f'policy="{policy_name}"' in line and 'mode="Audit"' in line
        ):
            total += float(line.split()[-1])
    return total


def test_audit_namespace_admits_and_counts(policies: Cluster, namespace: Namespace) -> None:
    apply_policy(namespace, "Audit", requireDigest=True)
    names = (f"x{i}" for i in itertools.count())

    def audited() -> bool:
        created = namespace.kubectl("create", "deployment", next(names), "--image", "nginx:1.25")
        assert "Warning" not in created.stderr  # admitted, silently
        return audit_count(policies, namespace.name) > 0

    policies.wait("the webhook to audit the namespace's Deployments", audited)


def test_image_stream_import_outside_the_allowed_registries_is_rejected(
    policies: Cluster, namespace: Namespace, app_image: Image
) -> None:
    apply_policy(namespace, "Enforce", allowedRegistriesForImport=[policies.registry])

    def stream(source: str) -> subprocess.CompletedProcess[str]:
        name = "s" + hashlib.sha256(source.encode()).hexdigest()[:8]
        obj = {
            "apiVersion": "image.openshift.io/v1",
            "kind": "ImageStream",
            "metadata": {"name": name, "namespace": namespace.name},
            "spec": {"tags": [{"name": "1", "from": {"kind": "DockerImage", "name": source}}]},
        }
        return namespace.cluster.kubectl("apply", "-f", "-", input=json.dumps(obj), check=False)

    policies.wait(
        "the webhook to apply the import policy",
        lambda: stream("docker.io/library/nginx:1.25").returncode != 0,
    )
    rejected = stream("docker.io/library/nginx:1.25")
    assert (
        'imports from "docker.io/library/nginx:1.25" (docker.io/library/nginx)' in rejected.stderr
    )
    assert "rule allowedRegistriesForImport" in rejected.stderr
    assert stream(f"{app_image.repository}:1.0").returncode == 0


def test_namespaces_without_a_policy_are_untouched(
    policies: Cluster, enforced: Namespace, new_namespace: Callable[[str], Namespace]
) -> None:
    free = new_namespace("free")
    created = free.kubectl("create", "deployment", "x", "--image", "nginx:1.25")
    assert free.get("deployment", "x", POD_SPEC) == "nginx:1.25"
    assert "Warning" not in created.stderr
    assert free.kubectl("create", "deployment", "y", "--image", BLOCKED).returncode == 0


def test_invalid_policies_are_rejected_by_the_api_server(policies: Cluster) -> None:
    def apply(spec: dict[str, Any]) -> str:
        obj = {
            "apiVersion": "imagestreams.io/v1alpha1",
            "kind": "ImagePolicy",
            "metadata": {"name": "invalid", "labels": {SELECT_LABEL: "invalid"}},
            "spec": spec,
        }
        result = policies.kubectl("apply", "-f", "-", input=json.dumps(obj), check=False)
        assert result.returncode != 0
        return result.stderr

    selector: dict[str, Any] = {}
    assert 'Unsupported value: "Deny"' in apply(
        {"mode": "Deny", "namespaceSelector": selector, "rules": {"requireDigest": True}}
    )
    assert "rules must set at least one rule" in apply(
        {"mode": "Warn", "namespaceSelector": selector, "rules": {}}
    )
    assert "must be a registry host" in apply(
        {"mode": "Warn", "namespaceSelector": selector, "rules": {"allowedRegistries": ["myorg"]}}
    )
    in_without_values = {"matchExpressions": [{"key": "a", "operator": "In"}]}
    assert "values must be non-empty for In and NotIn" in apply(
        {"mode": "Warn", "namespaceSelector": in_without_values, "rules": {"requireDigest": True}}
    )
    own_label = {"matchLabels": {ENFORCED_LABEL: "true"}}
    assert f"must not use the label {ENFORCED_LABEL}" in apply(
        {"mode": "Warn", "namespaceSelector": own_label, "rules": {"requireDigest": True}}
    )


def test_the_enforced_label_follows_the_policies(enforced: Namespace) -> None:
    wait_for_label(enforced, "true")
    apply_policy(enforced, "Warn", requireDigest=True)
    wait_for_label(enforced, None)
    apply_policy(enforced, "Enforce", requireDigest=True)
    wait_for_label(enforced, "true")


def test_webhook_down_enforced_namespaces_refuse_and_others_do_not(
    policies: Cluster, enforced: Namespace, new_namespace: Callable[[str], Namespace]
) -> None:
    warned = new_namespace("warned")
    apply_policy(warned, "Warn", requireDigest=True)
    wait_for_policy(warned, "nginx:1.25", mode="Warn")
    wait_for_label(enforced, "true")
    policies.stop_webhook()
    try:
        refused = enforced.kubectl(
            "create", "deployment", "x", "--image", "nginx:1.25", check=False
        )
        assert refused.returncode != 0
        assert f'failed calling webhook "{ENFORCE_WEBHOOK}"' in refused.stderr
        warned.kubectl("create", "deployment", "x", "--image", "nginx:1.25")
        assert warned.get("deployment", "x", POD_SPEC) == "nginx:1.25"
    finally:
        policies.start_webhook()
    wait_for_policy(enforced, "nginx:1.25")


def test_policy_check_reads_policies_streams_and_labels_from_the_cluster(
    enforced: Namespace, app_image: Image, cluster: Cluster, tmp_path: Path
) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n"
        "  selector: {matchLabels: {app: web}}\n  template:\n"
        "    metadata: {labels: {app: web}}\n"
        "    spec: {containers: [{name: web, image: 'nginx:1.25'}]}\n"
    )

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(cluster.imagestreams_bin), "policy", "check", "-f", str(manifest),
             "-n", enforced.name],
            capture_output=True, text=True, env=cluster.env, timeout=60,
        )  # fmt: skip

    denied = check()
    assert denied.returncode == 1, denied.stderr
    assert denied.stdout.startswith('DENY  Deployment "web" container "web": image "nginx:1.25"')
    assert "1 object(s) checked; violations: 2 deny" in denied.stdout
    enforced.stream("nginx", {"1.25": app_image})
    admitted = check()
    assert admitted.returncode == 0, admitted.stdout + admitted.stderr
    assert "violations: 0 deny" in admitted.stdout
