"""Slow and idle connections against a real `imagestreams serve` (issue 15, item 4).

200 connections stall, 50 in each phase of a request (a TLS ClientHello, headers, a body,
each dripped a byte a second; an idle kept-alive connection), and are opened again as soon
as the server closes them. Meanwhile real reviews must be answered, each within a second,
and the probes on the health port too. Then each phase's deadline must have closed its
connections. With gthread (2 workers x 4 threads) 8 such connections stopped every review.
The figures for 1,000 connections come from `python -m bench.slow_clients`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import data
from bench.slow_clients import PHASES, Target, measure

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from registry_fixtures import free_port
from serving import Served, start_serve

pytestmark = pytest.mark.integration

CONNECTIONS = 200  # what a 2-core CI machine holds beside the server; the bench does 1,000
READ_TIMEOUT = 2.0  # short, so that the deadlines are seen within the test
KEEPALIVE = 3.0
SLACK = 1.5  # scheduling on a loaded machine, and the client noticing the close
# Few streams: a worker accepts only once they are loaded, and start_serve's first /readyz
# gives up after 5 s.
STREAMS = 300


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, int]]:
    tmp = tmp_path_factory.mktemp("slow")
    streams = data.write_streams_file(tmp / "streams.json", STREAMS)
    health = free_port()
    server = start_serve(
        tmp,
        "--streams-file", str(streams),
        "--read-timeout", str(READ_TIMEOUT),
        "--keepalive", str(KEEPALIVE),
        "--health-bind", f"127.0.0.1:{health}",
        "--log-level", "warning",
    )  # fmt: skip
    yield server, health
    server.stop()


@pytest.fixture(scope="module")
def figures(served: tuple[Served, int]) -> dict[str, Any]:
    server, health = served
    target = Target(server.port, server.ca, probe_port=health, pid=server.process.pid)
    bodies = [data.encode(b) for b in data.reviews(30, STREAMS)]
    return measure(
        target,
        list(PHASES),
        CONNECTIONS,
        bodies,
        hold=4.0,
        settle=5.0,
        linger=KEEPALIVE + SLACK,
    )


def test_reviews_are_answered_within_a_second_while_connections_stall(
    figures: dict[str, Any],
) -> None:
    held = figures["held_while_timing"]
    assert min(held) >= CONNECTIONS * 0.8, figures  # they were open while reviews were timed
    reviews = figures["reviews"]
    assert reviews["failed"] == 0, reviews
    assert reviews["ok"] >= 10, reviews
    assert reviews["latency_ms"]["max"] < 1000, reviews


def test_probes_are_answered_while_connections_stall(figures: dict[str, Any]) -> None:
    probes = figures["probes"]
    assert probes["failed"] == 0, probes
    assert probes["ok"] >= 4, probes
    assert probes["latency_ms"]["max"] < 1000, probes


@pytest.mark.parametrize("phase", PHASES)
def test_every_phase_has_a_deadline(figures: dict[str, Any], phase: str) -> None:
    stalled = figures["stalled"][phase]
    # The idle wait is the keep-alive; every other phase is a read of the request.
    limit = (KEEPALIVE if phase == "idle" else READ_TIMEOUT) + SLACK
    assert stalled["closed_by_server"] >= CONNECTIONS // len(PHASES), stalled
    assert stalled["closed_after_s"]["max"] <= limit, stalled
