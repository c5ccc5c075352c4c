"""`imagestreams serve` as the image runs it: `--log-format json` as the chart passes it,
a $HOME that nothing should write to, and what /metrics exports."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from streamdata import DIGEST_A, image_stream, pod_spec, review, workload

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import Served, start_serve

pytestmark = pytest.mark.integration

REVIEW = review("Deployment", workload("Deployment", pod_spec("app:1")))
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, home: Path) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("serve-json")
    streams = tmp / "streams.yaml"
    streams.write_text(yaml.safe_dump(image_stream("app", tags={"1": f"x.io/app@{DIGEST_A}"})))
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    env["HOME"] = str(home)
    env["IMAGESTREAMS_REVISION"] = "0123abc"
    server = start_serve(tmp, "--log-format", "json", "--streams-file", str(streams), env=env)
    answer = server.post("/mutate", REVIEW)
    assert answer.status_code == 200
    yield server
    if server.process.poll() is None:
        server.stop()


def test_gunicorn_opens_no_control_socket(served: Served, home: Path) -> None:
    # gunicorn 25.1+ would create $HOME/.gunicorn/gunicorn.ctl (and log an error where it
    # cannot: the image's root file system is read-only).
    assert list(home.iterdir()) == []
    problems = [line for line in served.log.read_text().splitlines() if '"ERROR"' in line]
    assert problems == []


def test_every_line_is_json_with_an_iso_utc_time(served: Served) -> None:
    served.stop()  # the shutdown lines too
    lines = served.log.read_text().splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    for record in records:
        assert ISO_UTC.match(record["time"]), record
        assert record["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), record
    gunicorn = [r for r in records if r["logger"] == "gunicorn.error"]
    messages = " | ".join(r["message"] for r in gunicorn)
    assert "Starting gunicorn" in messages and "Booting worker" in messages, messages
    assert "Shutting down" in messages, messages


def test_metrics_have_build_info_and_no_created_series(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A server of its own: the module's is stopped by the log test.
    tmp = tmp_path_factory.mktemp("serve-metrics")
    streams = tmp / "streams.yaml"
    streams.write_text(yaml.safe_dump(image_stream("app", tags={"1": f"x.io/app@{DIGEST_A}"})))
    env = {**os.environ, "IMAGESTREAMS_REVISION": "0123abc"}
    server = start_serve(tmp, "--streams-file", str(streams), env=env)
    try:
        for _ in range(3):
            server.post("/mutate", REVIEW)
        text = server.get("/metrics").text
    finally:
        server.stop()
    info = [line for line in text.splitlines() if line.startswith("imagestreams_build_info{")]
    assert len(info) == 1, info  # one series, not one per worker
    assert 'revision="0123abc"' in info[0] and info[0].endswith(" 1.0")
    assert re.search(r'version="[^"]+"', info[0]) and re.search(r'python="3\.\d+', info[0])
    assert "_created" not in text
    assert "imagestreams_admission_duration_seconds_bucket" in text
