"""Leader election (webhook/kube/leader.py) against a fake API server that goes away and
comes back (fake_apiserver.py), with lease times scaled down to seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_apiserver import FakeApiServer

from webhook.kube.leader import LeaseOptions, run_as_leader

NS, NAME = "default", "test-lease"
OPTIONS = LeaseOptions(
    name=NAME, namespace=NS, lease_duration=2.0, renew_deadline=1.2, retry_period=0.2
)


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    yield server
    server.close()


class Candidate:
    """run_as_leader in a thread, recording what happens to it."""

    def __init__(self, api: FakeApiServer, identity: str) -> None:
        self.leading = threading.Event()
        self.lost = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        options = LeaseOptions(**{**OPTIONS.__dict__, "identity": identity})

        def lead() -> None:
            self.leading.set()
            self.stop.wait(30)

        def run() -> None:
            try:
                run_as_leader(api.api_client(), options, lead, on_lost=self.lost.set)
            except BaseException as err:
                self.error = err

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(10)


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"no {what} after {timeout}s"
        time.sleep(0.02)
    return time.monotonic() - started


def holder(api: FakeApiServer) -> Any:
    lease = api.lease(NS, NAME)
    return lease and lease["spec"].get("holderIdentity")


def test_a_leader_keeps_leading_through_an_outage_shorter_than_the_renew_deadline(
    api: FakeApiServer,
) -> None:
    leader = Candidate(api, "a")
    wait_for("leader", leader.leading.is_set, 5)
    for _ in range(2):  # twice: the second outage starts from a renewal after the first
        api.down()
        time.sleep(OPTIONS.renew_deadline * 0.6)
        api.up()
        before = api.lease(NS, NAME)
        wait_for("renewal", lambda b=before: api.lease(NS, NAME) != b, 2 * OPTIONS.retry_period)
    assert not leader.lost.is_set() and leader.error is None and leader.thread.is_alive()
    assert holder(api) == "a"
    leader.finish()
    assert leader.error is None and not leader.thread.is_alive()
    assert not holder(api), "a leader whose work is done releases the lease"


def test_a_leader_that_cannot_renew_steps_down_before_the_lease_expires(
    api: FakeApiServer,
) -> None:
    leader = Candidate(api, "a")
    wait_for("leader", leader.leading.is_set, 5)
    time.sleep(OPTIONS.retry_period * 2)  # renewing
    api.down()
    took = wait_for("step-down", leader.lost.is_set, OPTIONS.lease_duration + 1)
    # Not before the renew deadline; before a follower could take over.
    assert OPTIONS.renew_deadline <= took < OPTIONS.lease_duration
    assert leader.error is None
    leader.finish()


def test_a_follower_survives_outages_and_takes_over_an_abandoned_lease(
    api: FakeApiServer,
) -> None:
    now = "2024-01-01T00:00:00.000000Z"
    spec = {"holderIdentity": "gone", "leaseDurationSeconds": 2, "renewTime": now}
    api.put_lease(NS, NAME, spec)
    follower = Candidate(api, "b")
    time.sleep(0.3)
    api.down()
    time.sleep(1.0)
    api.up()
    assert follower.error is None and not follower.leading.is_set()
    # The holder never renewed since the follower first saw the lease: after the lease's
    # duration on the follower's own clock, the follower takes over.
    wait_for("take-over", follower.leading.is_set, OPTIONS.lease_duration + 2)
    assert holder(api) == "b"
    assert api.lease(NS, NAME)["spec"]["leaseTransitions"] == 1  # type: ignore[index]
    follower.finish()


def test_a_follower_waits_while_the_holder_renews(api: FakeApiServer) -> None:
    spec = {"holderIdentity": "other", "leaseDurationSeconds": 2}
    api.put_lease(NS, NAME, spec)
    follower = Candidate(api, "b")
    ends = time.monotonic() + 1.5 * OPTIONS.lease_duration
    while time.monotonic() < ends:
        api.put_lease(NS, NAME, spec)  # the holder renews
        time.sleep(OPTIONS.retry_period)
    assert not follower.leading.is_set() and follower.error is None
    follower.finish()  # once the holder stops renewing, it takes over, and ends


def test_of_two_candidates_one_leads(api: FakeApiServer) -> None:
    first, second = Candidate(api, "a"), Candidate(api, "b")
    wait_for("a leader", lambda: first.leading.is_set() or second.leading.is_set(), 5)
    time.sleep(OPTIONS.lease_duration)
    assert first.leading.is_set() != second.leading.is_set()
    assert holder(api) == ("a" if first.leading.is_set() else "b")
    # The leader releases the lease, the other takes over, and ends as well.
    first.stop.set()
    second.stop.set()
    for candidate in (first, second):
        candidate.thread.join(10)
        assert not candidate.thread.is_alive() and candidate.error is None


def test_options_keep_the_lease_longer_than_the_leader_may_hold_on() -> None:
    with pytest.raises(ValueError):
        LeaseOptions(lease_duration=10, renew_deadline=9, retry_period=2)
