"""Figure 5's floor that answers with ours' JSONPatch (bench/cluster.py, bench/floor_app.py),
from plain data: the patch is ours', the floor returns it, the table prints the goal's row."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import cluster, floor_app, main


def test_the_patching_floor_answers_with_ours_patch() -> None:
    patch = cluster.ours_patch()
    ops = json.loads(base64.b64decode(patch))
    assert [op["path"] for op in ops] == [
        "/spec/template/spec/initContainers/0/image",
        "/spec/template/spec/containers/0/image",
        "/spec/template/spec/containers/1/image",
    ]
    assert all("@sha256:" in op["value"] for op in ops)
    app = floor_app.create_floor_app(patch).test_client()
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}
    answer = app.post("/mutate", json={**review, "request": {"uid": "u1"}}).get_json()
    assert answer["response"] == {
        "uid": "u1",
        "allowed": True,
        "patchType": "JSONPatch",
        "patch": patch,
    }
    plain = floor_app.create_floor_app().test_client()
    answer = plain.post("/mutate", json={**review, "request": {"uid": "u2"}}).get_json()
    assert answer["response"] == {"uid": "u2", "allowed": True}


def test_the_table_prints_ours_minus_the_patching_floor() -> None:
    side = {"median_ms": 5.0, "p99_ms": 9.0, "n": 200}
    diff = {"median_ms": 0.4, "p99_ms": 1.5}
    apiserver = {
        **{s: side for s in ("without_webhook", "floor_webhook", "floor_patch_webhook")},
        "with_webhook": side,
        **{
            k: diff
            for k in (
                "paired_difference",
                "floor_paired_difference",
                "ours_minus_floor",
                "floor_patch_paired_difference",
                "ours_minus_floor_patch",
            )
        },
    }
    results = {
        "machine_before": {"cores": 2, "loadavg": [0.1, 0.2, 0.3]},
        "sections": {"apiserver": apiserver},
    }
    rows = [r for r in main.table_rows(results) if r[0] == "5 API server"]
    assert (
        "5 API server",
        "create deployment, floor patch webhook",
        "median 5.0 / p99 9.0 ms (n=200)",
    ) in rows
    assert (
        "5 API server",
        "ours - floor with the same patch (goal: median ≤ 1 ms)",
        "median +0.4 / p99 +1.5 ms",
    ) in rows


def test_figures_5_and_7_print_each_side_then_each_difference() -> None:
    """Figure 7 (on the node) is laid out as figure 5 is; a figure-5 result from before the
    patching floor prints without the floor-patch rows."""
    side = {"median_ms": 5.0, "p99_ms": 9.0, "n": 200}
    diff = {"median_ms": 0.4, "p99_ms": -1.5}
    node = {
        **{s: side for s in ("without_webhook", "floor_webhook", "with_webhook")},
        **{k: diff for k in ("paired_difference", "floor_paired_difference", "ours_minus_floor")},
    }
    old_apiserver = {k: v for k, v in node.items() if k != "floor_webhook"}
    results = {
        "machine_before": {"cores": 2, "loadavg": [0.1, 0.2, 0.3]},
        "sections": {"apiserver": old_apiserver, "node": node},
    }
    rows = [r for r in main.table_rows(results) if r[0] in ("5 API server", "7 on the node")]
    latency = "median 5.0 / p99 9.0 ms (n=200)"
    difference = "median +0.4 / p99 -1.5 ms"
    assert rows == [
        ("5 API server", "create deployment, without webhook", latency),
        ("5 API server", "create deployment, with webhook", latency),
        ("5 API server", "added by ours (paired)", difference),
        ("5 API server", "added by the no-op floor (paired)", difference),
        ("5 API server", "ours - floor (paired)", difference),
        ("7 on the node", "create deployment, without webhook", latency),
        ("7 on the node", "create deployment, floor webhook", latency),
        ("7 on the node", "create deployment, with webhook", latency),
        ("7 on the node", "added by ours as pods (paired)", difference),
        ("7 on the node", "added by the floor as pods (paired)", difference),
        ("7 on the node", "ours - floor (paired)", difference),
    ]
