"""The in-process parts of the benchmarks still run (figure 3 at tiny sizes, the data they
use, the table). No assertion on any timing: timings are the bench's output, not a test."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import data, inproc, main
from webhook.serving import admission
from webhook.serving.stream_index import StreamIndex, file_index


@pytest.fixture(scope="module")
def index() -> StreamIndex:
    idx = StreamIndex()
    idx.replace_all(data.image_streams(300))
    return idx


def test_every_generated_review_resolves_every_short_name(index: StreamIndex) -> None:
    for body in data.reviews(30, 300):
        kind = body["request"]["kind"]["kind"]
        answer = admission.review(json.loads(data.encode(body)), index)
        patch = json.loads(base64.b64decode(answer["response"]["patch"]))
        assert len(patch) == data.expected_patches(kind)
        assert all("@sha256:" in op["value"] for op in patch)
        assert "warnings" not in answer["response"]


def test_streams_file_loads_into_the_index(tmp_path: Path) -> None:
    path = data.write_streams_file(tmp_path / "streams.json", 50, history=3)
    idx = file_index(path)
    assert len(idx) == 50
    entry = idx.get(data.namespace_of(7, 50), data.stream_name(7))
    assert entry is not None and set(entry.images) == set(data.TAGS)


def test_resolution_bench_runs_at_tiny_sizes() -> None:
    result = inproc.bench_resolution([10, 50], pool=6, seconds=0.01, batches=1, log=lambda _: None)
    assert [row["streams"] for row in result["rows"]] == [10, 50]
    for row in result["rows"]:
        assert row["review_us"] > 0 and row["review_json_us"] > 0
        assert set(row["review_us_by_kind"]) == set(data.SHAPES)


def test_table_renders_the_in_process_figures() -> None:
    resolve = inproc.bench_resolution([20], pool=3, seconds=0.01, batches=1, log=lambda _: None)
    results = {
        "machine_before": {"cores": 2, "loadavg": [0.1, 0.2, 0.3]},
        "machine_after": {"cores": 2, "loadavg": [0.1, 0.2, 0.3]},
        "sections": {"resolve": resolve},
        "failed": {"import": "RuntimeError: no cluster"},
    }
    table = main.render_table(results)
    assert "3 resolution" in table and "20 streams" in table
    assert "NOT MEASURED" in table


def test_section_selection() -> None:
    args = main.parse_args(["--only", "admission,resolve", "--skip", "resolve"])
    assert main.selected(args) == ["http"]
    with pytest.raises(SystemExit):
        main.selected(main.parse_args(["--only", "nope"]))


def test_table_prints_controller_memory_beside_its_target() -> None:
    figure = {"peak_rss_mib": 99.5, "rss_after_mib": 90.1, "target_mib": 150.0}
    results = {
        "machine_before": {"cores": 2, "loadavg": [0.1, 0.2, 0.3]},
        "sections": {"controller-memory": {"sizes": {"10000": figure}}},
    }
    table = main.render_table(results)
    assert "8 controller (10,000 x 5 x 3)" in table
    assert "99.5 MiB (target 150 MiB)" in table
    assert main.selected(main.parse_args(["--only", "controller-memory"])) == ["controller-memory"]


def test_table_prints_each_import_figure_beside_its_target() -> None:
    from bench import cluster

    spec, scheduled = (f"imagestreams_imports_total{{trigger={t}}}" for t in ("spec", "scheduled"))

    # Average cores over the pass, at 1,000 tags/s: 0.8 ms a tag in the controller, ...
    cores = {"controller": 0.8, "kube-apiserver": 0.6, "etcd": 0.1, "registry": 0.5}

    def seen(key: str, cpu: float, writes: int, mark_n: int, mark_cpu: float) -> cluster.Pass:
        metrics = {
            key: 50_000.0,
            "imagestreams_registry_requests_total": 50_000.0,
            "imagestreams_status_writes_total": float(writes),
        }
        load = [3.0, 2.0, 1.0]
        return cluster.Pass(
            metrics, 50.0, True, 100 * 1024, cpu, {key: mark_n}, mark_cpu, 2.0, load, load, cores
        )

    first = cluster.pass_summary(seen(spec, 40.0, 10_000, 100, 2.0), spec)
    sched = cluster.pass_summary(seen(scheduled, 22.0, 0, 1_000, 2.4), scheduled)
    assert sched["pass_cpu_ms_per_tag"] == 0.4  # from the first check on: (22 - 2.4) s / 49,000
    assert sched["cpu_ms_per_tag"] == 0.44  # start-up and the initial list included
    results = {
        "machine_before": {"cores": 2, "loadavg": [0.1, 0.2, 0.3]},
        "sections": {
            "import": {
                "targets": cluster.IMPORT_TARGETS,
                "tags": 5,
                "registry_repositories": 200,
                "sizes": {
                    "10000": {"streams": 10_000, "first_pass": first, "scheduled_pass": sched}
                },
            }
        },
    }
    table = main.render_table(results)
    assert "6 import (10,000x5, 200 repos)" in table
    assert "first pass tags/s (target ≥ 800)" in table and "1000.0 tags/s" in table
    assert "(target ≤ 0.5 ms)" in table and "0.4 ms (with start-up and list: 0.44 ms)" in table
    assert "registry requests per tag: first / scheduled (target ≤ 1)" in table
    assert "10,000 / 0" in table and "load 3.0 → 3.0" in table
    assert "controller 0.8, kube-apiserver 0.6, etcd 0.1, registry 0.5" in table
    # 2 ms a tag in all: each core of this machine allows 500 tags/s; the controller, 1,250.
    assert f"all cores: {500.0 * (os.cpu_count() or 1)} tags/s" in table
    assert "the controller alone on a core: 1250.0" in table


def test_wsgi_floor_runs_both_apps_on_the_same_bodies() -> None:
    from bench import wsgi_floor

    out = wsgi_floor.measure(30, rounds=2, pool=6)
    assert out["ours_us"] > 0 and out["floor_us"] > 0 and len(out["paired_us"]) == 2
    assert out["target_us"] == 50


def test_table_prints_goal_4_beside_its_target() -> None:
    def side(*cpu: float) -> dict[str, object]:
        runs = [{"server_cpu_us_per_request": x} for x in cpu]
        return {"server_cpu_us_per_request": sum(cpu) / len(cpu), "runs": runs}

    http = {
        "saturation": {"ours": side(700, 720), "floor": side(660, 660)},
        "fixed_rate": {"ours": side(800, 780), "floor": side(700, 720)},
        "wsgi": {"ours_minus_floor_us": 41.5, "ours_us": 260.0, "floor_us": 218.5},
    }
    rows = {measure: value for _, measure, value in main.goal4_rows(http)}
    assert rows["ours - floor server CPU/req at saturation (goal ≤ 50 µs)"] == (
        "+50 µs (rounds [40, 60])"
    )
    assert rows["ours - floor server CPU/req at the fixed rate (goal ≤ 50 µs)"].startswith("+80 µs")
    assert rows["ours - floor CPU/req in process, WSGI (goal ≤ 50 µs)"] == "+42 µs (260 / 218 µs)"
    assert not any(measure.startswith("floor holding") for measure in rows)


def test_table_prints_what_holding_the_index_costs_the_floor() -> None:
    def side(cpu: float) -> dict[str, object]:
        return {"server_cpu_us_per_request": cpu, "runs": [{"server_cpu_us_per_request": cpu}]}

    phase = {"ours": side(800), "floor": side(700), "floor+index": side(745)}
    rows = {m: v for _, m, v in main.goal4_rows({"saturation": phase, "fixed_rate": phase})}
    assert rows["floor holding ours' index - floor, at saturation"] == "+45 µs"
    assert rows["floor holding ours' index - floor, at the fixed rate"] == "+45 µs"


def test_the_floor_holds_the_indexes_ours_builds(tmp_path: Path) -> None:
    from bench.floor_app import held_indexes

    path = data.write_streams_file(tmp_path / "streams.json", 20)
    index, images = held_indexes(str(path))
    assert len(index) == 20 and index.ready and images.ready


def test_rounds_alternate_with_the_floor_first_then_last() -> None:
    from bench.http import _rounds

    assert list(_rounds(2, ["ours", "floor"])) == [["floor", "ours"], ["ours", "floor"]]
    three = list(_rounds(2, ["ours", "floor", "floor+index"]))
    assert three == [["floor", "ours", "floor+index"], ["floor+index", "ours", "floor"]]
