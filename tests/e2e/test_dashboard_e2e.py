"""The chart's Grafana dashboard against what the programs really export: every metric a
panel queries must be in the /metrics of a running webhook or controller (on the loopback
cluster, after an import and an admission review, so that labelled series exist too)."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
import requests
from clusterkit import Namespace, push_image
from localcluster import free_ports
from test_controller_e2e import Controllers, controllers, history, stream, wait_for

pytestmark = pytest.mark.e2e

DASHBOARD = Path(__file__).resolve().parents[2] / "charts/imagestreams/dashboards/imagestreams.json"
METRIC = re.compile(r"\b(imagestreams_[a-z0-9_]+)")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}

__all__ = ["controllers"]  # the fixture, used here by name


def queried() -> set[str]:
    """Every metric name in a panel's PromQL."""
    names: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                names.update(METRIC.findall(node["expr"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(DASHBOARD.read_text()))
    return names


def exported(text: str) -> set[str]:
    """The series names an exposition has or declares (a labelled metric with no sample
    yet still has its TYPE line)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            base = name.removesuffix("_total") if kind == "counter" else name
            names.update(base + suffix for suffix in SUFFIXES.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_metric_the_dashboard_queries_is_exported(
    namespace: Namespace, controllers: Controllers, tmp_path: Path
) -> None:
    cluster = namespace.cluster
    port = free_ports(["metrics"])["metrics"]
    controllers.start("--metrics-bind", f"127.0.0.1:{port}")
    repo = f"{cluster.registry}/{namespace.name}/dash"
    digest = push_image(f"{repo}:1", "dash", tmp_path)
    stream(namespace, "dash", [{"name": "1", "from": {"kind": "DockerImage", "name": f"{repo}:1"}}])
    wait_for(cluster, "the import", lambda: history(namespace, "dash", "1") == [digest])
    namespace.sync()
    assert namespace.dry_run_pod("dash:1") == f"{repo}@{digest}"  # an admission review

    url = f"http://127.0.0.1:{port}/metrics"
    controller = urllib.request.urlopen(url, timeout=5).read().decode()
    webhook = requests.get(
        f"{cluster.webhook_url}/metrics", verify=cluster.webhook_certs / "ca.crt", timeout=5
    ).text

    names = queried()
    assert len(names) >= 10, names
    missing = names - exported(controller) - exported(webhook)
    assert not missing, f"the dashboard queries metrics nobody exports: {sorted(missing)}"
    for text in (controller, webhook):
        assert "imagestreams_build_info{" in text
        assert "_created" not in text
    # Both programs are on the board, not just one.
    assert names & exported(controller) and names & exported(webhook)
