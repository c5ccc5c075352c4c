"""Figure 4's served rows (bench/webhook_memory.py, bench/main.py) from plain data: each
worker's memory printed beside the issue's target at both sizes."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import main, webhook_memory


def row(streams: int, rss: float, peak: float) -> dict[str, object]:
    return {
        "streams": streams,
        "workers": 2,
        "rss_mib": [rss, rss - 1],
        "peak_mib": [peak, peak - 1],
        "pss_mib": [rss - 10, rss - 11],
        "max_rss_mib": rss,
        "max_peak_mib": peak,
        "pod_pss_mib": 2 * rss,
        "ready_s": 3.0,
        "target_mib": webhook_memory.target_mib(streams),
    }


def test_targets_are_the_issues_at_both_sizes() -> None:
    assert webhook_memory.target_mib(10_000) == 60
    assert webhook_memory.target_mib(50_000) == 150
    assert webhook_memory.target_mib(1_000) is None  # a --quick run's size: no target


def test_rows_print_each_mode_and_size_beside_its_target() -> None:
    served = {
        "file": [row(10_000, 50.0, 55.0), row(50_000, 140.0, 170.0)],
        "watch": [row(10_000, 58.0, 59.0), row(1_000, 45.0, 45.0)],
    }
    rows = main.served_memory_rows(served)
    assert [r[1] for r in rows] == [
        "RSS per worker, file-fed, 10000 streams",
        "RSS per worker, file-fed, 50000 streams",
        "RSS per worker, watch-fed, 10000 streams",
        "RSS per worker, watch-fed, 1000 streams",
    ]
    assert "target ≤ 60 MiB: meets" in rows[0][2]
    assert "peak 170.0 MiB (target ≤ 150 MiB: OVER" in rows[1][2]
    assert "no target at this size" in rows[3][2]
    assert "PSS 40.0 MiB a worker, 100.0 MiB the pod" in rows[0][2]
    assert all(r[0] == "4 webhook memory" for r in rows)
