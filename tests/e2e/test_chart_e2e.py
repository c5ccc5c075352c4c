"""The Helm chart against a real kube-apiserver: install (Pod Security `restricted`
enforced), server-side dry runs of every option's rendering, RBAC as each service account
sees it, the webhook and the controller run on loopback under their chart service accounts,
certificates made by certs-sync under its own, the admission policies that fence certs-sync
and the controller (the controller's image triggers run through theirs), the switch that turns
triggers off, the example app chart resolved at install and upgrade, and uninstall.

There is no kubelet: the chart's pods are created and stay Pending. So
- the chart is installed with `--no-hooks` (Helm would wait for the certs-sync hook Job,
  which never runs), and the test runs `imagestreams certs-sync` itself, authenticated as the
  chart's certs-sync service account, to show that its RBAC is enough;
- the example app is resolved by the session's webhook (hack/localcluster.py, running on
  loopback), since the chart's webhook pods cannot serve. The chart's own webhook
  configuration is installed with a namespaceSelector that only a labelled namespace
  matches, so it does not slow down the other tests; one test labels a namespace to show
  that its default failurePolicy (Ignore) lets requests through while it is unreachable.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from clusterkit import Image, push_image, server_dry_run, stop_group
from cryptography import x509
from localcluster import Cluster, free_ports, http_ok, tool

from webhook.model.triggers import TRIGGERS_ANNOTATION, Trigger, field_path_for, triggers_json

if TYPE_CHECKING:
    from clusterkit import Namespace

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "imagestreams"
APP_CHART = ROOT / "examples" / "keycloak-app"
NS = "imagestreams-system"
RELEASE = "isc"
FULLNAME = f"{RELEASE}-imagestreams"
WEBHOOK_SA = f"{FULLNAME}-webhook"
CONTROLLER_SA = f"{FULLNAME}-controller"
CERTS_SA = f"{FULLNAME}-certs-sync"
TLS_SECRET = f"{FULLNAME}-webhook-tls"
CHART_WEBHOOK_LABEL = "imagestreams-e2e/chart-webhook"
CRD = "imagestreams.image.openshift.io"
KUBE_VERSION = "1.34.0"
TRIGGERS_FENCE = f"{CONTROLLER_SA}-triggers"
# The chart's webhook only sees namespaces carrying this label (see the module docstring).
INSTALL_VALUES = {"webhook": {"namespaceSelector": {"matchLabels": {CHART_WEBHOOK_LABEL: "on"}}}}


def helm(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(tool("helm")), *args], capture_output=True, text=True, env=cluster.env, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def get_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def exists(cluster: Cluster, *args: str) -> bool:
    return cluster.kubectl("get", *args, check=False).returncode == 0


def values_file(tmp: Path, values: dict[str, Any]) -> str:
    path = tmp / f"values-{len(list(tmp.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def restricted_namespace(cluster: Cluster) -> None:
    """The release namespace, with Pod Security Admission enforcing `restricted`: the API
    server itself then rejects any pod of the chart that is not."""
    cluster.ensure_namespace(NS)
    cluster.kubectl(
        "label", "namespace", NS, "--overwrite",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )  # fmt: skip


@dataclass(frozen=True)
class Install:
    cluster: Cluster
    notes: str
    values: str


@pytest.fixture(scope="module")
def installed(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    tmp = tmp_path_factory.mktemp("chart")
    restricted_namespace(cluster)
    values = values_file(tmp, INSTALL_VALUES)
    # The session applied the CRDs with kubectl, as chart 0.1.0 did from crds/ (no Helm
    # ownership): --take-ownership is how such a cluster moves to CRDs the chart upgrades.
    proc = helm(
        cluster, "install", RELEASE, str(CHART), "-n", NS, "-f", values, "--no-hooks",
        "--take-ownership",
    )  # fmt: skip
    yield Install(cluster, proc.stdout, values)
    helm(cluster, "uninstall", RELEASE, "-n", NS, "--ignore-not-found", "--no-hooks")


# --- install -------------------------------------------------------------------------------


def test_install_creates_crd_rbac_service_and_webhook(installed: Install) -> None:
    cluster = installed.cluster
    crd = get_json(cluster, "crd", CRD)
    assert crd["spec"]["names"]["kind"] == "ImageStream"
    # The release owns the CRDs from now on (upgrades reach them); Helm never deletes them.
    annotations = crd["metadata"]["annotations"]
    assert annotations["meta.helm.sh/release-name"] == RELEASE
    assert annotations["helm.sh/resource-policy"] == "keep"
    for kind, name in [
        ("clusterrole", WEBHOOK_SA),
        ("clusterrole", CONTROLLER_SA),
        ("clusterrole", f"{CONTROLLER_SA}-pull-secrets"),
        ("clusterrole", CERTS_SA),
        ("clusterrolebinding", WEBHOOK_SA),
        ("clusterrolebinding", CONTROLLER_SA),
        ("clusterrolebinding", f"{CONTROLLER_SA}-pull-secrets"),
        ("clusterrolebinding", CERTS_SA),
        ("validatingadmissionpolicy", CERTS_SA),
        ("validatingadmissionpolicybinding", CERTS_SA),
        ("validatingadmissionpolicy", f"{CONTROLLER_SA}-namespaces"),
        ("validatingadmissionpolicybinding", f"{CONTROLLER_SA}-namespaces"),
        ("validatingadmissionpolicy", TRIGGERS_FENCE),
        ("validatingadmissionpolicybinding", TRIGGERS_FENCE),
    ]:
        assert exists(cluster, kind, name), f"{kind} {name}"
    for kind, name in [
        ("serviceaccount", WEBHOOK_SA),
        ("serviceaccount", CONTROLLER_SA),
        ("serviceaccount", CERTS_SA),
        ("role", f"{CONTROLLER_SA}-leader-election"),
        ("role", CERTS_SA),
        ("rolebinding", f"{CONTROLLER_SA}-leader-election"),
        ("rolebinding", CERTS_SA),
        ("deployment", WEBHOOK_SA),
        ("deployment", CONTROLLER_SA),
        ("deployment", CERTS_SA),
        ("poddisruptionbudget", WEBHOOK_SA),
        ("service", f"{CONTROLLER_SA}-metrics"),
    ]:
        assert exists(cluster, kind, name, "-n", NS), f"{kind} {NS}/{name}"
    service = get_json(cluster, "service", WEBHOOK_SA, "-n", NS)
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(443, "https")]

    # kube-controller-manager creates the pods (they stay Pending: no kubelet), and Pod
    # Security Admission, enforcing `restricted` in the namespace, admits every one.
    def pods(component: str) -> int:
        selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"
        return len(get_json(cluster, "pods", "-n", NS, "-l", selector)["items"])

    cluster.wait(
        "the chart's pods to be created",
        lambda: (pods("webhook"), pods("controller"), pods("certs-sync")) == (2, 2, 1),
        timeout=60,
    )

    (webhook,) = get_json(cluster, "mutatingwebhookconfiguration", FULLNAME)["webhooks"]
    assert webhook["clientConfig"]["service"] == {
        "name": WEBHOOK_SA,
        "namespace": NS,
        "path": "/mutate",
        "port": 443,
    }
    assert (webhook["failurePolicy"], webhook["timeoutSeconds"]) == ("Ignore", 5)
    assert (webhook["reinvocationPolicy"], webhook["sideEffects"]) == ("IfNeeded", "None")
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert {r for rule in webhook["rules"] for r in rule["resources"]} >= {
        "pods",
        "pods/ephemeralcontainers",
        "deployments",
        "cronjobs",
    }
    policy = get_json(cluster, "validatingwebhookconfiguration", FULLNAME)["webhooks"]
    assert [(w["name"], w["failurePolicy"]) for w in policy] == [
        ("enforce.policy.imagestreams.io", "Fail"),
        ("policy.imagestreams.io", "Ignore"),
    ]
    assert {w["clientConfig"]["service"]["path"] for w in policy} == {"/validate"}


def test_install_notes_say_what_to_do_next(installed: Install) -> None:
    notes = installed.notes
    assert f"kubectl -n {NS} rollout status deployment/{WEBHOOK_SA}" in notes
    assert "kind: ImageStream" in notes and "local: true" in notes
    assert "kubectl -n demo create deployment mykeycloak --image keycloak:20.0" in notes


# Documents whose CRDs this cluster does not have (cert-manager, prometheus-operator).
FOREIGN_GROUPS = ("cert-manager.io/", "monitoring.coreos.com/")
DRY_RUN_SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "network-policy": {
        "networkPolicy": {"enabled": True, "webhookFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}
    },
    "failure-policy-fail": {"webhook": {"failurePolicy": "Fail", "timeoutSeconds": 10}},
    "pull-secret-namespaces": {
        "controller": {"pullSecretNamespaces": ["default"], "globalPullSecret": "kube-public/x"}
    },
    "no-controller": {"controller": {"enabled": False}},
    "no-triggers": {"controller": {"triggers": {"enabled": False}}},
    "cert-manager": {"certManager": {"enabled": True}},
    "service-monitor": {"serviceMonitor": {"enabled": True}},
    "everything": {
        "networkPolicy": {"enabled": True},
        "webhook": {"replicas": 3, "podDisruptionBudget": {"minAvailable": 2}},
        "image": {"digest": "sha256:" + "ab" * 32},
    },
}


@pytest.mark.parametrize("scenario", list(DRY_RUN_SCENARIOS))
def test_rendered_manifests_pass_server_side_dry_run(
    cluster: Cluster, scenario: str, tmp_path: Path
) -> None:
    """The API server validates every object (schema, defaulting, admission) of each
    option's rendering against Kubernetes 1.34, strictly (unknown fields fail); Pod Security
    Admission warns about any pod template that is not `restricted`."""
    restricted_namespace(cluster)
    values = values_file(tmp_path, DRY_RUN_SCENARIOS[scenario])
    rendered = helm(
        cluster, "template", "dry", str(CHART), "-n", NS, "--kube-version", KUBE_VERSION,
        "-f", values,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    foreign = {d["kind"] for d in docs if d["apiVersion"].startswith(FOREIGN_GROUPS)}
    assert foreign <= {"Issuer", "Certificate", "ServiceMonitor"}
    proc = server_dry_run(cluster, own_objects(rendered))
    assert "PodSecurity" not in proc.stderr, proc.stderr


def own_objects(rendered: str) -> list[dict[str, Any]]:
    """A rendering's objects but those of foreign groups (cert-manager, the Prometheus
    Operator), whose CRDs this API server does not have."""
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    return [d for d in docs if not d["apiVersion"].startswith(FOREIGN_GROUPS)]


CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
HOST_NETWORK_NS = "imagestreams-host"


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda p: p.name)
def test_ci_value_sets_pass_server_side_dry_run(cluster: Cluster, path: Path) -> None:
    """charts/imagestreams/ci/: what chart-testing would install, validated by the API
    server (strictly, and by Pod Security). The host-network set goes to a namespace
    labelled privileged, as docs/install.md asks: `restricted` refuses host networking."""
    host_network = "hostNetwork: true" in path.read_text()
    namespace = HOST_NETWORK_NS if host_network else NS
    if host_network:
        cluster.ensure_namespace(namespace)
        cluster.kubectl("label", "namespace", namespace, "--overwrite",
                        "pod-security.kubernetes.io/enforce=privileged")  # fmt: skip
    else:
        restricted_namespace(cluster)
    rendered = helm(cluster, "template", "ci", str(CHART), "-n", namespace, "-f", str(path)).stdout
    proc = server_dry_run(cluster, own_objects(rendered))
    assert "PodSecurity" not in proc.stderr, proc.stderr
    if host_network:
        restricted_namespace(cluster)
        rendered = helm(cluster, "template", "ci", str(CHART), "-n", NS, "-f", str(path)).stdout
        proc = server_dry_run(cluster, own_objects(rendered))
        assert "host namespaces (hostNetwork=true)" in proc.stderr, proc.stderr


def test_pod_security_check_is_not_vacuous(cluster: Cluster, tmp_path: Path) -> None:
    """The same dry run reports a container security context weakened through the values."""
    restricted_namespace(cluster)
    values = values_file(tmp_path, {"containerSecurityContext": {"allowPrivilegeEscalation": True}})
    rendered = helm(
        cluster, "template", "weak", str(CHART), "-n", NS, "--kube-version", KUBE_VERSION,
        "-f", values, "--show-only", "templates/webhook-deployment.yaml",
    ).stdout  # fmt: skip
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert 'would violate PodSecurity "restricted:latest"' in proc.stderr, proc.stderr
    assert "allowPrivilegeEscalation != false" in proc.stderr


# --- RBAC as each service account sees it ----------------------------------------------------

YES, NO = True, False
CAN_I: list[tuple[str, bool, tuple[str, ...]]] = [
    # webhook: reads ImageStreams, ImagePolicies and Namespaces, nothing else
    (WEBHOOK_SA, YES, ("list", "imagestreams.image.openshift.io", "-A")),
    (WEBHOOK_SA, YES, ("watch", "imagepolicies.imagestreams.io")),
    (WEBHOOK_SA, YES, ("watch", "namespaces")),
    (WEBHOOK_SA, NO, ("patch", "namespaces")),
    (WEBHOOK_SA, NO, ("update", "imagepolicies.imagestreams.io")),
    (WEBHOOK_SA, YES, ("watch", "imagestreams.image.openshift.io", "-A")),
    (WEBHOOK_SA, YES, ("get", "imagestreams.image.openshift.io", "-n", "default")),
    (WEBHOOK_SA, NO, ("update", "imagestreams.image.openshift.io", "-n", "default")),
    (WEBHOOK_SA, NO, ("list", "secrets", "-A")),
    (WEBHOOK_SA, NO, ("get", f"secrets/{TLS_SECRET}", "-n", NS)),
    (WEBHOOK_SA, NO, ("list", "pods", "-n", "default")),
    # controller: streams, their status, pull secrets (list only), events, leases, triggers
    (CONTROLLER_SA, YES, ("list", "imagestreams.image.openshift.io", "-A")),
    (CONTROLLER_SA, YES, ("watch", "imagestreams.image.openshift.io", "-A")),
    (CONTROLLER_SA, YES, ("update", "imagestreams.image.openshift.io", "--subresource=status",
                          "-n", "default")),
    (CONTROLLER_SA, NO, ("update", "imagestreams.image.openshift.io", "-n", "default")),
    (CONTROLLER_SA, NO, ("delete", "imagestreams.image.openshift.io", "-n", "default")),
    (CONTROLLER_SA, YES, ("list", "secrets", "-n", "default")),
    (CONTROLLER_SA, NO, ("get", "secrets", "-n", "default")),
    (CONTROLLER_SA, NO, ("watch", "secrets", "-n", "default")),
    (CONTROLLER_SA, NO, ("create", "secrets", "-n", "default")),
    (CONTROLLER_SA, NO, ("update", "secrets", "-n", "default")),
    (CONTROLLER_SA, NO, ("patch", "secrets", "-n", "default")),
    (CONTROLLER_SA, NO, ("delete", "secrets", "-n", "default")),
    (CONTROLLER_SA, NO, ("create", "secrets", "-n", NS)),
    (CONTROLLER_SA, YES, ("create", "events", "-n", "default")),
    (CONTROLLER_SA, YES, ("patch", "events", "-n", "default")),
    (CONTROLLER_SA, YES, ("create", "subjectaccessreviews.authorization.k8s.io")),
    (CONTROLLER_SA, YES, ("get", f"leases.coordination.k8s.io/{CONTROLLER_SA}", "-n", NS)),
    (CONTROLLER_SA, YES, ("update", f"leases.coordination.k8s.io/{CONTROLLER_SA}", "-n", NS)),
    (CONTROLLER_SA, YES, ("create", "leases.coordination.k8s.io", "-n", NS)),
    (CONTROLLER_SA, NO, ("update", "leases.coordination.k8s.io/other", "-n", NS)),
    (CONTROLLER_SA, NO, ("create", "leases.coordination.k8s.io", "-n", "default")),
    (CONTROLLER_SA, NO, ("delete", f"leases.coordination.k8s.io/{CONTROLLER_SA}", "-n", NS)),
    (CONTROLLER_SA, YES, ("watch", "imagepolicies.imagestreams.io")),
    (CONTROLLER_SA, YES, ("patch", "namespaces")),  # one label only: see the policy test
    (CONTROLLER_SA, NO, ("create", "namespaces")),
    (CONTROLLER_SA, NO, ("delete", "namespaces")),
    (CONTROLLER_SA, NO, ("update", "imagepolicies.imagestreams.io")),
    (CONTROLLER_SA, YES, ("patch", "deployments.apps", "-n", "default")),
    (CONTROLLER_SA, YES, ("patch", "statefulsets.apps", "-n", "default")),
    (CONTROLLER_SA, YES, ("patch", "daemonsets.apps", "-n", "default")),
    (CONTROLLER_SA, YES, ("patch", "cronjobs.batch", "-n", "default")),
    (CONTROLLER_SA, NO, ("create", "deployments.apps", "-n", "default")),
    (CONTROLLER_SA, NO, ("delete", "deployments.apps", "-n", "default")),
    (CONTROLLER_SA, NO, ("update", "deployments.apps", "-n", "default")),
    (CONTROLLER_SA, NO, ("create", "pods", "-n", "default")),
    (CONTROLLER_SA, NO, ("impersonate", "serviceaccounts", "-n", "default")),
    (CONTROLLER_SA, NO, ("escalate", "clusterroles.rbac.authorization.k8s.io")),
    # certs-sync: its one Secret, its one webhook configuration
    (CERTS_SA, YES, ("get", f"secrets/{TLS_SECRET}", "-n", NS)),
    (CERTS_SA, YES, ("update", f"secrets/{TLS_SECRET}", "-n", NS)),
    (CERTS_SA, YES, ("create", "secrets", "-n", NS)),  # unlimited by RBAC: see the policy test
    (CERTS_SA, NO, ("get", "secrets/other", "-n", NS)),
    (CERTS_SA, NO, ("update", "secrets/other", "-n", NS)),
    (CERTS_SA, NO, ("list", "secrets", "-n", NS)),
    (CERTS_SA, NO, ("delete", f"secrets/{TLS_SECRET}", "-n", NS)),
    (CERTS_SA, NO, ("create", "secrets", "-n", "default")),
    (CERTS_SA, NO, ("list", "secrets", "-A")),
    (CERTS_SA, YES, ("get", f"services/{WEBHOOK_SA}", "-n", NS)),
    (CERTS_SA, NO, ("update", f"services/{WEBHOOK_SA}", "-n", NS)),
    (CERTS_SA, YES, ("patch", f"mutatingwebhookconfigurations/{FULLNAME}")),
    (CERTS_SA, YES, ("get", f"mutatingwebhookconfigurations/{FULLNAME}")),
    (CERTS_SA, YES, ("patch", f"validatingwebhookconfigurations/{FULLNAME}")),
    (CERTS_SA, NO, ("patch", "mutatingwebhookconfigurations/imagestreams")),
    (CERTS_SA, NO, ("delete", f"mutatingwebhookconfigurations/{FULLNAME}")),
    (CERTS_SA, NO, ("create", "mutatingwebhookconfigurations")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("account", "expected", "args"),
    CAN_I,
    ids=[f"{a.removeprefix(FULLNAME + '-')}-{'yes' if e else 'no'}-{'-'.join(x[:3])}"
         for a, e, x in CAN_I],
)  # fmt: skip
def test_service_account_can_i(
    installed: Install, account: str, expected: bool, args: tuple[str, ...]
) -> None:
    user = f"system:serviceaccount:{NS}:{account}"
    proc = installed.cluster.kubectl("auth", "can-i", *args, "--as", user, check=False)
    answer = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else proc.stderr
    assert answer == ("yes" if expected else "no"), f"{user} can-i {' '.join(args)}: {answer}"


@pytest.mark.parametrize("account", [WEBHOOK_SA, CONTROLLER_SA, CERTS_SA])
def test_no_service_account_holds_a_wildcard(installed: Install, account: str) -> None:
    cluster = installed.cluster
    user = f"system:serviceaccount:{NS}:{account}"
    assert cluster.kubectl("auth", "can-i", "*", "*", "--as", user, check=False).returncode
    for namespace in (NS, "default"):
        listing = cluster.kubectl("auth", "can-i", "--list", "-n", namespace, "--as", user)
        for line in listing.stdout.splitlines()[1:]:
            resource, _, rest = line.partition(" ")
            verbs = rest.rsplit("[", 1)[-1].rstrip("]").split()
            assert "*" not in verbs, line
            assert resource not in {"*", "*.*"}, line
        secrets = [ln for ln in listing.stdout.splitlines() if ln.startswith("secrets ")]
        for line in secrets:
            verbs = set(line.rsplit("[", 1)[-1].rstrip("]").split())
            allowed = {"list"} if account == CONTROLLER_SA else {"get", "update", "create"}
            assert verbs <= allowed, line


# --- the components, run on loopback under the chart's service accounts ---------------------


@contextlib.contextmanager
def running(cluster: Cluster, args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`imagestreams ARGS` in its own process group, stopped (the group) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(cluster.imagestreams_bin), *args],
            stdout=out, stderr=subprocess.STDOUT, env=cluster.env, start_new_session=True,
        )  # fmt: skip
    try:
        yield proc
    finally:
        stop_group(proc, 15)


def test_webhook_becomes_ready_as_its_service_account(installed: Install, tmp_path: Path) -> None:
    """The webhook's RBAC is enough for its watches: /readyz answers 200 only once every
    index has listed its objects."""
    cluster = installed.cluster
    kubeconfig = token_kubeconfig(cluster, WEBHOOK_SA, tmp_path / "webhook.kubeconfig")
    certs = tmp_path / "certs"
    subprocess.run(
        [str(cluster.imagestreams_bin), "certs", "--out-dir", str(certs), "--ip", "127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    (port,) = free_ports(["webhook"]).values()
    log = tmp_path / "webhook.log"
    args = [
        "serve", "--bind", f"127.0.0.1:{port}", "--kubeconfig", str(kubeconfig), "--workers", "1",
        "--certfile", str(certs / "tls.crt"), "--keyfile", str(certs / "tls.key"),
    ]  # fmt: skip
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    with running(cluster, args, log) as proc:
        cluster.wait(
            "the webhook to be ready as its service account",
            lambda: proc.poll() is None and http_ok(f"https://127.0.0.1:{port}/readyz", context),
            timeout=60,
        )
    assert "forbidden" not in log.read_text().lower(), log.read_text()


def test_controller_leads_as_its_service_account(installed: Install, tmp_path: Path) -> None:
    """The controller's RBAC is enough to take its Lease and serve metrics."""
    cluster = installed.cluster
    kubeconfig = token_kubeconfig(cluster, CONTROLLER_SA, tmp_path / "controller.kubeconfig")
    (port,) = free_ports(["metrics"]).values()
    log = tmp_path / "controller.log"
    args = [
        "controller", "--kubeconfig", str(kubeconfig), "--workers", "1",
        "--leader-elect", "--lease-name", CONTROLLER_SA, "--lease-namespace", NS,
        "--metrics-bind", f"127.0.0.1:{port}",
        # As the session's own controller does: streams of other tests name this registry.
        "--allow-registry", cluster.registry,
    ]  # fmt: skip

    def holder() -> str:
        proc = cluster.kubectl(
            "get", "lease", CONTROLLER_SA, "-n", NS, "-o", "jsonpath={.spec.holderIdentity}",
            check=False,
        )  # fmt: skip
        return proc.stdout.strip() if proc.returncode == 0 else ""

    with running(cluster, args, log) as proc:
        cluster.wait(
            "the controller to take its Lease",
            lambda: proc.poll() is None and bool(holder()),
            timeout=60,
        )
        assert http_ok(f"http://127.0.0.1:{port}/metrics")
    assert "forbidden" not in log.read_text().lower(), log.read_text()


# --- certificates, made by certs-sync as its own service account ----------------------------


def token_kubeconfig(cluster: Cluster, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as `account` with a short-lived token."""
    token = cluster.kubectl("create", "token", account, "-n", NS, "--duration=10m").stdout
    ca = base64.b64encode((cluster.pki / "ca.crt").read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": cluster.apiserver_url, "certificate-authority-data": ca},
            }
        ],
        "users": [{"name": account, "user": {"token": token.strip()}}],
        "contexts": [
            {"name": "sa", "context": {"cluster": "local", "user": account, "namespace": NS}}
        ],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def certs_sync(cluster: Cluster, kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(cluster.imagestreams_bin), "certs-sync", "--kubeconfig", str(kubeconfig),
            "--secret", f"{NS}/{TLS_SECRET}", "--webhook", FULLNAME, "--service", WEBHOOK_SA,
            "-n", NS, "--once",
        ],
        capture_output=True, text=True, env={**cluster.env, "KUBECONFIG": str(kubeconfig)},
        timeout=60,
    )  # fmt: skip


def secret_data(cluster: Cluster) -> tuple[dict[str, Any], dict[str, bytes]]:
    secret = get_json(cluster, "secret", TLS_SECRET, "-n", NS)
    return secret, {k: base64.b64decode(v) for k, v in secret["data"].items()}


def ca_bundle(cluster: Cluster) -> bytes:
    """The caBundle of every webhook, mutating and validating: one value, or a failure."""
    bundles = {
        base64.b64decode(webhook["clientConfig"].get("caBundle", ""))
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration")
        for webhook in get_json(cluster, kind, FULLNAME)["webhooks"]
    }
    assert len(bundles) == 1, bundles
    return bundles.pop()


def test_certs_sync_as_its_service_account(installed: Install, tmp_path: Path) -> None:
    cluster = installed.cluster
    kubeconfig = token_kubeconfig(cluster, CERTS_SA, tmp_path / "certs-sync.kubeconfig")
    first = certs_sync(cluster, kubeconfig)
    assert first.returncode == 0, first.stderr
    assert "created (no certificate yet)" in first.stderr
    assert (
        f"caBundle updated in MutatingWebhookConfiguration/{FULLNAME}, "
        f"ValidatingWebhookConfiguration/{FULLNAME}" in first.stderr
    )

    secret, data = secret_data(cluster)
    assert secret["type"] == "kubernetes.io/tls"
    service = get_json(cluster, "service", WEBHOOK_SA, "-n", NS)
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Service",
        WEBHOOK_SA,
        service["metadata"]["uid"],
    )
    leaf = x509.load_pem_x509_certificate(data["tls.crt"])
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(data["ca.crt"]))
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{WEBHOOK_SA}.{NS}.svc" in names.get_values_for_type(x509.DNSName)
    assert ca_bundle(cluster) == data["ca.crt"]

    # A second pass finds everything valid and writes nothing.
    version = secret["metadata"]["resourceVersion"]
    config_version = get_json(cluster, "mutatingwebhookconfiguration", FULLNAME)["metadata"][
        "resourceVersion"
    ]
    second = certs_sync(cluster, kubeconfig)
    assert second.returncode == 0, second.stderr
    assert "unchanged (valid until" in second.stderr
    assert secret_data(cluster)[0]["metadata"]["resourceVersion"] == version
    assert (
        get_json(cluster, "mutatingwebhookconfiguration", FULLNAME)["metadata"]["resourceVersion"]
        == config_version
    )


def test_certs_sync_repairs_a_broken_secret_and_bundle(installed: Install, tmp_path: Path) -> None:
    cluster = installed.cluster
    kubeconfig = token_kubeconfig(cluster, CERTS_SA, tmp_path / "certs-sync.kubeconfig")
    assert certs_sync(cluster, kubeconfig).returncode == 0
    _, before = secret_data(cluster)
    # Someone replaces the serving key, and empties the caBundle.
    garbage = base64.b64encode(b"not a key").decode()
    cluster.kubectl(
        "patch", "secret", TLS_SECRET, "-n", NS, "--type=merge",
        "-p", json.dumps({"data": {"tls.key": garbage}}),
    )  # fmt: skip
    cluster.kubectl(
        "patch", "mutatingwebhookconfiguration", FULLNAME, "--type=json",
        "-p", json.dumps([{"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"}]),
    )  # fmt: skip
    repaired = certs_sync(cluster, kubeconfig)
    assert repaired.returncode == 0, repaired.stderr
    assert "updated (tls.key is not an unencrypted PEM private key)" in repaired.stderr
    _, after = secret_data(cluster)
    assert after["ca.crt"] == before["ca.crt"]  # the same CA: the bundle stays valid
    assert after["tls.crt"] != before["tls.crt"]
    assert ca_bundle(cluster) == after["ca.crt"]


def test_admission_policy_confines_certs_sync_to_its_secret(installed: Install) -> None:
    """RBAC grants certs-sync `create secrets` in the namespace; the chart's
    ValidatingAdmissionPolicy refuses every Secret but its own TLS one."""
    cluster = installed.cluster
    user = f"system:serviceaccount:{NS}:{CERTS_SA}"
    for kind_args in (
        ("secret", "generic", "other", "--from-literal=a=b"),
        ("secret", "generic", TLS_SECRET + "-x", "--type=kubernetes.io/tls",
         "--from-literal=tls.crt=", "--from-literal=tls.key="),
    ):  # fmt: skip
        denied = cluster.kubectl(
            "create", *kind_args, "-n", NS, "--as", user, "--dry-run=server", check=False
        )
        assert denied.returncode != 0
        assert f"ValidatingAdmissionPolicy '{CERTS_SA}'" in denied.stderr, denied.stderr
        assert f"may only write the kubernetes.io/tls Secret {NS}/{TLS_SECRET}" in denied.stderr
    token_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "stolen-token",
            "namespace": NS,
            "annotations": {"kubernetes.io/service-account.name": CONTROLLER_SA},
        },
        "type": "kubernetes.io/service-account-token",
    }
    denied = cluster.kubectl(
        "create", "-f", "-", "--as", user, "--dry-run=server",
        input=json.dumps(token_secret), check=False,
    )  # fmt: skip
    assert denied.returncode != 0 and "ValidatingAdmissionPolicy" in denied.stderr
    # Anyone else is unaffected by the policy.
    cluster.kubectl("create", "secret", "generic", "other", "-n", NS, "--dry-run=server")


def test_admission_policy_confines_the_controller_to_the_enforced_label(
    installed: Install, namespace: Namespace
) -> None:
    """RBAC grants the controller `patch namespaces`; the chart's ValidatingAdmissionPolicy
    lets it set or remove imagestreams.io/policy-enforced=true and change nothing else."""
    cluster = installed.cluster
    user = f"system:serviceaccount:{NS}:{CONTROLLER_SA}"

    def label(*changes: str) -> subprocess.CompletedProcess[str]:
        return cluster.kubectl(
            "label", "namespace", namespace.name, *changes, "--overwrite",
            "--as", user, "--dry-run=server", check=False,
        )  # fmt: skip

    cluster.kubectl("label", "namespace", namespace.name, "team=a")
    assert label("imagestreams.io/policy-enforced=true").returncode == 0
    for changes in (
        ("pod-security.kubernetes.io/enforce=privileged",),
        ("imagestreams.io/policy-enforced=true", "team=other"),
        ("team-",),
    ):
        denied = label(*changes)
        assert denied.returncode != 0, changes
        assert f"ValidatingAdmissionPolicy '{CONTROLLER_SA}-namespaces'" in denied.stderr
        assert "may change no namespace label but imagestreams.io/policy-enforced" in (
            denied.stderr
        )
    denied = label("imagestreams.io/policy-enforced=false")
    assert 'imagestreams.io/policy-enforced may only be "true"' in denied.stderr
    denied = cluster.kubectl(
        "annotate", "namespace", namespace.name, "a=b", "--as", user, "--dry-run=server",
        check=False,
    )  # fmt: skip
    assert "may change no namespace annotation or spec" in denied.stderr
    # Removing the label it set is allowed.
    cluster.kubectl("label", "namespace", namespace.name, "imagestreams.io/policy-enforced=true")
    assert label("imagestreams.io/policy-enforced-").returncode == 0
    cluster.kubectl("label", "namespace", namespace.name, "imagestreams.io/policy-enforced-")


# --- image triggers: the fence around the controller's workload patches ----------------------

ONLY_IMAGES = "may change only the images of containers and initContainers"
ONLY_ANNOTATED = "may change only workloads with the annotation image.openshift.io/triggers"
POD_SPEC = {
    "Deployment": "/spec/template/spec",
    "StatefulSet": "/spec/template/spec",
    "DaemonSet": "/spec/template/spec",
    "CronJob": "/spec/jobTemplate/spec/template/spec",
}


def workload(
    kind: str, name: str, namespace: str, *, stream: str | None = "app", image: str = "1"
) -> dict[str, Any]:
    """A workload with an init container `init` and containers `web` and `side`; with a
    stream, triggers set `web` and `init` from STREAM:1 (as `set triggers` writes them)."""
    labels = {"app": name}
    pod = {
        "metadata": {"labels": labels},
        "spec": {
            "initContainers": [{"name": "init", "image": f"registry.example/init:{image}"}],
            "containers": [
                {"name": "web", "image": f"registry.example/web:{image}"},
                {"name": "side", "image": f"registry.example/side:{image}"},
            ],
        },
    }
    spec: dict[str, Any] = {"selector": {"matchLabels": labels}, "template": pod}
    if kind == "StatefulSet":
        spec["serviceName"] = name
    if kind == "CronJob":
        pod["spec"]["restartPolicy"] = "Never"
        spec = {"schedule": "0 0 * * *", "jobTemplate": {"spec": {"template": pod}}}
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if stream is not None:
        triggers = [
            Trigger(stream, "1", field_path_for(kind, "web")),
            Trigger(stream, "1", field_path_for(kind, "init", "initContainers")),
        ]
        metadata["annotations"] = {TRIGGERS_ANNOTATION: triggers_json(triggers)}
    group = "batch/v1" if kind == "CronJob" else "apps/v1"
    return {"apiVersion": group, "kind": kind, "metadata": metadata, "spec": spec}


def controller_patch(
    cluster: Cluster, kind: str, name: str, namespace: str, ops: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    """A JSON patch, as the controller's service account."""
    return cluster.kubectl(
        "patch", kind.lower(), name, "-n", namespace, "--type=json", "-p", json.dumps(ops),
        "--as", f"system:serviceaccount:{NS}:{CONTROLLER_SA}", check=False,
    )  # fmt: skip


def assert_denied(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert f"ValidatingAdmissionPolicy '{TRIGGERS_FENCE}'" in proc.stderr, proc.stderr
    user = f"system:serviceaccount:{NS}:{CONTROLLER_SA}"
    assert f"denied request: {user} {message}" in proc.stderr, proc.stderr


def test_admission_policy_confines_the_controller_to_trigger_images(
    installed: Install, namespace: Namespace
) -> None:
    """RBAC grants the controller `patch` on every Deployment, StatefulSet, DaemonSet and
    CronJob; the chart's ValidatingAdmissionPolicy lets it change container images of
    workloads that carry image.openshift.io/triggers, outside the excluded namespaces, and
    nothing else."""
    cluster = installed.cluster

    def policy() -> dict[str, Any]:
        return dict(get_json(cluster, "validatingadmissionpolicy", TRIGGERS_FENCE))

    # The API server type-checks every expression against each matched kind's schema.
    cluster.wait(
        "the policy to be type-checked",
        lambda: (
            policy().get("status", {}).get("observedGeneration")
            == policy()["metadata"]["generation"]
        ),
    )
    status = policy()["status"]
    assert not (status.get("typeChecking") or {}).get("expressionWarnings"), status
    ns = namespace.name
    for kind in POD_SPEC:
        cluster.apply(workload(kind, "w", ns))

    def image(kind: str, pointer: str) -> str:
        jsonpath = re.sub(r"/(\d+)", r"[\1]", pointer).replace("/", ".")
        return namespace.get(kind.lower(), "w", "{" + jsonpath + "}")

    # Allowed: a container's or an init container's image, in every kind; the controller's
    # own patch (a resourceVersion guard, then `add` on the image); `kubectl set image`.
    for kind, spec in POD_SPEC.items():
        for i, path in enumerate((f"{spec}/containers/0/image", f"{spec}/initContainers/0/image")):
            new = f"registry.example/app@sha256:{str(i) * 64}"
            allowed = controller_patch(
                cluster, kind, "w", ns, [{"op": "replace", "path": path, "value": new}]
            )
            assert allowed.returncode == 0, (kind, path, allowed.stderr)
            assert image(kind, path) == new
    version = namespace.get("deployment", "w", "{.metadata.resourceVersion}")
    pinned = "registry.example/app@sha256:" + "2" * 64
    guarded = [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": version},
        {"op": "add", "path": "/spec/template/spec/containers/1/image", "value": pinned},
    ]
    assert controller_patch(cluster, "Deployment", "w", ns, guarded).returncode == 0
    assert namespace.get("deployment", "w", "{.spec.template.spec.containers[1].image}") == pinned
    generation = namespace.get("deployment", "w", "{.metadata.generation}")
    assert int(generation) > 1  # a real rollout: the API server bumped it
    cluster.kubectl(
        "set", "image", "deployment/w", "web=registry.example/web:3", "-n", ns,
        "--as", f"system:serviceaccount:{NS}:{CONTROLLER_SA}",
    )  # fmt: skip
    assert namespace.get("deployment", "w", "{.spec.template.spec.containers[0].image}") == (
        "registry.example/web:3"
    )

    # Denied: anything but an image.
    deployment, cronjob = POD_SPEC["Deployment"], POD_SPEC["CronJob"]
    env = [{"name": "A", "value": "b"}]
    denied: list[tuple[str, list[dict[str, Any]]]] = [
        ("Deployment", [{"op": "add", "path": f"{deployment}/containers/0/env", "value": env}]),
        ("Deployment", [{"op": "add", "path": f"{deployment}/containers/1/command",
                         "value": ["sh", "-c", "id"]}]),
        ("Deployment", [{"op": "add", "path": f"{deployment}/initContainers/0/args",
                         "value": ["x"]}]),
        ("Deployment", [{"op": "add", "path": f"{deployment}/containers/0/securityContext",
                         "value": {"privileged": True}}]),
        ("Deployment", [{"op": "replace", "path": "/spec/replicas", "value": 5}]),
        ("Deployment", [{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]),
        ("Deployment", [{"op": "add", "path": "/spec/template/metadata/labels/x", "value": "y"}]),
        ("Deployment", [{"op": "add", "path": "/spec/template/metadata/annotations",
                         "value": {"a": "b"}}]),
        ("Deployment", [{"op": "add", "path": f"{deployment}/serviceAccountName",
                         "value": "admin"}]),
        ("Deployment", [{"op": "add", "path": f"{deployment}/hostNetwork", "value": True}]),
        # The annotation itself: changed, removed.
        ("Deployment", [{"op": "replace", "path": "/metadata/annotations",
                         "value": {TRIGGERS_ANNOTATION: "[]"}}]),
        ("Deployment", [{"op": "remove", "path": "/metadata/annotations"}]),
        # Containers added, reordered, or moved between the lists.
        ("Deployment", [{"op": "add", "path": f"{deployment}/containers/-",
                         "value": {"name": "x", "image": "registry.example/x:1"}}]),
        ("Deployment", [{"op": "move", "from": f"{deployment}/containers/1",
                         "path": f"{deployment}/containers/0"}]),
        ("Deployment", [{"op": "move", "from": f"{deployment}/initContainers/0",
                         "path": f"{deployment}/containers/-"}]),
        # An image change does not carry anything else along.
        ("Deployment", [{"op": "replace", "path": f"{deployment}/containers/0/image",
                         "value": "registry.example/web:9"},
                        {"op": "add", "path": f"{deployment}/containers/0/env", "value": env}]),
        ("StatefulSet", [{"op": "replace", "path": "/spec/replicas", "value": 3}]),
        ("DaemonSet", [{"op": "add", "path": "/spec/template/spec/containers/0/env",
                        "value": env}]),
        ("CronJob", [{"op": "replace", "path": "/spec/schedule", "value": "* * * * *"}]),
        ("CronJob", [{"op": "add", "path": "/spec/jobTemplate/spec/backoffLimit", "value": 0}]),
        ("CronJob", [{"op": "add", "path": f"{cronjob}/containers/0/command", "value": ["sh"]}]),
    ]  # fmt: skip
    for kind, ops in denied:
        before = get_json(cluster, kind.lower(), "w", "-n", ns)["metadata"]["resourceVersion"]
        assert_denied(controller_patch(cluster, kind, "w", ns, ops), ONLY_IMAGES)
        after = get_json(cluster, kind.lower(), "w", "-n", ns)["metadata"]["resourceVersion"]
        assert after == before, (kind, ops)

    # Denied: a workload without the annotation, even when the patch adds it.
    cluster.apply(workload("Deployment", "plain", ns, stream=None))
    just_image = [{"op": "replace", "path": f"{deployment}/containers/0/image", "value": pinned}]
    assert_denied(controller_patch(cluster, "Deployment", "plain", ns, just_image), ONLY_ANNOTATED)
    annotated = workload("Deployment", "plain", ns)["metadata"]["annotations"]
    adds = [{"op": "add", "path": "/metadata/annotations", "value": annotated}, *just_image]
    assert_denied(controller_patch(cluster, "Deployment", "plain", ns, adds), ONLY_ANNOTATED)

    # Denied: kube-system and the release namespace, annotation or not.
    name = f"fence-{ns}"[:63]
    for where in ("kube-system", NS):
        cluster.apply(workload("Deployment", name, where))
        try:
            assert_denied(
                controller_patch(cluster, "Deployment", name, where, just_image),
                f"may change no workload in kube-system, kube-node-lease, {NS}",
            )
        finally:
            cluster.kubectl("delete", "deployment", name, "-n", where, "--wait=false")

    # Anyone else is unaffected by the policy.
    cluster.kubectl("set", "env", "deployment/w", "-n", ns, "A=b")


@pytest.fixture
def without_session_controller(cluster: Cluster) -> Iterator[None]:
    """The session's own controller (admin, unfenced) stopped: only the one a test runs as
    the chart's service account reacts to streams."""
    cluster.stop_controller()
    try:
        yield
    finally:
        cluster.start_controller()


def image_stream(namespace: str, name: str, source: str) -> dict[str, Any]:
    return {
        "apiVersion": "image.openshift.io/v1",
        "kind": "ImageStream",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"tags": [{"name": "1", "from": {"kind": "DockerImage", "name": source}}]},
    }


def controller_args(cluster: Cluster, kubeconfig: Path, *extra: str) -> list[str]:
    return [
        "controller", "--kubeconfig", str(kubeconfig), "--workers", "1", "--no-leader-elect",
        "--allow-registry", cluster.registry, "--insecure-registry", cluster.registry, *extra,
    ]  # fmt: skip


def test_controller_rolls_triggered_workloads_through_the_fence(
    installed: Install, namespace: Namespace, tmp_path: Path, without_session_controller: None
) -> None:
    """The real controller, as the chart's service account: its trigger patches pass the
    policy, and in kube-system the policy stops them (logged; the workload stays as it was)."""
    cluster = installed.cluster
    repository = f"{cluster.registry}/e2e/fence"
    pinned = f"{repository}@{push_image(f'{repository}:1', 'fence', tmp_path / 'image')}"
    ns = namespace.name
    system = f"fence-{ns}"[:63]
    kubeconfig = token_kubeconfig(cluster, CONTROLLER_SA, tmp_path / "controller.kubeconfig")
    log = tmp_path / "controller.log"

    def images(kind: str, name: str, where: str = ns) -> list[str]:
        """Init containers' images, then containers'."""
        obj = get_json(cluster, kind, name, "-n", where)
        spec = obj["spec"].get("jobTemplate", obj)["spec"]["template"]["spec"]
        return [c["image"] for c in spec["initContainers"] + spec["containers"]]

    def triggered() -> set[str]:
        events = get_json(cluster, "events", "-n", ns, "--field-selector=reason=ImageTriggered")
        return {e["involvedObject"]["name"] for e in events["items"]}

    cluster.apply([workload("Deployment", "web", ns), workload("CronJob", "job", ns)])
    cluster.apply(workload("Deployment", system, "kube-system", stream=system))
    try:
        with running(cluster, controller_args(cluster, kubeconfig), log) as proc:
            cluster.apply(
                [
                    image_stream(ns, "app", f"{repository}:1"),
                    image_stream("kube-system", system, f"{repository}:1"),
                ]
            )
            rolled = [pinned, pinned, "registry.example/side:1"]
            cluster.wait(
                "the controller's triggers to roll the workloads",
                lambda: images("deployment", "web") == images("cronjob", "job") == rolled,
                timeout=90,
            )
            cluster.wait("an ImageTriggered Event on each", lambda: triggered() == {"web", "job"})
            cluster.wait(
                "the policy to refuse the trigger in kube-system",
                lambda: f"Deployment kube-system/{system}" in log.read_text(),
            )
            assert proc.poll() is None
        text = log.read_text()
        assert f"may change no workload in kube-system, kube-node-lease, {NS}" in text, text
        assert images("deployment", system, "kube-system") == [
            "registry.example/init:1", "registry.example/web:1", "registry.example/side:1",
        ]  # fmt: skip
    finally:
        cluster.kubectl("delete", "imagestream", system, "-n", "kube-system", "--wait=false")
        cluster.kubectl("delete", "deployment", system, "-n", "kube-system", "--wait=false")


def test_helm_upgrade_keeps_the_ca_bundle(installed: Install, tmp_path: Path) -> None:
    """The chart renders no caBundle; Helm's three-way merge leaves the one certs-sync set."""
    cluster = installed.cluster
    kubeconfig = token_kubeconfig(cluster, CERTS_SA, tmp_path / "certs-sync.kubeconfig")
    assert certs_sync(cluster, kubeconfig).returncode == 0
    bundle = ca_bundle(cluster)
    assert bundle
    helm(
        cluster, "upgrade", RELEASE, str(CHART), "-n", NS, "-f", installed.values,
        "--set", "webhook.timeoutSeconds=7", "--no-hooks",
    )  # fmt: skip
    (webhook,) = get_json(cluster, "mutatingwebhookconfiguration", FULLNAME)["webhooks"]
    assert webhook["timeoutSeconds"] == 7
    assert ca_bundle(cluster) == bundle


def test_triggers_off_leaves_the_controller_no_rights_on_workloads(
    installed: Install, namespace: Namespace, tmp_path: Path, without_session_controller: None
) -> None:
    """controller.triggers.enabled=false: no workload rules in the controller's role, no
    policy, and a controller started with --no-triggers that imports without touching
    workloads. Upgraded back afterwards."""
    cluster = installed.cluster
    user = f"system:serviceaccount:{NS}:{CONTROLLER_SA}"
    off = helm(
        cluster, "upgrade", RELEASE, str(CHART), "-n", NS, "-f", installed.values,
        "--set", "controller.triggers.enabled=false", "--no-hooks",
    )  # fmt: skip
    try:
        assert "controller.triggers.enabled is false" in off.stdout
        assert not exists(cluster, "validatingadmissionpolicy", TRIGGERS_FENCE)
        for verb, resource in [
            ("patch", "deployments.apps"), ("list", "deployments.apps"),
            ("patch", "statefulsets.apps"), ("patch", "daemonsets.apps"),
            ("patch", "cronjobs.batch"), ("watch", "cronjobs.batch"),
        ]:  # fmt: skip
            proc = cluster.kubectl(
                "auth", "can-i", verb, resource, "-n", namespace.name, "--as", user, check=False
            )
            assert proc.stdout.strip() == "no", (verb, resource)
        deployment = get_json(cluster, "deployment", CONTROLLER_SA, "-n", NS)
        assert "--no-triggers" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]

        repository = f"{cluster.registry}/e2e/no-triggers"
        digest = push_image(f"{repository}:1", "no triggers", tmp_path / "image")
        cluster.apply(workload("Deployment", "web", namespace.name))
        kubeconfig = token_kubeconfig(cluster, CONTROLLER_SA, tmp_path / "controller.kubeconfig")
        log = tmp_path / "controller.log"
        with running(cluster, controller_args(cluster, kubeconfig, "--no-triggers"), log):
            cluster.apply(image_stream(namespace.name, "app", f"{repository}:1"))
            cluster.wait(
                "the controller to import the tag",
                lambda: digest in namespace.get("imagestream", "app", "{.status.tags[*].items}"),
                timeout=60,
            )
            time.sleep(2)  # a trigger would follow the status write at once
        text = log.read_text()
        assert "forbidden" not in text.lower() and "image trigger" not in text, text
        image = namespace.get("deployment", "web", "{.spec.template.spec.containers[0].image}")
        assert image == "registry.example/web:1"
    finally:
        helm(cluster, "upgrade", RELEASE, str(CHART), "-n", NS, "-f", installed.values,
             "--no-hooks")  # fmt: skip
    assert exists(cluster, "validatingadmissionpolicy", TRIGGERS_FENCE)
    proc = cluster.kubectl("auth", "can-i", "patch", "deployments.apps", "--as", user)
    assert proc.stdout.strip() == "yes"


def test_unreachable_chart_webhook_with_failure_policy_ignore(
    installed: Install, namespace: Namespace
) -> None:
    """A namespace the chart's webhook sees while no webhook pod can run: requests pass."""
    cluster = installed.cluster
    cluster.kubectl("label", "namespace", namespace.name, f"{CHART_WEBHOOK_LABEL}=on")
    started = time.monotonic()
    namespace.kubectl("create", "deployment", "web", "--image", "registry.example/app:1")
    assert namespace.get("deployment", "web", "{..image}") == "registry.example/app:1"
    assert time.monotonic() - started < 30


# --- the example app chart: resolved at install, re-resolved at upgrade ---------------------


def test_example_app_chart_is_pinned_at_install_and_upgrade(
    cluster: Cluster, namespace: Namespace, tmp_path: Path
) -> None:
    repository = f"{cluster.registry}/e2e/keycloak"
    first = push_image(f"{repository}:20.0", "keycloak 20.0.1", tmp_path / "v1")
    namespace.stream("keycloak", {"20.0": Image(repository, "20.0", first)})
    image_path = "{.spec.template.spec.containers[0].image}"

    helm(cluster, "install", "kc", str(APP_CHART), "-n", namespace.name)
    assert namespace.get("deployment", "kc", image_path) == f"{repository}@{first}"
    # Helm records what it sent; the API server stored the resolved object.
    manifest = helm(cluster, "get", "manifest", "kc", "-n", namespace.name).stdout
    assert 'image: "keycloak:20.0"' in manifest
    generation = namespace.get("deployment", "kc", "{.metadata.generation}")

    # An upgrade while the tag has not moved: resolved to the same digest, no rollout.
    helm(cluster, "upgrade", "kc", str(APP_CHART), "-n", namespace.name)
    assert namespace.get("deployment", "kc", image_path) == f"{repository}@{first}"
    assert namespace.get("deployment", "kc", "{.metadata.generation}") == generation

    # The tag moves (a new image under the same tag, imported into the stream) ...
    second = push_image(f"{repository}:20.0", "keycloak 20.0.2", tmp_path / "v2")
    assert second != first
    namespace.write_status("keycloak", {"20.0": f"{repository}@{second}"})
    namespace.sync()
    # ... and the next upgrade pins the new digest.
    helm(cluster, "upgrade", "kc", str(APP_CHART), "-n", namespace.name)
    assert namespace.get("deployment", "kc", image_path) == f"{repository}@{second}"
    assert int(namespace.get("deployment", "kc", "{.metadata.generation}")) > int(generation)

    helm(cluster, "uninstall", "kc", "-n", namespace.name)
    assert namespace.kubectl("get", "deployment", "kc", check=False).returncode != 0


# --- uninstall (last: the module's release is gone afterwards) -------------------------------


def test_uninstall_removes_everything_but_the_crd(installed: Install, tmp_path: Path) -> None:
    cluster = installed.cluster
    # certs-sync's Secret exists (made by an earlier test, or now) and is owned by the Service.
    if not exists(cluster, "secret", TLS_SECRET, "-n", NS):
        kubeconfig = token_kubeconfig(cluster, CERTS_SA, tmp_path / "certs-sync.kubeconfig")
        assert certs_sync(cluster, kubeconfig).returncode == 0
    helm(cluster, "uninstall", RELEASE, "-n", NS, "--no-hooks")
    selector = f"app.kubernetes.io/instance={RELEASE}"
    cluster_scoped = (
        "clusterroles,clusterrolebindings,mutatingwebhookconfigurations,"
        "validatingwebhookconfigurations,validatingadmissionpolicies,"
        "validatingadmissionpolicybindings"
    )
    namespaced = "deployments,services,serviceaccounts,roles,rolebindings,poddisruptionbudgets,jobs"
    assert get_json(cluster, cluster_scoped, "-l", selector)["items"] == []
    assert get_json(cluster, namespaced, "-n", NS, "-l", selector)["items"] == []
    assert not exists(cluster, "mutatingwebhookconfiguration", FULLNAME)
    # The Secret certs-sync made goes with its owner, the Service (garbage collector).
    cluster.wait(
        f"the garbage collector to delete secret {NS}/{TLS_SECRET}",
        lambda: not exists(cluster, "secret", TLS_SECRET, "-n", NS),
        timeout=60,
    )
    # Helm never deletes CRDs (nor, so, anyone's ImageStreams).
    assert exists(cluster, "crd", CRD)
    releases = helm(cluster, "list", "-n", NS, "-q").stdout.split()
    assert RELEASE not in releases
