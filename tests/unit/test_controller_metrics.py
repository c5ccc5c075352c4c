"""The controller's metrics: bounded registry labels, build_info, no `_created` series."""

from __future__ import annotations

import platform

import pytest
from prometheus_client import generate_latest

from webhook.controller.importer import ImportResult
from webhook.controller.metrics import (
    OTHER_REGISTRY,
    ControllerMetrics,
    registry_label,
    registry_labels,
)


@pytest.mark.parametrize(
    ("host", "label"),
    [
        ("registry-1.docker.io", "docker.io"),  # Docker Hub's API host is Docker Hub
        ("docker.io", "docker.io"),
        ("QUAY.IO", "quay.io"),
        ("harbor.corp:5000", "harbor.corp:5000"),
        ("harbor.corp", OTHER_REGISTRY),  # another port is another registry
        ("auth.docker.io", OTHER_REGISTRY),  # token servers and blob CDNs are not named
        ("tenant-chose-this.example", OTHER_REGISTRY),
        ("", OTHER_REGISTRY),
    ],
)
def test_registry_label_names_only_configured_and_well_known_registries(
    host: str, label: str
) -> None:
    assert registry_label(host, registry_labels(["harbor.corp:5000"])) == label


def test_a_thousand_tenant_registries_make_one_series() -> None:
    metrics = ControllerMetrics(registries=["harbor.corp:5000"])
    for i in range(1000):
        metrics.count_request(f"r{i}.example", "HEAD", 200)
        metrics.observe_import(f"r{i}.example", ImportResult("t"), "spec", 0.1)
    metrics.count_request("harbor.corp:5000", "HEAD", 200)
    text = generate_latest(metrics.registry).decode()
    requests = [ln for ln in text.splitlines() if ln.startswith("imagestreams_registry_requests")]
    assert requests == [
        'imagestreams_registry_requests_total{code="200",method="HEAD",registry="other"} 1000.0',
        'imagestreams_registry_requests_total{code="200",method="HEAD",registry="harbor.corp:5000"}'
        " 1.0",
    ]
    imports = [ln for ln in text.splitlines() if ln.startswith("imagestreams_imports_total")]
    assert len(imports) == 1 and 'registry="other"' in imports[0]


def test_build_info_and_no_created_series(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGESTREAMS_REVISION", "0123abc")
    text = generate_latest(ControllerMetrics().registry).decode()
    info = [ln for ln in text.splitlines() if ln.startswith("imagestreams_build_info{")]
    assert len(info) == 1
    assert f'python="{platform.python_version()}"' in info[0]
    assert 'revision="0123abc"' in info[0] and info[0].endswith(" 1.0")
    metrics = ControllerMetrics()
    metrics.observe_import("quay.io", ImportResult("t"), "spec", 0.1)
    assert "_created" not in generate_latest(metrics.registry).decode()
