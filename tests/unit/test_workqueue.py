"""The work queue and the rate limiter, driven by a fake clock (no sleeping)."""

from __future__ import annotations

import threading

from webhook.controller.ratelimit import ImportLimiter, TokenBucket
from webhook.kube.workqueue import WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_keys_are_deduplicated_and_fifo() -> None:
    q: WorkQueue[str] = WorkQueue()
    for key in ["a", "b", "a", "c"]:
        q.add(key)
    assert len(q) == 3
    assert [q.get(0), q.get(0), q.get(0), q.get(0)] == ["a", "b", "c", None]


def test_a_key_added_while_active_runs_again_after_done() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get(0) == "a"
    q.add("a")
    assert q.get(0) is None  # never two workers on one key
    q.done("a")
    assert q.get(0) == "a"
    q.done("a")
    assert q.get(0) is None


def test_add_after_waits_and_the_earliest_due_time_wins() -> None:
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(clock)
    q.add_after("a", 10)
    q.add_after("a", 5)
    q.add_after("a", 20)
    assert q.get(0) is None
    clock.now += 5
    assert q.get(0) == "a"
    q.done("a")
    clock.now += 100
    assert q.get(0) is None  # the superseded entries do not fire


def test_add_now_cancels_a_delay() -> None:
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(clock)
    q.add_after("a", 10)
    q.add("a")
    assert q.get(0) == "a"
    q.done("a")
    clock.now += 10
    assert q.get(0) is None


def test_close_wakes_blocked_workers() -> None:
    q: WorkQueue[str] = WorkQueue()
    got: list[str | None] = []
    worker = threading.Thread(target=lambda: got.append(q.get()))
    worker.start()
    q.close()
    worker.join(5)
    assert got == [None]


def test_token_bucket_spaces_requests_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=1.0, burst=2, clock=clock)
    assert [bucket.reserve(), bucket.reserve()] == [0.0, 0.0]
    assert bucket.reserve() == 1.0
    assert bucket.reserve() == 2.0
    clock.now += 10
    assert bucket.reserve() == 0.0


def test_unlimited_bucket_never_waits() -> None:
    assert all(TokenBucket(0, 1).reserve() == 0 for _ in range(1000))


def test_import_limiter_applies_global_and_per_registry_limits() -> None:
    slept: list[float] = []
    limiter = ImportLimiter(per_minute=600, per_registry_per_minute=6, sleep=slept.append)
    limiter.wait("quay.io")  # the registry's one token of burst
    assert slept == []
    limiter.wait("docker.io")  # another registry has its own bucket
    assert slept == []
    limiter.wait("quay.io")
    assert len(slept) == 1 and 9 < slept[0] <= 10  # 6 a minute: one every 10 s


def test_urgent_keys_go_ahead_of_the_ordinary_lane() -> None:
    q: WorkQueue[str] = WorkQueue()
    for i in range(3000):  # a scheduled pass that is due
        q.add(f"s{i}")
    q.add("asked", urgent=True)
    q.add("asked-too", urgent=True)
    assert q.urgent() == 2
    assert [q.get(0), q.get(0), q.get(0)] == ["asked", "asked-too", "s0"]
    assert len(q) == 2999


def test_an_urgent_add_moves_a_waiting_key_once() -> None:
    q: WorkQueue[str] = WorkQueue()
    for key in ["a", "b", "c"]:
        q.add(key)
    q.add("c", urgent=True)
    q.add("c")  # an ordinary add does not move it back
    assert len(q) == 3
    assert [q.get(0), q.get(0), q.get(0), q.get(0)] == ["c", "a", "b", None]


def test_an_urgent_add_while_active_is_urgent_after_done() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    q.add("b")
    assert q.get(0) == "a"
    q.add("a", urgent=True)
    q.add("a")
    q.done("a")
    assert [q.get(0), q.get(0)] == ["a", "b"]


def test_a_delayed_key_joins_the_ordinary_lane_when_due() -> None:
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(clock)
    q.add_after("later", 5)
    q.add("now")
    clock.now += 5
    q.add("asked", urgent=True)
    assert [q.get(0), q.get(0), q.get(0)] == ["asked", "now", "later"]
