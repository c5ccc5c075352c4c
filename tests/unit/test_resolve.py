"""`imagestreams resolve`: offline resolution of multi-document manifests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from streamdata import DIGEST_A, DIGEST_B, image_stream

from webhook.cli.main import main

MANIFESTS = """\
# a comment before the first document stays
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings   # untouched, comments and all
data: {a: "1"}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      containers:
      - name: web
        image: keycloak:20.0
      - name: sidecar
        image: nginx:1.25
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
  namespace: other
spec:
  schedule: "0 0 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
          - name: job
            image: keycloak:20.0
---
apiVersion: v1
kind: Pod
metadata: {name: later}
spec:
  containers: [{name: c, image: "keycloak:21.0"}]
"""


def _streams(tmp_path: Path) -> Path:
    path = tmp_path / "streams.yaml"
    path.write_text(
        yaml.safe_dump_all(
            [
                image_stream(
                    "keycloak", tags={"20.0": f"quay.io/k/keycloak@{DIGEST_A}", "21.0": None}
                ),
                image_stream(
                    "keycloak", namespace="other", tags={"20.0": f"quay.io/k/keycloak@{DIGEST_B}"}
                ),
            ]
        )
    )
    return path


def test_resolve_pins_short_names_and_leaves_the_rest(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    manifests = tmp_path / "app.yaml"
    manifests.write_text(MANIFESTS)
    assert (
        main(
            [
                "resolve",
                "-f",
                str(manifests),
                "--streams-file",
                str(_streams(tmp_path)),
                "-n",
                "team",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    docs = out.split("---\n")
    assert docs[0] == MANIFESTS.split("---\n")[0]  # byte for byte
    assert docs[3] == MANIFESTS.split("---\n")[3]
    deployment, cronjob = yaml.safe_load(docs[1]), yaml.safe_load(docs[2])
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == [f"quay.io/k/keycloak@{DIGEST_A}", "nginx:1.25"]
    job = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert job["image"] == f"quay.io/k/keycloak@{DIGEST_B}"  # its own namespace's stream
    assert "Pod/later: c: image stream tag team/keycloak:21.0 has no image yet" in err


POD = "kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: keycloak:20.0}]\n"


def test_resolve_reads_stdin_from_the_installed_command(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "imagestreams"
    result = subprocess.run(
        [str(exe), "resolve", "-f", "-", "--streams-file", str(_streams(tmp_path)), "-n", "team"],
        input=POD,
        capture_output=True,
        text=True,
        check=True,
    )
    assert (
        yaml.safe_load(result.stdout)["spec"]["containers"][0]["image"]
        == f"quay.io/k/keycloak@{DIGEST_A}"
    )


def test_resolve_reports_a_missing_streams_file(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    manifests = tmp_path / "app.yaml"
    manifests.write_text(MANIFESTS)
    assert main(["resolve", "-f", str(manifests), "--streams-file", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
