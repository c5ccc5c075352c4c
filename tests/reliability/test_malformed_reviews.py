"""Malformed and hostile AdmissionReviews against a real `imagestreams serve` (gunicorn, TLS,
file-fed streams and policies), on /mutate and /validate (issue 15, items 1 to 3).

A seeded generator (adversarial.py) mutates real reviews: every answer must be a 200 with a
well-formed, bounded AdmissionReview, or a 400 with a JSON error; never a 5xx. Then the cases
that broke the webhook before, by name. Last, the server's log must hold no traceback: the
last-resort handler would answer, but it logs every bug it hides.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from adversarial import bodies

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from streamdata import DIGEST_A, image_stream, pod_spec, review, workload

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from serving import Served, make_certs, start_serve

pytestmark = pytest.mark.integration

SEED = 15
COUNT = 2000  # bodies, each sent to /mutate and to /validate
KEYCLOAK = f"quay.io/keycloak/keycloak@{DIGEST_A}"
JSON = {"Content-Type": "application/json"}
# An answer carries at most 16 warnings of 256 characters (serving/limits.py), a denial
# message of 10 violations, 20 audit records: this leaves room for all of them and a patch.
MAX_ANSWER = 64 * 1024


def image_policy(name: str, mode: str, selector: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "imagestreams.io/v1alpha1",
        "kind": "ImagePolicy",
        "metadata": {"name": name},
        "spec": {"mode": mode, "namespaceSelector": selector, **spec},
    }


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


POLICIES = [
    image_policy(
        "prod-streams",
        "Enforce",
        {"matchLabels": {"tier": "prod"}},
        objectSelector={"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
        rules={"requireImageStream": True, "blockedRegistries": ["evil.example.com"]},
    ),
    image_policy(
        "prod-imports",
        "Enforce",
        {"matchLabels": {"tier": "prod"}},
        rules={"allowedRegistriesForImport": ["quay.io/keycloak/"]},
    ),
    image_policy(
        "dev-digests", "Warn", {"matchLabels": {"tier": "dev"}}, rules={"requireDigest": True}
    ),
    image_policy(
        "audit-digests",
        "Audit",
        {"matchLabels": {"tier": "audited"}},
        rules={"requireDigest": True},
    ),
    # Every namespace the files do not name (a 1 MB one, say): two rules break per container.
    image_policy(
        "elsewhere",
        "Warn",
        {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": ["team", "dev", "audited"],
                }
            ]
        },
        rules={"requireImageStream": True, "allowedRegistries": ["quay.io"]},
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("reliability")
    make_certs(tmp / "certs", "localhost")
    streams = tmp / "streams.yaml"
    streams.write_text(
        yaml.safe_dump(image_stream("keycloak", tags={"20.0": KEYCLOAK, "21.0": None}))
    )
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "policies.yaml").write_text(yaml.safe_dump_all(POLICIES))
    namespaces = [namespace("team", tier="prod"), namespace("dev", tier="dev")]
    namespaces.append(namespace("audited", tier="audited"))
    (policies / "namespaces.yaml").write_text(yaml.safe_dump_all(namespaces))
    served = start_serve(tmp, "--streams-file", str(streams), "--policies-file", str(policies))
    yield served
    served.stop()


def problem_with(response: requests.Response, sent: bytes) -> str | None:
    """What is wrong with the answer to `sent`, or None."""
    if response.status_code not in (200, 400):
        return f"HTTP {response.status_code}: {response.text[:200]}"
    if response.headers.get("Content-Type") != "application/json":
        return f"Content-Type {response.headers.get('Content-Type')}"
    if len(response.content) > MAX_ANSWER:
        return f"answer of {len(response.content)} bytes"
    answer = response.json()
    if response.status_code == 400:
        return None if isinstance(answer.get("error"), str) else f"400 without an error: {answer}"
    if (answer.get("apiVersion"), answer.get("kind")) != ("admission.k8s.io/v1", "AdmissionReview"):
        return f"not an AdmissionReview: {answer}"
    result = answer["response"]
    if result["uid"] != json.loads(sent)["request"]["uid"] or not isinstance(
        result["allowed"], bool
    ):
        return f"wrong uid or allowed: {result}"
    warnings = result.get("warnings", [])
    if len(warnings) > 16 or sum(len(w) for w in warnings) > 4096 + 64:
        return f"{len(warnings)} warnings, {sum(len(w) for w in warnings)} characters"
    if "patch" in result and not isinstance(json.loads(base64.b64decode(result["patch"])), list):
        return "the patch is not a JSON Patch"
    return None


def test_adversarial_reviews_are_answered_without_a_5xx(server: Served) -> None:
    session = requests.Session()  # one keep-alive connection
    statuses: Counter[int] = Counter()
    failures = []
    started = time.monotonic()
    for name, data in bodies(SEED, COUNT):
        for path in ("/mutate", "/validate"):
            response = session.post(
                f"{server.url}{path}", data=data, headers=JSON, verify=server.ca, timeout=10
            )
            statuses[response.status_code] += 1
            problem = problem_with(response, data)
            if problem:
                failures.append(f"{name} {path}: {problem}")
    elapsed = time.monotonic() - started
    print(f"{2 * COUNT} adversarial reviews in {elapsed:.1f} s: {dict(statuses)}")
    assert failures == [], f"{len(failures)} bad answers, first: {failures[:5]}"
    assert statuses[200] > COUNT  # most bodies are reviews with odd fields, and are answered


# --- the cases that broke the webhook, by name ----------------------------------------------


def deployment(**kw: Any) -> dict[str, Any]:
    obj = workload("Deployment", pod_spec("keycloak:20.0", "nginx:1"), name="web")
    obj["metadata"]["labels"] = {"app": "web"}
    return review("Deployment", obj, **kw)


def stream_update(old_tags: Any) -> dict[str, Any]:
    new = image_stream("keycloak", tags={"20.0": KEYCLOAK})
    old = image_stream("keycloak", tags={"20.0": KEYCLOAK})
    old["spec"]["tags"] = old_tags
    return review("ImageStream", new, operation="UPDATE", old=old)


def with_request(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body["request"].update(changes)
    return body


def with_labels(body: dict[str, Any], labels: Any) -> dict[str, Any]:
    body["request"]["object"]["metadata"]["labels"] = labels
    return body


def with_owner_kind(body: dict[str, Any], kind: Any) -> dict[str, Any]:
    owner = {"apiVersion": "apps/v1", "kind": kind, "name": "o", "controller": True}
    body["request"]["object"]["metadata"]["ownerReferences"] = [owner]
    return body


ODD_REVIEWS = {
    "namespace-is-a-list": with_request(deployment(), namespace=["team"]),
    "kind-group-is-a-list": with_request(
        deployment(), kind={"group": ["apps"], "version": "v1", "kind": "Deployment"}
    ),
    "owner-kind-is-a-list": with_owner_kind(deployment(), ["ReplicaSet"]),
    "old-stream-spec-tags-5": stream_update(5),
    "label-value-is-a-list-under-an-object-selector": with_labels(deployment(), {"app": ["web"]}),
    "kind-is-a-lone-surrogate": with_request(
        deployment(), kind={"group": "apps", "version": "v1", "kind": "\ud800"}
    ),
}


@pytest.mark.parametrize("path", ["/mutate", "/validate"])
@pytest.mark.parametrize("name", sorted(ODD_REVIEWS))
def test_odd_field_types_are_answered(server: Served, name: str, path: str) -> None:
    sent = json.dumps(ODD_REVIEWS[name]).encode()
    response = server.post(path, sent)
    assert problem_with(response, sent) is None
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/mutate", "/validate"])
def test_deep_nesting_is_a_400(server: Served, path: str) -> None:
    response = server.post(path, b"[" * 200_000 + b"]" * 200_000)
    assert response.status_code == 400
    assert response.json() == {"error": "body is nested too deeply"}


def raw_post(server: Served, head: bytes, body: bytes) -> tuple[int, bytes]:
    """One request written by hand over TLS; (status, response body)."""
    context = ssl.create_default_context(cafile=server.ca)
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        tls.sendall(head + b"\r\n" + body)
        received = b""
        while chunk := tls.recv(65536):
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    "body",
    [b"zzz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n", b'{"apiVersion": "admission.k8s.io/v1"}'],
    ids=["bad-size", "missing-terminator", "not-framed-at-all"],
)
def test_a_chunked_body_that_is_not_chunk_framed_is_a_400(server: Served, body: bytes) -> None:
    head = (
        b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n"
    )
    # The client stops writing after the body (as a client that closes would): the server
    # sees the end of the stream where the framing says more must come.
    status, answer = raw_post(server, head, body + b"\r\n\r\n")
    assert status == 400
    assert "could not be read" in json.loads(answer)["error"]


# --- bounded answers ----------------------------------------------------------------------


def test_a_huge_namespace_does_not_make_a_huge_answer(server: Served) -> None:
    """120 containers, a 1 MB namespace, a Warn policy with two rules: one warning per
    container and rule, each quoting the namespace. Before: a 503 MB answer in 4.4 s."""
    spec = {"containers": [{"name": f"c{i}", "image": f"nginx:{i}"} for i in range(120)]}
    body = review("Deployment", workload("Deployment", spec), namespace="n" * 1024 * 1024)
    sent = json.dumps(body).encode()
    for path in ("/validate", "/mutate"):
        started = time.monotonic()
        response = server.post(path, sent, timeout=30)
        elapsed = time.monotonic() - started
        print(f"{path}: {len(sent)} bytes in, {len(response.content)} out, {elapsed:.2f} s")
        assert problem_with(response, sent) is None
        assert len(response.content) < 8 * 1024
    warnings = server.post("/validate", sent).json()["response"]["warnings"]
    assert len(warnings) == 16 and warnings[-1] == "225 more warning(s) not shown"


def test_metrics_survive_a_hostile_kind(server: Served) -> None:
    for kind in ("\ud800", "Kind-1", "Kind-2"):
        body = deployment()
        body["request"]["kind"] = {"group": "apps", "version": "v1", "kind": kind}
        assert server.post("/mutate", json.dumps(body).encode()).status_code == 200
    scrape = server.get("/metrics")
    assert scrape.status_code == 200
    assert 'kind="other"' in scrape.text
    assert "Kind-1" not in scrape.text


def test_the_server_logged_no_traceback(server: Served) -> None:
    """Runs last: no request above reached the last-resort handler (or crashed a worker)."""
    assert server.process.poll() is None
    log = server.log.read_text()
    assert "Traceback" not in log, log[-3000:]
