"""The chart as a platform team runs it: its pods run from the project's image under Pod
Security `restricted`, the API server reaches the webhook through its Service, outages and
drains behave as the registration and the PodDisruptionBudget promise, and certificates
rotate under load."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import localchart
import pytest
from cryptography import x509
from localcluster import Cluster
from localnode import NODE_NAME
from nodekit import Namespace, wait_until

from webhook.tls.certs import KeyPair, issue, load_pair

WEBHOOK = f"{localchart.RELEASE}-webhook"
SELECTOR = "app.kubernetes.io/instance={release},app.kubernetes.io/component={component}"


def component(name: str) -> str:
    return SELECTOR.format(release=localchart.RELEASE, component=name)


@pytest.fixture
def pinned_stream(
    cluster: Cluster, namespace: Namespace, push_app: Callable[[str, str], str]
) -> tuple[str, str]:
    """A stream `web:1` in `namespace` whose status the test writes itself (no import): the
    short name and what it pins to."""
    digest = push_app(f"{namespace.name}/web:1", f"web-{namespace.name}")
    pinned = f"{cluster.registry}/{namespace.name}/web@{digest}"
    cluster.pin_stream(namespace.name, "web", {"1": pinned})
    wait_until("the webhook to resolve web:1", lambda: namespace.dry_run_pod("web:1") == pinned)
    return "web:1", pinned


def test_chart_pods_run_restricted_from_the_project_image(release: Namespace) -> None:
    labels = release.json("namespace", localchart.NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"

    values = json.loads(
        localchart.helm(release.cluster, "get", "values", localchart.RELEASE, "-n",
                        localchart.NAMESPACE, "-o", "json").stdout
    )  # fmt: skip
    product = f"{values['image']['repository']}@{values['image']['digest']}"
    expected = {"webhook": 2, "controller": 2, "certs-sync": 1, "local-registry": 1}
    for name, replicas in expected.items():
        pods = release.running_pods(component(name))
        assert len(pods) == replicas, f"{name}: {len(pods)} running pods, want {replicas}"
        for pod in pods:
            for container in pod["spec"]["containers"]:
                assert "@sha256:" in container["image"], container["image"]
                if name != "local-registry":
                    assert container["image"] == product
            for status in pod["status"]["containerStatuses"]:
                assert status["ready"], f"{pod['metadata']['name']} is not ready"
                if name != "local-registry":
                    # The kubelet ran exactly the image built from this repository.
                    assert status["imageID"].rsplit("@", 1)[1] == values["image"]["digest"]


def test_helm_test_reaches_the_webhook_through_its_service(release: Namespace) -> None:
    """`helm test`: a pod of the product image calls /readyz over TLS through the Service,
    trusting only the CA of the webhook's Secret (templates/tests/webhook-readyz.yaml)."""
    proc = localchart.helm(
        release.cluster, "test", localchart.RELEASE, "-n", localchart.NAMESPACE, "--timeout", "3m"
    )
    assert re.search(r"Phase:\s+Succeeded", proc.stdout), proc.stdout


def test_the_api_server_calls_the_webhook_through_its_service(
    cluster: Cluster, namespace: Namespace, pinned_stream: tuple[str, str]
) -> None:
    registration = json.loads(
        cluster.kubectl(
            "get", "mutatingwebhookconfiguration", localchart.RELEASE, "-o", "json"
        ).stdout
    )
    client = registration["webhooks"][0]["clientConfig"]
    assert "url" not in client
    assert client["service"]["name"] == WEBHOOK
    assert client["service"]["namespace"] == localchart.NAMESPACE

    short, pinned = pinned_stream
    namespace.kubectl("create", "deployment", "web", "--image", short)
    namespace.wait_rollout("web")
    assert namespace.image_ids("app=web") == {pinned}


def test_without_webhook_pods_the_api_server_admits_unchanged(
    release: Namespace, namespace: Namespace, pinned_stream: tuple[str, str]
) -> None:
    short, pinned = pinned_stream
    release.kubectl("scale", f"deployment/{WEBHOOK}", "--replicas=0")
    try:
        wait_until("every webhook pod to go", lambda: not release.json(
            "pods", "-l", component("webhook"))["items"])  # fmt: skip
        # failurePolicy Ignore: nothing answers, and the request goes through unchanged.
        # (How soon it goes through is kube-proxy's business: until it has synced the empty
        # endpoints, the API server's call waits for the webhook's 5 s timeout.)
        namespace.kubectl("create", "deployment", "plain", "--image", short)
        assert (
            namespace.get("deployment", "plain", "{.spec.template.spec.containers[0].image}")
            == short
        )
    finally:
        release.kubectl("scale", f"deployment/{WEBHOOK}", "--replicas=2")
        release.wait_rollout(WEBHOOK)
    wait_until("resolution to come back", lambda: namespace.dry_run_pod(short) == pinned)


def test_drain_respects_the_webhook_disruption_budget(cluster: Cluster, release: Namespace) -> None:
    proc = cluster.kubectl(
        "drain", NODE_NAME, "--pod-selector", component("webhook"), "--ignore-daemonsets",
        "--delete-emptydir-data", "--timeout=30s", check=False,
    )  # fmt: skip
    try:
        # One replica may go (maxUnavailable 1); its replacement cannot be scheduled on the
        # cordoned node, so the budget refuses the second eviction and drain gives up.
        assert proc.returncode != 0
        assert "disruption budget" in proc.stderr, proc.stderr
        assert len(release.running_pods(component("webhook"))) == 1
    finally:
        cluster.kubectl("uncordon", NODE_NAME)
    release.wait_rollout(WEBHOOK)
    assert len(release.running_pods(component("webhook"))) == 2


# --- certificate rotation under load ---------------------------------------------------------


def served_certificates(cluster: Cluster, connections: int = 12) -> list[x509.Certificate]:
    """What the webhook's Service answers with over several connections (each may reach
    another replica), as the API server sees it."""
    return [served_certificate(cluster) for _ in range(connections)]


def served_certificate(cluster: Cluster) -> x509.Certificate:
    """The certificate one connection to the webhook's Service gets."""
    ip = cluster.kubectl(
        "get", "service", WEBHOOK, "-n", localchart.NAMESPACE, "-o", "jsonpath={.spec.clusterIP}"
    ).stdout.strip()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((ip, 443), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=f"{WEBHOOK}.{localchart.NAMESPACE}.svc") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@pytest.fixture
def admissions(
    namespace: Namespace, pinned_stream: tuple[str, str]
) -> Iterator[list[tuple[str, str]]]:
    """Pods created by short name, back to back, for as long as the test runs; each result
    is (what was stored or the error, the expected pinned image)."""
    short, pinned = pinned_stream
    results: list[tuple[str, str]] = []
    stop = threading.Event()

    def admit() -> None:
        while not stop.is_set():
            proc = namespace.kubectl(
                "run", "probe", f"--image={short}", "--restart=Never", "--dry-run=server",
                "-o", "jsonpath={.spec.containers[0].image}", check=False,
            )  # fmt: skip
            results.append((proc.stdout.strip() or proc.stderr.strip(), pinned))

    thread = threading.Thread(target=admit, daemon=True)
    thread.start()
    yield results
    stop.set()
    thread.join(timeout=30)


def test_certificates_rotate_while_pods_are_admitted(
    cluster: Cluster, release: Namespace, admissions: list[tuple[str, str]]
) -> None:
    secret_name = f"{WEBHOOK}-tls"
    data = release.json("secret", secret_name)["data"]
    ca = _pair(data["ca.crt"], data["ca.key"])
    current = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
    names = current.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    dns = names.value.get_values_for_type(x509.DNSName)
    # A serving certificate from the same CA for the same names, but due for renewal (10
    # days left; certs-sync renews 30 days ahead): what a year-old install looks like.
    old = issue(ca, dns[0], dns=dns, server=True, validity=dt.timedelta(days=10))
    _write_serving(release, secret_name, old)
    # The Service spreads connections over both replicas: every one must have switched.
    wait_until(
        "both webhook replicas to serve the aging certificate",
        lambda: {c.serial_number for c in served_certificates(cluster)} == {old.cert.serial_number},
        timeout=180,
    )

    # certs-sync renews it on its next pass (a restart runs one now).
    release.kubectl("rollout", "restart", f"deployment/{localchart.RELEASE}-certs-sync")
    long_lived = dt.datetime.now(dt.UTC) + dt.timedelta(days=300)
    wait_until(
        "both replicas to serve a renewed certificate",
        lambda: all(c.not_valid_after_utc > long_lived for c in served_certificates(cluster)),
        timeout=240,
    )
    assert old.cert.serial_number not in {c.serial_number for c in served_certificates(cluster)}
    time.sleep(2)  # a few more admissions on the new certificate

    assert len(admissions) > 20
    failed = [stored for stored, pinned in admissions if stored != pinned]
    assert not failed, f"{len(failed)} of {len(admissions)} admissions not pinned: {failed[:3]}"


def _pair(cert_b64: str, key_b64: str) -> KeyPair:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as work:
        cert, key = Path(work, "c"), Path(work, "k")
        cert.write_bytes(base64.b64decode(cert_b64))
        key.write_bytes(base64.b64decode(key_b64))
        return load_pair(cert, key)


def _write_serving(release: Namespace, secret: str, pair: KeyPair) -> None:
    patch: dict[str, Any] = {
        "data": {
            "tls.crt": base64.b64encode(pair.cert_pem).decode(),
            "tls.key": base64.b64encode(pair.key_pem).decode(),
        }
    }
    release.kubectl("patch", "secret", secret, "--type=merge", "-p", json.dumps(patch))
