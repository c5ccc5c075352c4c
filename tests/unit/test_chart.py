"""The Helm chart, rendered by the real `helm` (lint, template) over the default values and
each option, and checked structurally: restricted pods, least-privilege RBAC without
wildcards, the webhook registration of DESIGN.md, and names that agree across objects.

Schema validation against the Kubernetes API of the target version happens in
tests/e2e/test_chart_e2e.py (`kubectl apply --dry-run=server` against a real kube-apiserver).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "imagestreams"
NS = "imagestreams-system"
RELEASE = "rel"
FULLNAME = "rel-imagestreams"
KUBE_VERSION = "1.34.0"
sys.path.insert(0, str(ROOT / "hack"))

from localcluster import MissingTool, tool  # noqa: E402

Doc = dict[str, Any]
POD_KINDS = {"Deployment", "Job", "CronJob", "StatefulSet", "DaemonSet", "Pod"}
SECRET_WRITES = {"create", "update", "patch", "delete", "deletecollection", "*"}

# Every option the chart has, rendered and checked by the structural tests.
SCENARIOS: dict[str, Doc] = {
    "defaults": {},
    "cert-manager": {"certManager": {"enabled": True}},
    "cert-manager-issuer": {
        "certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}
    },
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "grafana-dashboard": {
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Platform"}},
        "controller": {"metrics": {"registries": ["harbor.corp.example", "r.corp:5000"]}},
    },
    "network-policy": {
        "networkPolicy": {
            "enabled": True,
            "webhookFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        }
    },
    "failure-policy-fail": {"webhook": {"failurePolicy": "Fail", "timeoutSeconds": 10}},
    "no-controller": {"controller": {"enabled": False}},
    "no-triggers": {"controller": {"triggers": {"enabled": False}}},
    "pull-secret-namespaces": {
        "controller": {"pullSecretNamespaces": ["team-a"], "globalPullSecret": "infra/pull"}
    },
    "digest": {"image": {"digest": "sha256:" + "ab" * 32}},
    "everything": {
        "serviceMonitor": {"enabled": True},
        "networkPolicy": {"enabled": True},
        "webhook": {"replicas": 3, "podDisruptionBudget": {"minAvailable": 2}},
        "controller": {"allowRegistries": ["registry.local:5000"], "insecureRegistries": ["x:1"]},
    },
    # Private registries: CAs of their own, behind a proxy.
    "registry-trust": {
        "controller": {
            "registryCAs": [
                {"configMap": "corp-ca", "key": "ca.crt"},
                {"secret": "harbor-ca", "key": "ca.crt"},
            ],
            "proxy": {
                "https": "http://proxy.corp:3128",
                "http": "http://proxy.corp:3128",
                "noProxy": [".corp.example", "10.0.0.0/8"],
            },
        }
    },
    # Reference policy Local: the chart's own registry (certs-sync issues its certificate) ...
    "local-registry": {"localRegistry": {"enabled": True}},
    # ... with cert-manager, a name of its own for the nodes, and network policies ...
    "local-registry-cert-manager": {
        "certManager": {"enabled": True},
        "localRegistry": {"enabled": True, "host": "registry.imagestreams.internal:5000"},
        "networkPolicy": {
            "enabled": True,
            "registryFrom": [{"ipBlock": {"cidr": "192.168.0.0/16"}}],
        },
    },
    # ... or an existing registry, with push credentials and a CA of its own.
    "local-registry-external": {
        "localRegistry": {
            "enabled": True,
            "historyLimit": 5,
            "external": {
                "host": "harbor.corp.example",
                "secret": "harbor-push",
                "caSecret": "corp-ca",
            },
        }
    },
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        binary = tool("helm")
    except MissingTool as err:
        pytest.fail(str(err), pytrace=False)
    env = dict(os.environ)
    # helm template needs no repositories; keep its state out of the user's home.
    home = Path(tempfile.gettempdir()) / "imagestreams-helm-unit"
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())
    proc = subprocess.run(
        [str(binary), *args], capture_output=True, text=True, env=env, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def values_file(values: Doc, tmp_path: Path) -> str:
    path = tmp_path / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def render(values: Doc, tmp_path: Path, kube_version: str = KUBE_VERSION, *extra: str) -> list[Doc]:
    out = helm(
        "template", RELEASE, str(CHART), "-n", NS, "--kube-version", kube_version,
        "-f", values_file(values, tmp_path), *extra,
    ).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    matches = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def kinds(docs: list[Doc]) -> set[str]:
    return {d["kind"] for d in docs}


def pod_spec(doc: Doc) -> Doc:
    if doc["kind"] == "Pod":
        return dict(doc["spec"])
    if doc["kind"] == "CronJob":
        return dict(doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(doc["spec"]["template"]["spec"])


def is_test_hook(doc: Doc) -> bool:
    """A `helm test` pod (templates/tests/)."""
    return bool(doc["metadata"].get("annotations", {}).get("helm.sh/hook") == "test")


def containers(doc: Doc) -> Iterator[Doc]:
    spec = pod_spec(doc)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def args_of(doc: Doc, container: int = 0) -> list[str]:
    return list(pod_spec(doc)["containers"][container]["args"])


def flag(args: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
    assert len(values) == 1, f"{name} in {args}"
    return values[0]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Doc]]:
    tmp = tmp_path_factory.mktemp("values")
    return {name: render(values, tmp) for name, values in SCENARIOS.items()}


@pytest.fixture(scope="module")
def defaults(rendered: dict[str, list[Doc]]) -> list[Doc]:
    return rendered["defaults"]


# --- helm lint ---------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_helm_lint_strict(scenario: str, tmp_path: Path) -> None:
    proc = helm("lint", "--strict", str(CHART), "-f", values_file(SCENARIOS[scenario], tmp_path))
    assert "0 chart(s) failed" in proc.stdout


# --- every scenario: security, RBAC, consistency -----------------------------------------


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_pod_is_restricted(scenario: str, rendered: dict[str, list[Doc]]) -> None:
    pods = [d for d in rendered[scenario] if d["kind"] in POD_KINDS]
    assert pods
    for doc in pods:
        where = f"{doc['kind']} {doc['metadata']['name']}"
        spec = pod_spec(doc)
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True, where
        assert security["runAsUser"] == 65532, where
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), where
        assert not any("hostPath" in v for v in spec.get("volumes", [])), where
        tmp = [v for v in spec["volumes"] if v["name"] == "tmp"]
        assert tmp and "emptyDir" in tmp[0], where
        for c in containers(doc):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert not sc.get("privileged"), where
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], where
            assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
            if is_test_hook(doc):
                assert c["command"][0] == "python3", where  # the product image's Python
            else:
                assert c["args"][0] in {"serve", "controller", "certs-sync"}, where


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_rbac_has_no_wildcards_and_no_secret_writes_cluster_wide(
    scenario: str, rendered: dict[str, list[Doc]]
) -> None:
    for doc in rendered[scenario]:
        if doc["kind"] not in {"ClusterRole", "Role"}:
            continue
        assert "aggregationRule" not in doc
        for rule in doc["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"{doc['metadata']['name']}: wildcard {key}"
            assert "nonResourceURLs" not in rule
            if "secrets" in rule["resources"]:
                writes = SECRET_WRITES & set(rule["verbs"])
                if doc["kind"] == "ClusterRole":
                    assert not writes, f"{doc['metadata']['name']} writes Secrets cluster-wide"
                    assert rule["verbs"] == ["list"]
                elif writes - {"create"}:
                    # Writes other than create (which RBAC cannot limit by name) are by name.
                    assert rule.get("resourceNames") == [f"{FULLNAME}-webhook-tls"]
        for forbidden in ("escalate", "bind", "impersonate"):
            assert all(forbidden not in r["verbs"] for r in doc["rules"])


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_names_agree_across_objects(scenario: str, rendered: dict[str, list[Doc]]) -> None:
    docs = rendered[scenario]
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    roles = {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"].endswith("Role")}
    for doc in docs:
        meta = doc["metadata"]
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        if doc["kind"] in POD_KINDS:
            if is_test_hook(doc):
                assert pod_spec(doc)["automountServiceAccountToken"] is False
            else:
                assert pod_spec(doc)["serviceAccountName"] in accounts
            assert meta["namespace"] == NS
        if doc["kind"] in {"RoleBinding", "ClusterRoleBinding"}:
            ref = doc["roleRef"]
            assert (ref["kind"], ref["name"]) in roles
            for subject in doc["subjects"]:
                assert subject["kind"] == "ServiceAccount"
                assert (subject["name"], subject["namespace"]) in {(a, NS) for a in accounts}
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items()


# --- the webhook ---------------------------------------------------------------------------


def test_webhook_configuration_defaults(defaults: list[Doc]) -> None:
    config = find(defaults, "MutatingWebhookConfiguration", FULLNAME)
    (webhook,) = config["webhooks"]
    assert webhook["name"] == "imagestreams.image.openshift.io"
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["timeoutSeconds"] == 5
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["sideEffects"] == "None"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert "caBundle" not in webhook["clientConfig"]
    resources = {
        (group, resource)
        for rule in webhook["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        if rule["operations"] == ["CREATE", "UPDATE"] and rule["scope"] == "Namespaced"
    }
    assert resources == {
        ("", "pods"),
        ("", "pods/ephemeralcontainers"),
        ("", "replicationcontrollers"),
        ("", "podtemplates"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
        ("image.openshift.io", "imagestreams"),
    }
    assert webhook["namespaceSelector"] == {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", "kube-node-lease", NS],
            }
        ]
    }


def test_webhook_client_config_reaches_the_webhook_pods(defaults: list[Doc]) -> None:
    (webhook,) = find(defaults, "MutatingWebhookConfiguration")["webhooks"]
    ref = webhook["clientConfig"]["service"]
    assert ref == {"name": f"{FULLNAME}-webhook", "namespace": NS, "path": "/mutate", "port": 443}
    service = find(defaults, "Service", ref["name"])
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (443, "https")
    deployment = find(defaults, "Deployment", f"{FULLNAME}-webhook")
    assert service["spec"]["selector"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    (container,) = pod_spec(deployment)["containers"]
    assert {"name": "https", "containerPort": 8443, "protocol": "TCP"} in container["ports"]
    assert flag(container["args"], "--bind") == "0.0.0.0:8443"


def test_webhook_deployment(defaults: list[Doc]) -> None:
    deployment = find(defaults, "Deployment", f"{FULLNAME}-webhook")
    assert deployment["spec"]["replicas"] == 2
    args = args_of(deployment)
    assert args[0] == "serve"
    assert flag(args, "--workers") == "2"
    assert not any(a.startswith("--threads") for a in args)  # gevent workers have none
    (container,) = pod_spec(deployment)["containers"]
    # Probes go to the plain-HTTP health port, never queued behind admission connections.
    assert flag(args, "--health-bind") == "0.0.0.0:8081"
    assert {"name": "health", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    probes = [container[p]["httpGet"] for p in ("readinessProbe", "livenessProbe", "startupProbe")]
    assert [(p["path"], p["port"], p["scheme"]) for p in probes] == [
        ("/readyz", "health", "HTTP"),
        ("/healthz", "health", "HTTP"),
        ("/healthz", "health", "HTTP"),
    ]
    spread = pod_spec(deployment)["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    pdb = find(defaults, "PodDisruptionBudget", f"{FULLNAME}-webhook")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    # The certificate comes from a Secret volume (not subPath: it must update in place), and
    # only the serving pair is mounted.
    (tls,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["secretName"] == f"{FULLNAME}-webhook-tls"
    assert {i["key"] for i in tls["secret"]["items"]} == {"tls.crt", "tls.key"}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    assert "subPath" not in mount
    assert flag(args, "--certfile") == f"{mount['mountPath']}/tls.crt"


def test_match_conditions_name_the_builtin_owners_of_the_python_rule(defaults: list[Doc]) -> None:
    """The CEL condition lists exactly workloads.BUILTIN_OWNERS, each with its group (the
    e2e tier checks what the API server makes of it, row by row, against the Python rule)."""
    from webhook.model.workloads import BUILTIN_OWNERS

    (webhook,) = find(defaults, "MutatingWebhookConfiguration")["webhooks"]
    conditions = {c["name"]: c["expression"] for c in webhook["matchConditions"]}
    assert set(conditions) == {
        "not-controlled-by-a-builtin-workload",
        "no-subresource-but-ephemeral-containers",
    }
    owners = conditions["not-controlled-by-a-builtin-workload"]
    named = set()
    for clause in re.finditer(
        r"r\.kind (?:in \[(?P<list>[^\]]*)\]|== '(?P<one>[^']*)') && "
        r"r\.apiVersion\.matches\('(?P<pattern>[^']*)'\)",
        owners,
    ):
        kinds = re.findall(r"'([^']*)'", clause["list"]) if clause["list"] else [clause["one"]]
        pattern = clause["pattern"]
        group = "" if pattern == "^[^/]*$" else pattern[1:].split("/")[0]
        assert pattern in ("^[^/]*$", f"^{group}/[^/]*$")
        named |= {(group, kind) for kind in kinds}
    assert named == BUILTIN_OWNERS
    assert "has(r.controller) && r.controller" in owners


def test_match_conditions_can_be_replaced_or_dropped(tmp_path: Path) -> None:
    (webhook,) = find(render({"webhook": {"matchConditions": []}}, tmp_path),
                      "MutatingWebhookConfiguration")["webhooks"]  # fmt: skip
    assert "matchConditions" not in webhook
    mine = [{"name": "only-labelled", "expression": "'resolve' in object.metadata.labels"}]
    (webhook,) = find(render({"webhook": {"matchConditions": mine}}, tmp_path),
                      "MutatingWebhookConfiguration")["webhooks"]  # fmt: skip
    assert webhook["matchConditions"] == mine


def test_webhook_on_the_host_network(tmp_path: Path) -> None:
    """hostNetwork for API servers that cannot reach pod IPs: the node's ports (chosen
    through securePort/healthPort and used by args, ports, probes and the Service alike),
    cluster DNS kept, one replica replaced at a time, and otherwise still `restricted`."""
    values = {"webhook": {"hostNetwork": True, "securePort": 10260, "healthPort": 10261}}
    docs = render(values, tmp_path)
    deployment = find(docs, "Deployment", f"{FULLNAME}-webhook")
    spec = pod_spec(deployment)
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    (container,) = spec["containers"]
    args = container["args"]
    assert flag(args, "--bind") == "0.0.0.0:10260"
    assert flag(args, "--health-bind") == "0.0.0.0:10261"
    assert {"name": "https", "containerPort": 10260, "protocol": "TCP"} in container["ports"]
    assert {"name": "health", "containerPort": 10261, "protocol": "TCP"} in container["ports"]
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    (port,) = find(docs, "Service", f"{FULLNAME}-webhook")["spec"]["ports"]
    assert port["targetPort"] == "https"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["runAsNonRoot"] is True
    # Only the webhook: nothing calls the controller or certs-sync from outside the cluster.
    others = [d for d in docs if d["kind"] in POD_KINDS and d is not deployment]
    assert others and not any(pod_spec(d).get("hostNetwork") for d in others)
    # An explicit dnsPolicy wins.
    values["webhook"]["dnsPolicy"] = "Default"
    spec = pod_spec(find(render(values, tmp_path), "Deployment", f"{FULLNAME}-webhook"))
    assert spec["dnsPolicy"] == "Default"


def test_webhook_off_the_host_network_by_default(defaults: list[Doc]) -> None:
    deployment = find(defaults, "Deployment", f"{FULLNAME}-webhook")
    assert "hostNetwork" not in pod_spec(deployment)
    assert "dnsPolicy" not in pod_spec(deployment)
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


def test_webhook_options_are_overridable(tmp_path: Path) -> None:
    docs = render(
        {
            "webhook": {
                "failurePolicy": "Fail",
                "timeoutSeconds": 12,
                "reinvocationPolicy": "Never",
                "sideEffects": "NoneOnDryRun",
                "excludedNamespaces": ["kube-system", "monitoring"],
                "objectSelector": {"matchLabels": {"resolve": "yes"}},
                "rules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["deployments"],
                        "scope": "Namespaced",
                    }
                ],
                "workers": 5,
                "threads": 8,  # ignored, still accepted
            }
        },
        tmp_path,
    )
    (webhook,) = find(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert (webhook["failurePolicy"], webhook["timeoutSeconds"]) == ("Fail", 12)
    assert (webhook["reinvocationPolicy"], webhook["sideEffects"]) == ("Never", "NoneOnDryRun")
    assert webhook["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "kube-system",
        "monitoring",
        NS,
    ]
    assert webhook["objectSelector"] == {"matchLabels": {"resolve": "yes"}}
    assert [r["resources"] for r in webhook["rules"]] == [["deployments"]]
    args = args_of(find(docs, "Deployment", f"{FULLNAME}-webhook"))
    assert flag(args, "--workers") == "5"

    selector = {"matchLabels": {"imagestreams": "enabled"}}
    docs = render({"webhook": {"namespaceSelector": selector}}, tmp_path)
    (webhook,) = find(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert webhook["namespaceSelector"] == selector


def test_custom_failure_policy_scenario(rendered: dict[str, list[Doc]]) -> None:
    (webhook,) = find(rendered["failure-policy-fail"], "MutatingWebhookConfiguration")["webhooks"]
    assert (webhook["failurePolicy"], webhook["timeoutSeconds"]) == ("Fail", 10)


def test_policy_webhook_is_registered_fail_closed_only_where_enforced(
    defaults: list[Doc],
) -> None:
    config = find(defaults, "ValidatingWebhookConfiguration", FULLNAME)
    enforced, other = config["webhooks"]
    assert (enforced["name"], enforced["failurePolicy"]) == (
        "enforce.policy.imagestreams.io",
        "Fail",
    )
    assert (other["name"], other["failurePolicy"]) == ("policy.imagestreams.io", "Ignore")
    mutating = find(defaults, "MutatingWebhookConfiguration", FULLNAME)["webhooks"][0]
    for webhook, operator in ((enforced, "In"), (other, "NotIn")):
        assert webhook["clientConfig"]["service"] == {
            **mutating["clientConfig"]["service"],
            "path": "/validate",
        }
        assert (webhook["sideEffects"], webhook["timeoutSeconds"]) == ("None", 5)
        label, excluded = webhook["namespaceSelector"]["matchExpressions"]
        assert label == {
            "key": "imagestreams.io/policy-enforced",
            "operator": operator,
            "values": ["true"],
        }
        assert excluded["values"] == ["kube-system", "kube-node-lease", NS]
        assert webhook["rules"][:-1] == mutating["rules"]
        assert webhook["rules"][-1]["resources"] == ["imagestreams"]


def test_policy_webhook_options(tmp_path: Path, rendered: dict[str, list[Doc]]) -> None:
    assert "ValidatingWebhookConfiguration" not in kinds(
        render({"policy": {"enabled": False}}, tmp_path)
    )
    config = find(rendered["cert-manager"], "ValidatingWebhookConfiguration")
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{NS}/{FULLNAME}-webhook"
    )
    selector = {
        "matchLabels": {"team": "a"},
        "matchExpressions": [{"key": "x", "operator": "Exists"}],
    }
    docs = render({"webhook": {"namespaceSelector": selector}}, tmp_path)
    for webhook in find(docs, "ValidatingWebhookConfiguration")["webhooks"]:
        assert webhook["namespaceSelector"]["matchLabels"] == {"team": "a"}
        assert webhook["namespaceSelector"]["matchExpressions"][1:] == selector["matchExpressions"]


def test_admission_policy_confines_the_controllers_namespace_patches(
    defaults: list[Doc],
) -> None:
    name = f"{FULLNAME}-controller-namespaces"
    policy = find(defaults, "ValidatingAdmissionPolicy", name)
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert (rule["resources"], rule["operations"]) == (["namespaces"], ["UPDATE"])
    (condition,) = policy["spec"]["matchConditions"]
    assert f'"system:serviceaccount:{NS}:{FULLNAME}-controller"' in condition["expression"]
    binding = find(defaults, "ValidatingAdmissionPolicyBinding", name)
    assert binding["spec"] == {"policyName": name, "validationActions": ["Deny"]}


TRIGGERS_POLICY = f"{FULLNAME}-controller-triggers"
READ_PATCH = ("get", "list", "watch", "patch")
WORKLOAD_RULES = [
    (("apps",), ("deployments", "statefulsets", "daemonsets"), READ_PATCH, ()),
    (("batch",), ("cronjobs",), READ_PATCH, ()),
]


def test_admission_policy_confines_the_controllers_workload_patches(defaults: list[Doc]) -> None:
    """Every workload kind the controller may patch is fenced, for its service account
    only; what the CEL allows is tested on a real API server (tests/e2e/test_chart_e2e.py)."""
    policy = find(defaults, "ValidatingAdmissionPolicy", TRIGGERS_POLICY)
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    fenced = {
        (group, resource)
        for rule in spec["matchConstraints"]["resourceRules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        if rule["operations"] == ["UPDATE"]
    }
    patchable = {
        (group, resource)
        for groups, resources, verbs, _ in rules(defaults, "ClusterRole", f"{FULLNAME}-controller")
        if "patch" in verbs and not {"namespaces", "events", "imagestreams/status"} & set(resources)
        for group in groups
        for resource in resources
    }
    assert fenced == patchable
    assert fenced == {
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "cronjobs"),
    }
    (condition,) = spec["matchConditions"]
    assert condition["expression"] == (
        f'request.userInfo.username == "system:serviceaccount:{NS}:{FULLNAME}-controller"'
    )
    namespaces, annotation, *images = spec["validations"]
    assert namespaces["expression"] == (
        f'!(request.namespace in ["kube-system","kube-node-lease","{NS}"])'
    )
    assert namespaces["message"].endswith(
        f"may change no workload in kube-system, kube-node-lease, {NS}"
    )
    # The annotation as the workload had it before this update.
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    assert annotation["expression"] == '"image.openshift.io/triggers" in variables.oldAnnotations'
    assert variables["oldAnnotations"].startswith("has(oldObject.metadata.annotations) ?")
    assert {v["message"] for v in images} == {
        f"system:serviceaccount:{NS}:{FULLNAME}-controller may change only the images of"
        " containers and initContainers"
    }
    everything = " ".join(v["expression"] for v in images)
    for skipped in ('["metadata", "spec"]', '["image"]', '["containers", "initContainers"]'):
        assert skipped in everything
    binding = find(defaults, "ValidatingAdmissionPolicyBinding", TRIGGERS_POLICY)
    assert binding["spec"] == {"policyName": TRIGGERS_POLICY, "validationActions": ["Deny"]}


def test_triggers_policy_follows_the_excluded_namespaces(tmp_path: Path) -> None:
    docs = render({"webhook": {"excludedNamespaces": ["kube-system", "platform", NS]}}, tmp_path)
    policy = find(docs, "ValidatingAdmissionPolicy", TRIGGERS_POLICY)
    namespaces = policy["spec"]["validations"][0]
    assert namespaces["expression"] == f'!(request.namespace in ["kube-system","platform","{NS}"])'


def test_triggers_off_removes_the_workload_rights(rendered: dict[str, list[Doc]]) -> None:
    from webhook.cli.main import build_parser

    docs = rendered["no-triggers"]
    controller = f"{FULLNAME}-controller"
    assert rules(docs, "ClusterRole", controller) == [
        r for r in rules(rendered["defaults"], "ClusterRole", controller) if r not in WORKLOAD_RULES
    ]
    assert not [d for d in docs if d["metadata"]["name"] == TRIGGERS_POLICY]
    # The controller is told, in a flag its CLI knows; by default triggers are on.
    parser = build_parser()
    args = args_of(find(docs, "Deployment", controller))
    assert "--no-triggers" in args
    assert parser.parse_args(args).triggers is False
    default_args = args_of(find(rendered["defaults"], "Deployment", controller))
    assert not [a for a in default_args if "triggers" in a]
    assert parser.parse_args(default_args).triggers is True


def test_triggers_policy_can_be_switched_off_alone(tmp_path: Path) -> None:
    docs = render({"controller": {"triggers": {"admissionPolicy": False}}}, tmp_path)
    assert not [d for d in docs if d["metadata"]["name"] == TRIGGERS_POLICY]
    assert set(WORKLOAD_RULES) <= set(rules(docs, "ClusterRole", f"{FULLNAME}-controller"))
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "ValidatingAdmissionPolicy"} == {
        f"{FULLNAME}-controller-namespaces",
        f"{FULLNAME}-certs-sync",
    }


# --- RBAC per component ------------------------------------------------------------------


def rules(docs: list[Doc], kind: str, name: str) -> list[tuple[tuple[str, ...], ...]]:
    """A role's rules as comparable tuples: (groups, resources, verbs, resourceNames)."""
    return [
        (
            tuple(r["apiGroups"]),
            tuple(r["resources"]),
            tuple(r["verbs"]),
            tuple(r.get("resourceNames", ())),
        )
        for r in find(docs, kind, name)["rules"]
    ]


def test_webhook_only_reads_what_it_indexes(defaults: list[Doc]) -> None:
    read = ("get", "list", "watch")
    assert rules(defaults, "ClusterRole", f"{FULLNAME}-webhook") == [
        (("image.openshift.io",), ("imagestreams",), read, ()),
        (("imagestreams.io",), ("imagepolicies",), read, ()),
        (("",), ("namespaces",), read, ()),
    ]


def test_controller_rbac(defaults: list[Doc]) -> None:
    name = f"{FULLNAME}-controller"
    assert rules(defaults, "ClusterRole", name) == [
        (("image.openshift.io",), ("imagestreams",), ("get", "list", "watch"), ()),
        (("image.openshift.io",), ("imagestreams/status",), ("update", "patch"), ()),
        (("",), ("events",), ("create", "patch"), ()),
        (("authorization.k8s.io",), ("subjectaccessreviews",), ("create",), ()),
        (("imagestreams.io",), ("imagepolicies",), ("get", "list", "watch"), ()),
        (("",), ("namespaces",), ("get", "list", "watch", "patch"), ()),
        (
            ("apps",),
            ("deployments", "statefulsets", "daemonsets"),
            ("get", "list", "watch", "patch"),
            (),
        ),
        (("batch",), ("cronjobs",), ("get", "list", "watch", "patch"), ()),
    ]
    assert rules(defaults, "ClusterRole", f"{name}-pull-secrets") == [
        (("",), ("secrets",), ("list",), ())
    ]
    find(defaults, "ClusterRoleBinding", f"{name}-pull-secrets")
    lease = find(defaults, "Role", f"{name}-leader-election")
    assert lease["metadata"]["namespace"] == NS
    args = args_of(find(defaults, "Deployment", name))
    assert "--leader-elect" in args
    assert flag(args, "--lease-namespace") == NS
    assert rules(defaults, "Role", f"{name}-leader-election") == [
        (("coordination.k8s.io",), ("leases",), ("create",), ()),
        (("coordination.k8s.io",), ("leases",), ("get", "update"), (flag(args, "--lease-name"),)),
    ]


def test_controller_deployment(defaults: list[Doc]) -> None:
    deployment = find(defaults, "Deployment", f"{FULLNAME}-controller")
    assert deployment["spec"]["replicas"] == 2
    args = args_of(deployment)
    assert args[0] == "controller"
    assert flag(args, "--metrics-bind") == "0.0.0.0:8080"
    assert flag(args, "--scheduled-interval") == "15m"
    service = find(defaults, "Service", f"{FULLNAME}-controller-metrics")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_registry_cas_and_proxies(rendered: dict[str, list[Doc]], defaults: list[Doc]) -> None:
    deployment = find(rendered["registry-trust"], "Deployment", f"{FULLNAME}-controller")
    args = args_of(deployment)
    files = [a.split("=", 1)[1] for a in args if a.startswith("--registry-ca-file=")]
    assert files == [
        "/var/run/imagestreams/registry-ca/0-ca.crt",
        "/var/run/imagestreams/registry-ca/1-ca.crt",
    ]
    assert flag(args, "--https-proxy") == "http://proxy.corp:3128"
    assert flag(args, "--http-proxy") == "http://proxy.corp:3128"
    assert flag(args, "--no-proxy") == ".corp.example,10.0.0.0/8"
    spec = pod_spec(deployment)
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "registry-ca")
    assert mount == {
        "name": "registry-ca",
        "mountPath": "/var/run/imagestreams/registry-ca",
        "readOnly": True,
    }
    volume = next(v for v in spec["volumes"] if v["name"] == "registry-ca")
    assert volume["projected"]["sources"] == [
        {"configMap": {"name": "corp-ca", "items": [{"key": "ca.crt", "path": "0-ca.crt"}]}},
        {"secret": {"name": "harbor-ca", "items": [{"key": "ca.crt", "path": "1-ca.crt"}]}},
    ]
    # Flags, not variables: the Kubernetes client would take HTTPS_PROXY for the API server.
    names = {e["name"].lower() for e in spec["containers"][0].get("env", [])}
    assert not names & {"https_proxy", "http_proxy", "no_proxy"}
    default_args = controller_args(defaults)
    assert not [a for a in default_args if "proxy" in a or "registry-ca" in a]
    default_spec = pod_spec(find(defaults, "Deployment", f"{FULLNAME}-controller"))
    assert "registry-ca" not in {v["name"] for v in default_spec["volumes"]}


def test_proxy_urls_from_a_secret(tmp_path: Path) -> None:
    extra = {"name": "EXTRA", "value": "1"}
    values = {"controller": {"proxy": {"existingSecret": "proxy-auth"}, "env": [extra]}}
    deployment = find(render(values, tmp_path), "Deployment", f"{FULLNAME}-controller")
    env = pod_spec(deployment)["containers"][0]["env"]
    assert env == [
        {
            "name": "IMAGESTREAMS_HTTPS_PROXY",
            "valueFrom": {"secretKeyRef": {"name": "proxy-auth", "key": "https", "optional": True}},
        },
        {
            "name": "IMAGESTREAMS_HTTP_PROXY",
            "valueFrom": {"secretKeyRef": {"name": "proxy-auth", "key": "http", "optional": True}},
        },
        extra,
    ]
    assert not [a for a in args_of(deployment) if "proxy" in a]  # no URL in the pod spec


def test_pull_secrets_can_be_limited_to_namespaces(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["pull-secret-namespaces"]
    bindings = [d for d in docs if d["metadata"]["name"] == f"{FULLNAME}-controller-pull-secrets"]
    assert {(d["kind"], d["metadata"].get("namespace")) for d in bindings} == {
        ("ClusterRole", None),
        ("RoleBinding", "team-a"),
        ("RoleBinding", "infra"),  # the global pull secret's namespace
    }
    args = args_of(find(docs, "Deployment", f"{FULLNAME}-controller"))
    assert flag(args, "--global-pull-secret") == "infra/pull"


# --- certificates ---------------------------------------------------------------------------


def test_self_managed_certificates(defaults: list[Doc]) -> None:
    assert "Certificate" not in kinds(defaults)
    config = find(defaults, "MutatingWebhookConfiguration")
    assert "cert-manager.io/inject-ca-from" not in config["metadata"].get("annotations", {})
    name = f"{FULLNAME}-certs-sync"
    deployment = find(defaults, "Deployment", name)
    job = find(defaults, "Job", name)
    assert deployment["spec"]["replicas"] == 1
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    for doc, mode in ((deployment, "--interval=1h"), (job, "--once")):
        args = args_of(doc)
        assert args[0] == "certs-sync" and args[-1] == mode
        assert flag(args, "--secret") == f"{NS}/{FULLNAME}-webhook-tls"
        assert flag(args, "--webhook") == config["metadata"]["name"]
        assert flag(args, "--service") == f"{FULLNAME}-webhook"
        assert flag(args, "--namespace") == NS
        assert flag(args, "--rotate-before") == "30d"
        assert pod_spec(doc)["serviceAccountName"] == name
    assert rules(defaults, "Role", name) == [
        (("",), ("secrets",), ("get", "update"), (f"{FULLNAME}-webhook-tls",)),
        (("",), ("secrets",), ("create",), ()),
        (("",), ("services",), ("get",), (f"{FULLNAME}-webhook",)),
    ]
    assert rules(defaults, "ClusterRole", name) == [
        (
            ("admissionregistration.k8s.io",),
            ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"),
            ("get", "patch"),
            (FULLNAME,),
        )
    ]


def test_admission_policy_limits_what_certs_sync_may_create(defaults: list[Doc]) -> None:
    name = f"{FULLNAME}-certs-sync"
    policy = find(defaults, "ValidatingAdmissionPolicy", name)
    (condition,) = policy["spec"]["matchConditions"]
    assert f'"system:serviceaccount:{NS}:{name}"' in condition["expression"]
    (validation,) = policy["spec"]["validations"]
    assert f'"{FULLNAME}-webhook-tls"' in validation["expression"]
    assert '"kubernetes.io/tls"' in validation["expression"]
    binding = find(defaults, "ValidatingAdmissionPolicyBinding", name)
    assert binding["spec"] == {"policyName": name, "validationActions": ["Deny"]}


def test_cert_manager_certificates(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["cert-manager"]
    assert not [d for d in docs if "certs-sync" in d["metadata"]["name"]]
    certificate = find(docs, "Certificate", f"{FULLNAME}-webhook")
    deployment = find(docs, "Deployment", f"{FULLNAME}-webhook")
    (tls,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "tls"]
    assert certificate["spec"]["secretName"] == tls["secret"]["secretName"]
    assert f"{FULLNAME}-webhook.{NS}.svc" in certificate["spec"]["dnsNames"]
    config = find(docs, "MutatingWebhookConfiguration")
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{NS}/{FULLNAME}-webhook"
    )
    # The chart's own CA: a self-signed Issuer makes it, a CA Issuer signs with it.
    ca = find(docs, "Certificate", f"{FULLNAME}-ca")
    assert ca["spec"]["isCA"] is True
    assert (
        ca["spec"]["issuerRef"]["name"]
        == find(docs, "Issuer", f"{FULLNAME}-selfsigned")["metadata"]["name"]
    )
    assert (
        find(docs, "Issuer", f"{FULLNAME}-ca")["spec"]["ca"]["secretName"]
        == (ca["spec"]["secretName"])
    )
    assert certificate["spec"]["issuerRef"]["name"] == f"{FULLNAME}-ca"


def test_cert_manager_with_an_existing_issuer(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["cert-manager-issuer"]
    assert "Issuer" not in kinds(docs)
    (certificate,) = [d for d in docs if d["kind"] == "Certificate"]
    assert certificate["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


# --- monitoring and network ----------------------------------------------------------------


def test_service_monitors(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["service-monitor"]
    webhook = find(docs, "ServiceMonitor", f"{FULLNAME}-webhook")
    assert webhook["metadata"]["labels"]["release"] == "prom"
    (endpoint,) = webhook["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["scheme"]) == ("https", "https")
    assert endpoint["tlsConfig"]["ca"]["secret"] == {
        "name": f"{FULLNAME}-webhook-tls",
        "key": "ca.crt",
    }
    assert endpoint["tlsConfig"]["serverName"] == f"{FULLNAME}-webhook.{NS}.svc"
    controller = find(docs, "ServiceMonitor", f"{FULLNAME}-controller")
    service = find(docs, "Service", f"{FULLNAME}-controller-metrics")
    assert controller["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert controller["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    assert "ServiceMonitor" not in kinds(rendered["defaults"])


def test_grafana_dashboard(rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    docs = rendered["grafana-dashboard"]
    config_map = find(docs, "ConfigMap", f"{FULLNAME}-dashboard")
    assert config_map["metadata"]["namespace"] == NS
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Platform"}
    shipped = json.loads((CHART / "dashboards" / "imagestreams.json").read_text())
    assert json.loads(config_map["data"]["imagestreams.json"]) == shipped
    exprs = [t["expr"] for p in shipped["panels"] for t in p.get("targets", [])]
    assert exprs and all("imagestreams_" in e for e in exprs)
    titles = " ".join(p["title"] for p in shipped["panels"]).lower()
    for topic in ("admission latency", "import results", "queue depth"):
        assert topic in titles
    # tests/e2e/test_dashboard_e2e.py checks every queried metric against real /metrics.
    assert f"{FULLNAME}-dashboard" not in {d["metadata"]["name"] for d in rendered["defaults"]}
    elsewhere = render({"grafanaDashboard": {"enabled": True, "namespace": "monitoring"}}, tmp_path)
    assert find(elsewhere, "ConfigMap", f"{FULLNAME}-dashboard")["metadata"]["namespace"] == (
        "monitoring"
    )


def test_metrics_registries_are_flags(rendered: dict[str, list[Doc]]) -> None:
    args = controller_args(rendered["grafana-dashboard"])
    named = [a.split("=", 1)[1] for a in args if a.startswith("--metrics-registry=")]
    assert named == ["harbor.corp.example", "r.corp:5000"]
    assert not [a for a in controller_args(rendered["defaults"]) if "--metrics-registry" in a]


def test_network_policies(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["network-policy"]
    webhook = find(docs, "NetworkPolicy", f"{FULLNAME}-webhook")
    assert webhook["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = webhook["spec"]["ingress"]
    assert rule["ports"] == [{"port": "https", "protocol": "TCP"}]
    assert rule["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    controller = find(docs, "NetworkPolicy", f"{FULLNAME}-controller")
    assert controller["spec"]["ingress"][0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    certs = find(docs, "NetworkPolicy", f"{FULLNAME}-certs-sync")
    assert "ingress" not in certs["spec"]  # nothing may connect to it
    # Each policy selects the pods it is named for.
    for policy in (webhook, controller):
        name = policy["metadata"]["name"]
        labels = find(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert "NetworkPolicy" not in kinds(rendered["defaults"])


def test_image_by_tag_or_digest(rendered: dict[str, list[Doc]]) -> None:
    image = pod_spec(find(rendered["defaults"], "Deployment", f"{FULLNAME}-webhook"))["containers"][
        0
    ]["image"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert image.endswith(f":{chart['appVersion']}")
    digest = pod_spec(find(rendered["digest"], "Deployment", f"{FULLNAME}-webhook"))["containers"][
        0
    ]["image"]
    assert digest.endswith("@sha256:" + "ab" * 32)


def test_pdb_min_available(rendered: dict[str, list[Doc]]) -> None:
    pdb = find(rendered["everything"], "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 2 and "maxUnavailable" not in pdb["spec"]


# --- reference policy Local: the registry Local tags are mirrored into -----------------------

REGISTRY = f"{FULLNAME}-registry"
REGISTRY_SERVICE = f"{REGISTRY}.{NS}.svc"


def controller_args(docs: list[Doc]) -> list[str]:
    return args_of(find(docs, "Deployment", f"{FULLNAME}-controller"))


def mounted_secret(doc: Doc, path: str) -> tuple[str, set[str]]:
    """The Secret mounted at the directory of `path` in the first container, and its keys."""
    spec = pod_spec(doc)
    mount = next(
        m for m in spec["containers"][0]["volumeMounts"] if path.startswith(m["mountPath"] + "/")
    )
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    return volume["secret"]["secretName"], {i["key"] for i in volume["secret"]["items"]}


def registry_config(docs: list[Doc]) -> Doc:
    return dict(yaml.safe_load(find(docs, "ConfigMap", REGISTRY)["data"]["config.yml"]))


def test_local_registry_is_off_by_default(defaults: list[Doc]) -> None:
    assert not [d for d in defaults if "registry" in d["metadata"]["name"]]
    assert not [a for a in controller_args(defaults) if a.startswith("--local-registry")]
    assert not [a for a in args_of(find(defaults, "Job")) if a.startswith("--dns")]


def test_local_registry_in_the_chart(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["local-registry"]
    deployment = find(docs, "Deployment", REGISTRY)
    spec = pod_spec(deployment)
    # One replica on a ReadWriteOnce volume: the old pod lets go before the new one starts.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert spec["automountServiceAccountToken"] is False
    assert find(docs, "ServiceAccount", REGISTRY)["automountServiceAccountToken"] is False
    assert spec["securityContext"]["fsGroup"] == 65532
    (container,) = spec["containers"]
    # The CNCF Distribution image, pinned by tag and digest in values.
    values = yaml.safe_load((CHART / "values.yaml").read_text())["localRegistry"]["image"]
    assert container["image"] == f"{values['repository']}:{values['tag']}@{values['digest']}"
    assert values["repository"] == "docker.io/library/registry"
    assert container["args"] == ["serve", "/etc/registry/config.yml"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["REGISTRY_STORAGE_DELETE_ENABLED"] == "true"  # the controller prunes history

    # Storage: the PVC at the configured root directory (the root filesystem is read-only).
    config = registry_config(docs)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    storage = next(m for m in container["volumeMounts"] if m["name"] == "storage")
    assert storage["mountPath"] == config["storage"]["filesystem"]["rootdirectory"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "storage"]
    pvc = find(docs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in pvc["spec"]  # the cluster's default class
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "cache" not in config["storage"]  # see the chart's comment on garbage collection
    assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    # TLS: certs-sync's Secret (the webhook's CA), serving pair only, as the config names it.
    tls = config["http"]["tls"]
    secret, keys = mounted_secret(deployment, tls["certificate"])
    assert (secret, keys) == (f"{FULLNAME}-webhook-tls", {"tls.crt", "tls.key"})
    assert mounted_secret(deployment, tls["key"])[0] == secret
    # The registry loads its certificate once; liveness fails when the mounted one changes.
    script = container["command"][2]
    assert f"sha256sum {tls['certificate']} {tls['key']} > /tmp/tls.sha256" in script
    assert container["livenessProbe"]["exec"]["command"] == ["sha256sum", "-c", "/tmp/tls.sha256"]
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/v2/",
        "port": "https",
        "scheme": "HTTPS",
    }
    for kind in ("Deployment", "Job"):
        certs_sync = args_of(find(docs, kind, f"{FULLNAME}-certs-sync"))
        dns = [a.split("=", 1)[1] for a in certs_sync if a.startswith("--dns=")]
        assert {
            REGISTRY_SERVICE,
            f"{REGISTRY_SERVICE}.cluster.local",
            f"{REGISTRY}.{NS}",
            REGISTRY,
        } <= set(dns), kind

    # The Service, and the controller pushing to it and trusting the CA.
    service = find(docs, "Service", REGISTRY)
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (5000, "https")
    assert {"name": "https", "containerPort": 5000, "protocol": "TCP"} in container["ports"]
    assert config["http"]["addr"] == ":5000"
    assert service["spec"]["selector"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    args = controller_args(docs)
    assert flag(args, "--local-registry") == f"{REGISTRY_SERVICE}:5000"
    assert flag(args, "--history-limit") == "10"
    assert flag(args, "--mirror-workers") == "2"
    assert not [a for a in args if a.startswith(("--local-registry-secret", "--local-registry-en"))]
    assert "--local-registry-insecure" not in args
    ca = flag(args, "--local-registry-ca")
    controller = find(docs, "Deployment", f"{FULLNAME}-controller")
    assert mounted_secret(controller, ca) == (secret, {"ca.crt"})  # never a key
    assert not [
        r for d in docs if d["kind"] == "Role" for r in d["rules"] if "secrets" in r["resources"]
        and "get" in r["verbs"] and r.get("resourceNames") != [f"{FULLNAME}-webhook-tls"]
    ]  # fmt: skip


def test_local_registry_with_cert_manager_and_a_node_name(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["local-registry-cert-manager"]
    certificate = find(docs, "Certificate", REGISTRY)
    assert certificate["spec"]["issuerRef"]["name"] == f"{FULLNAME}-ca"  # the webhook's CA
    assert set(certificate["spec"]["dnsNames"]) == {
        REGISTRY_SERVICE,
        f"{REGISTRY_SERVICE}.cluster.local",
        f"{REGISTRY}.{NS}",
        REGISTRY,
        "registry.imagestreams.internal",
    }
    deployment = find(docs, "Deployment", REGISTRY)
    secret, keys = mounted_secret(deployment, "/etc/registry/tls/tls.crt")
    assert keys == {"tls.crt", "tls.key"}
    assert secret == certificate["spec"]["secretName"] != f"{FULLNAME}-webhook-tls"
    args = controller_args(docs)
    # Image references name what nodes resolve; the controller pushes to the Service.
    assert flag(args, "--local-registry") == "registry.imagestreams.internal:5000"
    assert flag(args, "--local-registry-endpoint") == f"{REGISTRY_SERVICE}:5000"
    controller = find(docs, "Deployment", f"{FULLNAME}-controller")
    assert mounted_secret(controller, flag(args, "--local-registry-ca")) == (secret, {"ca.crt"})
    # Pushes from the controller, pulls from the nodes' addresses.
    policy = find(docs, "NetworkPolicy", REGISTRY)
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "https", "protocol": "TCP"}]
    controller_labels = controller["spec"]["template"]["metadata"]["labels"]
    pods, nodes = rule["from"]
    assert pods["podSelector"]["matchLabels"].items() <= controller_labels.items()
    assert nodes == {"ipBlock": {"cidr": "192.168.0.0/16"}}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


def test_local_registry_certificate_from_an_existing_issuer(tmp_path: Path) -> None:
    docs = render(
        {
            "certManager": {
                "enabled": True,
                "issuerRef": {"name": "corp", "kind": "ClusterIssuer"},
            },
            "localRegistry": {"enabled": True},
        },
        tmp_path,
    )
    issuer = find(docs, "Certificate", REGISTRY)["spec"]["issuerRef"]
    assert issuer == {"name": "corp", "kind": "ClusterIssuer"}


def test_external_local_registry(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["local-registry-external"]
    # Nothing deployed: no registry pod, Service, claim or certificate.
    assert not [d for d in docs if d["metadata"]["name"].startswith(REGISTRY)]
    assert "Certificate" not in kinds(docs)
    assert not [a for a in args_of(find(docs, "Job")) if a.startswith("--dns")]
    args = controller_args(docs)
    assert flag(args, "--local-registry") == "harbor.corp.example"
    assert flag(args, "--local-registry-secret") == f"{NS}/harbor-push"
    assert flag(args, "--history-limit") == "5"
    assert "--local-registry-insecure" not in args
    controller = find(docs, "Deployment", f"{FULLNAME}-controller")
    assert mounted_secret(controller, flag(args, "--local-registry-ca")) == ("corp-ca", {"ca.crt"})
    # RBAC: get on exactly that one Secret, by name, in its namespace.
    name = f"{FULLNAME}-controller-local-registry"
    role = find(docs, "Role", name)
    assert role["metadata"]["namespace"] == NS
    assert rules(docs, "Role", name) == [(("",), ("secrets",), ("get",), ("harbor-push",))]
    binding = find(docs, "RoleBinding", name)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{FULLNAME}-controller", "namespace": NS}
    ]


def test_external_local_registry_secret_in_another_namespace(tmp_path: Path) -> None:
    docs = render(
        {
            "localRegistry": {
                "enabled": True,
                "external": {"host": "10.0.0.5:5000", "secret": "infra/push", "insecure": True},
            }
        },
        tmp_path,
    )
    args = controller_args(docs)
    assert flag(args, "--local-registry-secret") == "infra/push"
    assert "--local-registry-insecure" in args
    assert not [a for a in args if a.startswith("--local-registry-ca")]  # the system's roots
    role = find(docs, "Role", f"{FULLNAME}-controller-local-registry")
    assert role["metadata"]["namespace"] == "infra"
    assert role["rules"][0]["resourceNames"] == ["push"]
    assert "local-registry-ca" not in str(find(docs, "Deployment", f"{FULLNAME}-controller"))
    # rbac.create=false: the same argument, and the role is the user's to grant.
    docs = render(
        {"rbac": {"create": False}, "localRegistry": {"enabled": True, "external": {
            "host": "r.example", "secret": "push"}}}, tmp_path,
    )  # fmt: skip
    assert flag(controller_args(docs), "--local-registry-secret") == f"{NS}/push"
    assert "Role" not in kinds(docs)


def test_local_registry_storage_options(tmp_path: Path) -> None:
    docs = render(
        {
            "localRegistry": {
                "enabled": True,
                "persistence": {"existingClaim": "registry-data"},
                "service": {"clusterIP": "10.96.0.50"},
                "tls": {"existingSecret": "my-registry-tls"},
                "image": {"digest": ""},
            }
        },
        tmp_path,
    )
    assert "PersistentVolumeClaim" not in kinds(docs)
    deployment = find(docs, "Deployment", REGISTRY)
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "storage"]
    assert volume["persistentVolumeClaim"]["claimName"] == "registry-data"
    assert pod_spec(deployment)["containers"][0]["image"] == "docker.io/library/registry:3.0.0"
    assert find(docs, "Service", REGISTRY)["spec"]["clusterIP"] == "10.96.0.50"
    # A certificate of the user's: certs-sync leaves the registry's names out.
    assert mounted_secret(deployment, "/etc/registry/tls/tls.crt")[0] == "my-registry-tls"
    assert not [a for a in args_of(find(docs, "Job")) if a.startswith("--dns")]
    controller = find(docs, "Deployment", f"{FULLNAME}-controller")
    ca = flag(controller_args(docs), "--local-registry-ca")
    assert mounted_secret(controller, ca) == ("my-registry-tls", {"ca.crt"})

    docs = render(
        {"localRegistry": {"enabled": True, "persistence": {"storageClass": "-", "size": "5Gi",
         "keepOnUninstall": False}}}, tmp_path,
    )  # fmt: skip
    pvc = find(docs, "PersistentVolumeClaim", REGISTRY)
    assert pvc["spec"]["storageClassName"] == ""  # a pre-provisioned volume, no class
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert "annotations" not in pvc["metadata"]


def test_local_registry_needs_the_controller(tmp_path: Path) -> None:
    proc = helm(
        "template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, "-f",
        values_file({"controller": {"enabled": False}, "localRegistry": {"enabled": True}},
                    tmp_path), check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "localRegistry.enabled needs controller.enabled" in proc.stderr


# --- bad values, versions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"webhook": {"failurePolicy": "Sometimes"}},
         "at '/webhook/failurePolicy': value must be one of 'Ignore', 'Fail'"),
        ({"webhook": {"timeoutSeconds": 31}}, "at '/webhook/timeoutSeconds': maximum"),
        ({"webhook": {"replicas": 0}}, "at '/webhook/replicas': minimum"),
        ({"webhook": {"failurPolicy": "Fail"}}, "additional properties 'failurPolicy'"),
        ({"webhook": {"name": "imagestreams"}}, "at '/webhook/name'"),
        ({"webhook": {"admissionReviewVersions": ["v1beta1"]}}, "/webhook/admissionReviewVersions"),
        ({"image": {"digest": "latest"}}, "at '/image/digest'"),
        ({"certsSync": {"rotateBefore": "soon"}}, "at '/certsSync/rotateBefore'"),
        ({"certManager": {"enabled": "yes"}}, "at '/certManager/enabled'"),
        ({"certManager": {"issuerRef": {"kind": "Issuer"}}}, "/certManager/issuerRef"),
        ({"controller": {"leaderElection": {"enabled": False}}},
         "at '/controller/replicas': maximum"),
        ({"controller": {"globalPullSecret": "no-namespace"}}, "/controller/globalPullSecret"),
        ({"webhook": {"securePort": 443}}, "at '/webhook/securePort': minimum"),
        ({"webhook": {"port": 8443}}, "additional properties 'port'"),
        ({"webhook": {"dnsPolicy": "ClusterFirstWithHostnet"}}, "at '/webhook/dnsPolicy'"),
        ({"webhook": {"matchConditions": [{"name": "x"}]}}, "/webhook/matchConditions/0"),
        ({"localRegistry": {"historyLimit": 0}}, "at '/localRegistry/historyLimit': minimum"),
        ({"localRegistry": {"host": "10.0.0.1:5000"}}, "at '/localRegistry/host'"),
        ({"localRegistry": {"host": "registry.example"}}, "at '/localRegistry/host'"),
        ({"localRegistry": {"external": {"secret": "a/b/c"}}}, "/localRegistry/external/secret"),
        ({"localRegistry": {"external": {"host": "https://r.example"}}},
         "/localRegistry/external/host"),
        ({"localRegistry": {"image": {"tag": "", "digest": ""}}}, "/localRegistry/image"),
        ({"localRegistry": {"persistence": {"size": "lots"}}}, "/localRegistry/persistence/size"),
        ({"localRegistry": {"enabled": True, "extra": 1}}, "additional properties 'extra'"),
        ({"controller": {"triggers": {"enabled": "no"}}}, "at '/controller/triggers/enabled'"),
        ({"controller": {"triggers": {"admissionPolicy": 1}}},
         "at '/controller/triggers/admissionPolicy'"),
        ({"controller": {"triggers": {"enable": False}}}, "additional properties 'enable'"),
        ({"controller": {"registryCAs": [{"configMap": "a", "secret": "b", "key": "ca.crt"}]}},
         "/controller/registryCAs/0"),
        ({"controller": {"registryCAs": [{"configMap": "a"}]}}, "/controller/registryCAs/0"),
        ({"controller": {"proxy": {"https": "proxy.corp:3128"}}}, "/controller/proxy/https"),
        ({"controller": {"proxy": {"noProxy": "a,b"}}}, "/controller/proxy/noProxy"),
    ],
)  # fmt: skip
def test_bad_values_are_rejected_with_their_path(values: Doc, message: str, tmp_path: Path) -> None:
    proc = helm(
        "template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION,
        "-f", values_file(values, tmp_path), check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


def test_controller_without_leader_election_and_one_replica(tmp_path: Path) -> None:
    docs = render({"controller": {"replicas": 1, "leaderElection": {"enabled": False}}}, tmp_path)
    args = args_of(find(docs, "Deployment", f"{FULLNAME}-controller"))
    assert "--no-leader-elect" in args
    assert not [d for d in docs if d["metadata"]["name"].endswith("leader-election")]


@pytest.mark.parametrize("version", ["1.29.15", "1.29.4-eks-036c24b", "1.27.0"])
def test_kubernetes_older_than_1_30_is_refused(version: str) -> None:
    """The admission policies that fence the controller and certs-sync need 1.30: older
    clusters are refused rather than installed without them."""
    proc = helm("template", RELEASE, str(CHART), "--kube-version", version, check=False)
    assert proc.returncode != 0
    assert "chart requires kubeVersion: >=1.30.0-0" in proc.stderr


def test_helm_assumes_the_kubernetes_version_we_run(tmp_path: Path) -> None:
    """hack/tools.sh builds helm with the Kubernetes-version flags of helm's release builds,
    set to the version of our control plane, so `helm template` without --kube-version
    renders for it (a plain `go install` assumes 1.20, which the chart refuses)."""
    tools = (ROOT / "hack" / "tools.sh").read_text()
    (kube,) = re.findall(r"^KUBE_VERSION=v(\d+\.\d+)\.\d+$", tools, re.MULTILINE)
    probe = tmp_path / "probe"
    (probe / "templates").mkdir(parents=True)
    (probe / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (probe / "templates" / "v.yaml").write_text(
        "kind: Probe\nversion: '{{ .Capabilities.KubeVersion.Major }}."
        "{{ .Capabilities.KubeVersion.Minor }}'\n"
    )
    (doc,) = yaml.safe_load_all(helm("template", str(probe)).stdout)
    assert doc["version"] == kube
    helm("template", RELEASE, str(CHART))  # kubeVersion >=1.30 is met without the flag


def test_kubernetes_1_30_gets_every_admission_policy(tmp_path: Path) -> None:
    # Managed clusters report pre-release style versions; they are accepted.
    for version in ("1.30.0", "1.30.4-eks-036c24b"):
        docs = render({}, tmp_path, version)
        policies = {d["metadata"]["name"] for d in docs if d["kind"] == "ValidatingAdmissionPolicy"}
        assert policies == {
            f"{FULLNAME}-controller-triggers",
            f"{FULLNAME}-controller-namespaces",
            f"{FULLNAME}-certs-sync",
        }


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["kubeVersion"] == ">=1.30.0-0"
    assert chart["appVersion"]
    # Helm installs crds/ once and never upgrades it: the CRDs are templates instead.
    assert not (CHART / "crds").exists()
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    # Every top-level value is described by the schema.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


def test_crds_are_rendered_from_their_files_and_kept(defaults: list[Doc]) -> None:
    """One source for each CRD (files/crds/, which tests and hack/ read as plain YAML): the
    chart renders it unchanged but for its labels, and Helm never deletes it."""
    files = {}
    for path in sorted((CHART / "files" / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        files[crd["metadata"]["name"]] = crd
    assert set(files) == {"imagestreams.image.openshift.io", "imagepolicies.imagestreams.io"}
    rendered = [d for d in defaults if d["kind"] == "CustomResourceDefinition"]
    assert {d["metadata"]["name"] for d in rendered} == set(files)
    for crd in rendered:
        source = files[crd["metadata"]["name"]]
        assert crd["spec"] == source["spec"]
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert source["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()


def test_crds_can_be_left_to_the_user(tmp_path: Path) -> None:
    docs = render({"crds": {"install": False}}, tmp_path)
    assert "CustomResourceDefinition" not in kinds(docs)
    assert "MutatingWebhookConfiguration" in kinds(docs)


def test_helm_test_checks_readyz_over_tls_through_the_service(defaults: list[Doc]) -> None:
    """`helm test`: the product image calls the Service's DNS name on its port, trusting
    only the CA of the webhook's Secret (never mounting the serving key)."""
    (pod,) = [d for d in defaults if d["kind"] == "Pod" and is_test_hook(d)]
    assert pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == (
        "before-hook-creation,hook-succeeded"
    )
    spec = pod_spec(pod)
    assert spec["restartPolicy"] == "Never"
    (container,) = spec["containers"]
    deployment = find(defaults, "Deployment", f"{FULLNAME}-webhook")
    assert container["image"] == pod_spec(deployment)["containers"][0]["image"]
    assert container["command"][-1] == f"https://{FULLNAME}-webhook.{NS}.svc:443/readyz"
    (ca,) = [v for v in spec["volumes"] if v["name"] == "ca"]
    assert ca["secret"]["secretName"] == f"{FULLNAME}-webhook-tls"
    assert ca["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "ca")
    assert f'"{mount["mountPath"]}/ca.crt"' in container["command"][2]
    assert "create_default_context(cafile=ca)" in container["command"][2]


def test_artifacthub_lists_every_crd() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    listed = yaml.safe_load(chart["annotations"]["artifacthub.io/crds"])
    files = [yaml.safe_load(p.read_text()) for p in (CHART / "files" / "crds").glob("*.yaml")]
    assert sorted((c["kind"], c["version"], c["name"]) for c in listed) == sorted(
        (f["spec"]["names"]["kind"], f["spec"]["versions"][0]["name"], f["metadata"]["name"])
        for f in files
    )
    assert all(c["description"] for c in listed)
    assert chart["annotations"]["artifacthub.io/license"] == "Apache-2.0"
    assert (CHART / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()


def test_the_packaged_chart_keeps_crds_tests_license_and_readme(tmp_path: Path) -> None:
    """`helm package` applies .helmignore: what is published still renders the CRDs and the
    `helm test` pod, and carries the license and the README."""
    helm("package", str(CHART), "-d", str(tmp_path))
    (archive,) = tmp_path.glob("imagestreams-*.tgz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"imagestreams/LICENSE", "imagestreams/README.md"} <= names
    docs = [d for d in yaml.safe_load_all(helm("template", RELEASE, str(archive)).stdout) if d]
    assert len([d for d in docs if d["kind"] == "CustomResourceDefinition"]) == 2
    assert [d for d in docs if d["kind"] == "Pod" and is_test_hook(d)]


CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


def test_ci_value_sets_exist() -> None:
    assert {p.name for p in CI_VALUES} >= {"defaults-values.yaml", "host-network-values.yaml"}


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda p: p.name)
def test_ci_value_sets_lint_and_render(path: Path) -> None:
    """Each ci/ set passes `helm lint --strict` and renders (the e2e tier sends the result
    to a real API server: tests/e2e/test_chart_e2e.py)."""
    proc = helm("lint", "--strict", str(CHART), "-f", str(path))
    assert "0 chart(s) failed" in proc.stdout
    out = helm("template", RELEASE, str(CHART), "-n", NS, "-f", str(path)).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert "MutatingWebhookConfiguration" in kinds(docs)


def test_every_component_logs_json_by_default(defaults: list[Doc]) -> None:
    commands = []
    for doc in defaults:
        if doc.get("kind") not in ("Deployment", "Job"):
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if "imagestreams/imagestreams" not in container["image"]:
                continue  # not the project's own CLI
            args = container["args"]
            commands.append(args[0])
            assert "--log-format=json" in args, doc["metadata"]["name"]
    assert {"serve", "controller", "certs-sync"} <= set(commands)
