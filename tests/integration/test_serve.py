"""`imagestreams serve` for real: gunicorn over TLS on 127.0.0.1, certificates from
`imagestreams certs`, AdmissionReviews shaped like the API server's."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from cryptography import x509

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from streamdata import DIGEST_A, DIGEST_B, image_stream, pod_spec, review, workload

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent / "imagestreams"
KEYCLOAK = f"quay.io/keycloak/keycloak@{DIGEST_A}"


@dataclass
class Server:
    url: str
    port: int
    ca: str
    certs: Path
    process: subprocess.Popen[bytes]
    log: Path

    def post(self, body: Any, **kw: Any) -> requests.Response:
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        headers = {"Content-Type": "application/json"}
        return requests.post(f"{self.url}/mutate", data=data, headers=headers, verify=self.ca, **kw)

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", verify=self.ca, timeout=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_certs(out: Path, *names: str) -> str:
    result = subprocess.run(
        [str(BIN), "certs", "--out-dir", str(out), "--dns", *names, "--ip", "127.0.0.1"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
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
    port = free_port()
    log = tmp / "serve.log"
    process = subprocess.Popen(
        [
            str(BIN),
            "serve",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--certfile",
            str(tmp / "certs/tls.crt"),
            "--keyfile",
            str(tmp / "certs/tls.key"),
            "--streams-file",
            str(streams),
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    srv = Server(
        f"https://127.0.0.1:{port}", port, str(tmp / "certs/ca.crt"), tmp / "certs", process, log
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if srv.get("/readyz").status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"imagestreams serve did not become ready:\n{log.read_text()}")
        time.sleep(0.2)
    yield srv
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=20)


def patch_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(base64.b64decode(answer["response"]["patch"]))


def test_deployment_is_resolved_over_tls(server: Server) -> None:
    body = review("Deployment", workload("Deployment", pod_spec("keycloak:20.0")), uid="uid-1")
    response = server.post(body, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    answer = response.json()
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["response"]["uid"] == "uid-1"
    assert answer["response"]["patchType"] == "JSONPatch"
    assert patch_of(answer) == [
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": KEYCLOAK}
    ]


def test_namespace_decides_the_stream(server: Server) -> None:
    body = review("Pod", workload("Pod", pod_spec("keycloak:20.0")), namespace="other")
    assert patch_of(server.post(body, timeout=5).json())[0]["value"] == f"x.io/k@{DIGEST_B}"
    body = review("Pod", workload("Pod", pod_spec("keycloak:20.0")), namespace="third")
    assert "patch" not in server.post(body, timeout=5).json()["response"]


def test_unimported_tag_gets_a_warning(server: Server) -> None:
    body = review("Pod", workload("Pod", pod_spec("keycloak:21.0")))
    response = server.post(body, timeout=5).json()["response"]
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
def test_bad_bodies_get_400_with_a_json_error(server: Server, body: Any, error: str) -> None:
    response = server.post(body, timeout=5)
    assert response.status_code == 400
    assert error in response.json()["error"]


def test_oversized_body_gets_400(server: Server) -> None:
    big = review("Pod", workload("Pod", pod_spec("keycloak:20.0")))
    big["request"]["object"]["metadata"]["annotations"] = {"x": "y" * (3 * 1024 * 1024)}
    response = server.post(big, timeout=10)
    assert response.status_code == 400
    assert "larger than" in response.json()["error"]


def test_server_survives_bad_input(server: Server) -> None:
    for _ in range(20):
        server.post(b"garbage", timeout=5)
    assert server.get("/healthz").json() == {"status": "ok"}
    assert server.process.poll() is None
    assert "Traceback" not in server.log.read_text()


def test_readyz_reports_the_index(server: Server) -> None:
    assert server.get("/readyz").json() == {"status": "ok", "streams": 2}


def test_metrics_add_up_across_workers(server: Server) -> None:
    def resolved() -> float:
        text = server.get("/metrics").text
        line = next(
            x for x in text.splitlines() if x.startswith("imagestreams_images_resolved_total")
        )
        return float(line.split()[-1])

    before = resolved()
    body = review("Pod", workload("Pod", pod_spec("keycloak:20.0")))
    for _ in range(10):  # new connections each time: spread over both workers
        server.post(body, timeout=5)
    assert resolved() == before + 10


def test_tls_below_1_2_is_refused(server: Server) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(server.ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", server.port)) as sock:
        context.wrap_socket(sock, server_hostname="localhost")


def served_certificate(server: Server) -> x509.Certificate:
    pem = ssl.get_server_certificate(("127.0.0.1", server.port), ca_certs=server.ca)
    return x509.load_pem_x509_certificate(pem.encode())


def test_rotated_certificate_is_served_without_restart(server: Server) -> None:
    before = served_certificate(server)
    make_certs(server.certs, "localhost", "rotated.example")  # same CA, new serving pair
    after = served_certificate(server)
    assert after.serial_number != before.serial_number
    names = after.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "rotated.example" in names.get_values_for_type(x509.DNSName)
    body = review("Pod", workload("Pod", pod_spec("keycloak:20.0")))
    assert server.post(body, timeout=5).status_code == 200
