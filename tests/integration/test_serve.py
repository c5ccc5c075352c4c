"""`imagestreams serve` for real: gunicorn over TLS on 127.0.0.1, certificates from
`imagestreams certs`, AdmissionReviews shaped like the API server's."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from cryptography import x509

from webhook.serving.metrics import FLUSH_SECONDS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from streamdata import DIGEST_A, DIGEST_B, image_stream, pod_spec, review, workload

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry_fixtures import free_port
from serving import Served, make_certs, start_serve

pytestmark = pytest.mark.integration

KEYCLOAK = f"quay.io/keycloak/keycloak@{DIGEST_A}"


@pytest.fixture(scope="module")
def health_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, health_port: int) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("serve")
    bundle = make_certs(tmp / "certs", "localhost")
    assert base64.b64decode(bundle) == (tmp / "certs" / "ca.crt").read_bytes()
    streams = tmp / "streams.yaml"
    streams.write_text(
        yaml.safe_dump_all(
            [
                image_stream("keycloak", tags={"20.0": KEYCLOAK, "21.0": None}),
                image_stream("keycloak", namespace="other", tags={"20.0": f"x.io/k@{DIGEST_B}"}),
            ]
        )
    )
    health = f"127.0.0.1:{health_port}"
    served = start_serve(tmp, "--streams-file", str(streams), "--health-bind", health)
    yield served
    served.stop()


def patch_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(base64.b64decode(answer["response"]["patch"]))


def test_deployment_is_resolved_over_tls(server: Served) -> None:
    body = review("Deployment", workload("Deployment", pod_spec("keycloak:20.0")), uid="uid-1")
    response = server.post("/mutate", body)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    answer = response.json()
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["response"]["uid"] == "uid-1"
    assert answer["response"]["patchType"] == "JSONPatch"
    assert patch_of(answer) == [
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": KEYCLOAK}
    ]


def test_namespace_decides_the_stream(server: Served) -> None:
    body = review("Pod", workload("Pod", pod_spec("keycloak:20.0")), namespace="other")
    assert patch_of(server.post("/mutate", body).json())[0]["value"] == f"x.io/k@{DIGEST_B}"
    body = review("Pod", workload("Pod", pod_spec("keycloak:20.0")), namespace="third")
    assert "patch" not in server.post("/mutate", body).json()["response"]


def test_unimported_tag_gets_a_warning(server: Served) -> None:
    body = review("Pod", workload("Pod", pod_spec("keycloak:21.0")))
    response = server.post("/mutate", body).json()["response"]
    assert response["allowed"] is True and "patch" not in response
    assert "team/keycloak:21.0 has no image yet" in response["warnings"][0]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (
            {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"},
            "admission.k8s.io/v1",
        ),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}, "no uid"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_bodies_get_400_with_a_json_error(server: Served, body: Any, error: str) -> None:
    response = server.post("/mutate", body)
    assert response.status_code == 400
    assert error in response.json()["error"]


def test_oversized_body_gets_400(server: Served) -> None:
    big = review("Pod", workload("Pod", pod_spec("keycloak:20.0")))
    big["request"]["object"]["metadata"]["annotations"] = {"x": "y" * (3 * 1024 * 1024)}
    response = server.post("/mutate", big, timeout=10)
    assert response.status_code == 400
    assert "larger than" in response.json()["error"]


def test_server_survives_bad_input(server: Served) -> None:
    for _ in range(20):
        server.post("/mutate", b"garbage")
    assert server.get("/healthz").json() == {"status": "ok"}
    assert server.process.poll() is None
    assert "Traceback" not in server.log.read_text()


def test_readyz_reports_the_index(server: Served) -> None:
    assert server.get("/readyz").json() == {"status": "ok", "streams": 2}


def test_metrics_add_up_across_workers(server: Served) -> None:
    def resolved() -> float:
        text = server.get("/metrics").text
        line = next(
            x for x in text.splitlines() if x.startswith("imagestreams_images_resolved_total")
        )
        return float(line.split()[-1])

    time.sleep(FLUSH_SECONDS + 0.5)  # what the module's earlier tests left in a tally
    before = resolved()
    body = review("Pod", workload("Pod", pod_spec("keycloak:20.0")))
    for _ in range(10):  # new connections each time: spread over both workers
        server.post("/mutate", body)
    # Each worker writes its tally within FLUSH_SECONDS; the scraped one at once.
    deadline = time.monotonic() + FLUSH_SECONDS + 5
    while (total := resolved()) < before + 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert total == before + 10


def test_tls_below_1_2_is_refused(server: Served) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(server.ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", server.port)) as sock:
        context.wrap_socket(sock, server_hostname="localhost")


def served_certificate(server: Served) -> x509.Certificate:
    pem = ssl.get_server_certificate(("127.0.0.1", server.port), ca_certs=server.ca)
    return x509.load_pem_x509_certificate(pem.encode())


def test_rotated_certificate_is_served_without_restart(server: Served) -> None:
    before = served_certificate(server)
    make_certs(server.certs, "localhost", "rotated.example")  # same CA, new serving pair
    after = served_certificate(server)
    assert after.serial_number != before.serial_number
    names = after.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "rotated.example" in names.get_values_for_type(x509.DNSName)
    body = review("Pod", workload("Pod", pod_spec("keycloak:20.0")))
    assert server.post("/mutate", body).status_code == 200


def test_health_port_answers_probes_only(server: Served, health_port: int) -> None:
    base = f"http://127.0.0.1:{health_port}"
    assert requests.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
    assert requests.get(f"{base}/readyz", timeout=5).status_code == 200
    # Plain HTTP: no review there, whatever the Host header claims, and no metrics.
    body = json.dumps(review("Pod", workload("Pod", pod_spec("keycloak:20.0"))))
    for headers in ({}, {"Host": f"localhost:{server.port}"}):
        answer = requests.post(f"{base}/mutate", data=body, headers=headers, timeout=5)
        assert answer.status_code == 404
    assert requests.get(f"{base}/metrics", timeout=5).status_code == 404
    # The TLS port still answers the probes (a chart from before the health port probes it).
    assert server.get("/healthz").status_code == 200
