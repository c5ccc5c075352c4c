"""A webhook whose stream index has not loaded (issue 15, item 5): a real `imagestreams
serve` whose API server does not answer.

A fresh worker takes no connection while it waits for its first list (the other workers
would take them); after INDEX_WAIT it serves, and then /readyz fails, /mutate allows every
object unchanged with a warning naming the images it left, and /validate (the policies are
not loaded either) answers 503 so the registration's failurePolicy decides.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from streamdata import pod_spec, review, workload

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from registry_fixtures import free_port
from serving import BIN, Served, make_certs

from webhook.serving.server import INDEX_WAIT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, float]]:
    """The server, and how long it took to answer its first request."""
    tmp = tmp_path_factory.mktemp("unloaded")
    make_certs(tmp / "certs", "localhost")
    kubeconfig = tmp / "kubeconfig"
    nobody = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": nobody}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    port = free_port()
    log = tmp / "serve.log"
    began = time.monotonic()
    process = subprocess.Popen(
        [
            str(BIN), "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2",
            "--certfile", str(tmp / "certs/tls.crt"), "--keyfile", str(tmp / "certs/tls.key"),
            "--kubeconfig", str(kubeconfig),
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    served = Served(f"https://127.0.0.1:{port}", port, str(tmp / "certs/ca.crt"), tmp, process, log)
    try:
        while True:
            try:
                served.get("/healthz")  # waits in the listen queue until a worker accepts
                break
            except (requests.ConnectionError, requests.Timeout):
                if process.poll() is not None or time.monotonic() - began > 60:
                    pytest.fail(f"imagestreams serve did not answer:\n{log.read_text()}")
                time.sleep(0.2)
        yield served, time.monotonic() - began
    finally:
        served.stop()


def test_a_worker_waits_for_its_index_before_taking_connections(
    started: tuple[Served, float],
) -> None:
    served, first_answer = started
    assert first_answer >= INDEX_WAIT
    assert "indexes not loaded after" in served.log.read_text()


def test_readiness_fails_until_the_index_has_loaded(started: tuple[Served, float]) -> None:
    served, _ = started
    response = served.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "image stream index not loaded yet"}


def test_mutate_allows_unchanged_with_a_warning(started: tuple[Served, float]) -> None:
    served, _ = started
    body = review("Deployment", workload("Deployment", pod_spec("keycloak:20.0", "nginx")))
    response = served.post("/mutate", body)
    assert response.status_code == 200
    answer = response.json()["response"]
    assert answer["allowed"] is True and "patch" not in answer
    assert answer["warnings"] == [
        "image streams not loaded yet (the webhook is starting); left as is: "
        "c0=keycloak:20.0, c1=nginx"
    ]


def test_validate_leaves_it_to_the_failure_policy(started: tuple[Served, float]) -> None:
    served, _ = started
    body = review("Deployment", workload("Deployment", pod_spec("nginx")))
    response = served.post("/validate", body)
    assert response.status_code == 503
    assert response.json() == {"error": "image policy index not loaded yet"}
