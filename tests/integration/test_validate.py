"""`POST /validate` for real: `imagestreams serve --streams-file … --policies-file …` under
gunicorn over TLS, with AdmissionReviews shaped like the API server's."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from streamdata import DIGEST_A, DIGEST_B, image_stream, pod_spec, review, workload

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import BIN, Served, make_certs, start_serve

pytestmark = pytest.mark.integration

KEYCLOAK = f"quay.io/keycloak/keycloak@{DIGEST_A}"


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def image_policy(name: str, mode: str, tier: str, **rules: Any) -> dict[str, Any]:
    return {
        "apiVersion": "imagestreams.io/v1alpha1",
        "kind": "ImagePolicy",
        "metadata": {"name": name},
        "spec": {
            "mode": mode,
            "namespaceSelector": {"matchLabels": {"tier": tier}},
            "rules": rules,
        },
    }


class Server(Served):
    def validate(self, body: Any) -> dict[str, Any]:
        response = self.post("/validate", body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()["response"]
        return answer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("validate")
    make_certs(tmp / "certs", "localhost")
    streams = tmp / "streams.yaml"
    streams.write_text(yaml.safe_dump(image_stream("keycloak", tags={"20.0": KEYCLOAK})))
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "policies.yaml").write_text(
        yaml.safe_dump_all(
            [
                image_policy(
                    "prod-streams",
                    "Enforce",
                    "prod",
                    requireImageStream=True,
                    blockedRegistries=["evil.example.com"],
                    allowedRegistriesForImport=["quay.io/keycloak/"],
                ),
                image_policy("dev-digests", "Warn", "dev", requireDigest=True),
                image_policy("audit-digests", "Audit", "audited", requireDigest=True),
            ]
        )
    )
    (policies / "namespaces.json").write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    namespace("team", tier="prod"),
                    namespace("dev", tier="dev"),
                    namespace("audited", tier="audited"),
                ],
            }
        )
    )
    served = start_serve(tmp, "--streams-file", str(streams), "--policies-file", str(policies))
    server = Server(**{f: getattr(served, f) for f in Served.__dataclass_fields__})
    yield server
    server.stop()


def deployment(image: str, namespace: str = "team") -> dict[str, Any]:
    return review(
        "Deployment", workload("Deployment", pod_spec(image), name="x"), namespace=namespace
    )


def test_enforce_denies_a_short_name_without_a_stream(server: Server) -> None:
    answer = server.validate(deployment("nginx:1.25"))
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 403
    message = answer["status"]["message"]
    assert message.startswith('Deployment "x" container "c0": image "nginx:1.25"')
    assert 'ImagePolicy "prod-streams", rule requireImageStream' in message
    assert "kubectl imagestream tag <registry>/nginx:1.25 nginx:1.25 -n team" in message


def test_enforce_admits_the_streams_images(server: Server) -> None:
    assert server.validate(deployment(KEYCLOAK)) == {
        "uid": deployment(KEYCLOAK)["request"]["uid"],
        "allowed": True,
    }
    assert server.validate(deployment("keycloak:20.0"))["allowed"] is True


def test_enforce_denies_a_blocked_registry_even_by_digest(server: Server) -> None:
    answer = server.validate(deployment(f"evil.example.com/x@{DIGEST_B}"))
    assert answer["allowed"] is False
    assert "rule blockedRegistries" in answer["status"]["message"]


def test_warn_allows_with_warnings(server: Server) -> None:
    answer = server.validate(deployment("nginx:1.25", namespace="dev"))
    assert answer["allowed"] is True
    assert len(answer["warnings"]) == 1 and "rule requireDigest" in answer["warnings"][0]


def test_audit_allows_with_an_annotation(server: Server) -> None:
    answer = server.validate(deployment("nginx:1.25", namespace="audited"))
    assert answer["allowed"] is True and "warnings" not in answer
    (record,) = json.loads(answer["auditAnnotations"]["violations"])
    assert record["policy"] == "audit-digests" and record["image"] == "nginx:1.25"


def test_namespaces_without_a_policy_are_untouched(server: Server) -> None:
    answer = server.validate(deployment("nginx:1.25", namespace="elsewhere"))
    assert answer == {"uid": answer["uid"], "allowed": True}


def test_image_stream_import_outside_the_allowed_registries(server: Server) -> None:
    stream = image_stream(
        "nginx", spec_tags=[{"name": "1.25", "from": {"kind": "DockerImage", "name": "nginx:1.25"}}]
    )
    body = review("Pod", stream)
    body["request"]["kind"] = {
        "group": "image.openshift.io",
        "version": "v1",
        "kind": "ImageStream",
    }
    answer = server.validate(body)
    assert answer["allowed"] is False
    assert (
        'ImageStream "nginx" tag "1.25": imports from "nginx:1.25"' in answer["status"]["message"]
    )


def test_mutate_still_resolves(server: Server) -> None:
    response = server.post("/mutate", deployment("keycloak:20.0")).json()["response"]
    assert response["patchType"] == "JSONPatch"


def test_bad_bodies_get_400(server: Server) -> None:
    response = server.post("/validate", b"{nope")
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]


def test_violations_are_counted_across_workers(server: Server) -> None:
    def denied() -> float:
        for line in server.get("/metrics").text.splitlines():
            if (
                line.startswith("imagestreams_policy_validations_total")
                and 'result="denied"' in line
            ):
                return float(line.split()[-1])
        return 0.0

    before = denied()
    for _ in range(6):  # new connections each time: spread over both workers
        server.validate(deployment("nginx:1.25"))
    assert denied() == before + 6
    assert "Traceback" not in server.log.read_text()


def test_a_bad_policies_file_stops_serve_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(image_policy("broken", "Block", "x", requireDigest=True)))
    make_certs(tmp_path / "certs", "localhost")
    result = subprocess.run(
        [
            str(BIN), "serve", "--certfile", str(tmp_path / "certs/tls.crt"),
            "--keyfile", str(tmp_path / "certs/tls.key"), "--policies-file", str(bad),
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert 'error: ImagePolicy "broken": spec.mode must be one of' in result.stderr
