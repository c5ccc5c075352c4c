"""Bounded reads of what a registry sends (webhook/registry/bodies.py): the parts that need no
server; tests/reliability/test_hostile_registry.py runs them against a hostile one."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from webhook.registry.bodies import Watchdog, content_length


@pytest.mark.parametrize(
    ("value", "length"),
    [
        ("123", 123),
        (" 7 ", 7),
        (None, None),
        ("", None),
        ("-1", None),
        ("1e3", None),
        ("\u00b2", None),  # a digit to str.isdigit, not to int()
        ("9" * 5000, 1 << 62),  # more digits than int() parses: larger than any limit
    ],
)
def test_content_length(value: str | None, length: int | None) -> None:
    assert content_length(value) == length


def test_watchdog_fires_after_its_time() -> None:
    fired = threading.Event()
    with Watchdog(0.05, fired.set) as dog:
        assert fired.wait(2)
    assert dog.fired


def test_watchdog_is_quiet_when_the_block_ends_in_time() -> None:
    fired = threading.Event()
    with Watchdog(0.2, fired.set) as dog:
        pass
    time.sleep(0.3)
    assert not fired.is_set() and not dog.fired


def test_watchdogs_share_one_thread() -> None:
    # A registry request arms two watchdogs; a thread each cost more CPU than the request.
    before = threading.active_count()
    with contextlib.ExitStack() as stack:
        for _ in range(50):
            stack.enter_context(Watchdog(30, lambda: None))
        assert threading.active_count() <= before + 1


def test_an_earlier_deadline_armed_later_fires_first() -> None:
    fired: list[str] = []
    done = threading.Event()

    def late() -> None:
        fired.append("late")

    def early() -> None:
        fired.append("early")
        done.set()

    with Watchdog(5, late), Watchdog(0.05, early) as dog:
        assert done.wait(2)
    assert dog.fired and fired == ["early"]


def test_many_ended_watchdogs_do_not_keep_the_live_one_from_firing() -> None:
    for _ in range(3000):  # past the point where ended ones are swept out
        with Watchdog(30, lambda: None):
            pass
    fired = threading.Event()
    with Watchdog(0.05, fired.set) as dog:
        assert fired.wait(2)
    assert dog.fired
