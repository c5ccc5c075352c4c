"""The list-then-watch loop (webhook/kube/watch.py) over any Source, with a scripted one:
what the API server answers decides what the loop does, whichever client asked."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import ijson
import pytest
from sinks import NameSink as Sink

from webhook.kube.listwatch import ApiError
from webhook.kube.watch import ClientSource, Pages, Source, Watcher


def obj(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": rv}}


class Scripted:
    """A Source whose answers are given in advance; it records what it was asked."""

    def __init__(self, pages: list[Any], watches: list[Any]) -> None:
        self.pages, self.watches = pages, watches
        self.asked: list[tuple[str, Any]] = []
        self.done = threading.Event()

    def list_page(self, limit: int, token: str | None) -> bytes:
        self.asked.append(("list", token))
        answer = self.pages.pop(0) if self.pages else ApiError(500, "no more")
        if isinstance(answer, Exception):
            raise answer
        return json.dumps(answer).encode()

    def watch(self, resource_version: str, timeout: int) -> Iterator[tuple[str, dict[str, Any]]]:
        self.asked.append(("watch", resource_version))
        if not self.watches:
            self.done.set()
            raise ApiError(500, "no more")
        answer = self.watches.pop(0)
        if isinstance(answer, Exception):
            raise answer
        yield from answer

    def readyz(self, timeout: float) -> int | None:
        return 200


def run(source: Scripted, sink: Sink, **kw: Any) -> None:
    watcher = Watcher(sink, source, what="things", max_backoff=0.01, **kw).start()
    assert source.done.wait(10), source.asked
    watcher.stop()
    watcher._thread.join(5)  # no log line after the test's capture has ended


def page(names: list[str], rv: str, token: str = "") -> dict[str, Any]:
    return {
        "metadata": {"resourceVersion": rv, "continue": token},
        "items": [obj(n, rv) for n in names],
    }


def test_a_scripted_source_is_a_source_and_a_list_call_is_wrapped() -> None:
    assert isinstance(Scripted([], []), Source)
    assert not isinstance(print, Source)
    assert isinstance(ClientSource(print), Source)


def test_pages_then_events_and_a_bookmark_moves_the_version_and_410_relists() -> None:
    source = Scripted(
        pages=[page(["a"], "5", token="t1"), page(["b"], "6"), page(["c"], "9")],
        watches=[
            [("ADDED", obj("d", "7")), ("BOOKMARK", {"metadata": {"resourceVersion": "8"}})],
            ApiError(410, "Expired: too old"),
        ],
    )
    sink = Sink()
    run(source, sink)
    assert source.asked[:6] == [
        ("list", None), ("list", "t1"), ("watch", "6"),  # the last page's version
        ("watch", "8"),  # the watch resumed from the bookmark's version: no relist
        ("list", None), ("watch", "9"),  # 410 Gone: a new list, then a watch from it
    ]  # fmt: skip
    assert sink.lists == 2 and sink.names == {"c"}


def test_a_missing_kind_is_empty_and_ready_when_missing_ok(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = Scripted(pages=[ApiError(404, "Not Found"), ApiError(404, "Not Found")], watches=[])
    sink = Sink()
    caplog.set_level(logging.INFO)
    watcher = Watcher(sink, source, what="policies", missing_ok=True, max_backoff=0.01).start()
    try:
        for _ in range(200):
            if len(source.asked) >= 3:
                break
            threading.Event().wait(0.01)
    finally:
        watcher.stop()
        watcher._thread.join(5)
    assert sink.ready and sink.names == set()
    assert [a for a, _ in source.asked[:3]] == ["list", "list", "list"]  # tried again
    assert "no such resource" in caplog.text


def test_forbidden_says_what_the_service_account_needs(caplog: pytest.LogCaptureFixture) -> None:
    source = Scripted(pages=[ApiError(403, "Forbidden"), page([], "1")], watches=[])
    with caplog.at_level(logging.ERROR):
        run(source, Sink())
    assert "things: forbidden; the service account needs list and watch" in caplog.text


def test_a_page_is_decoded_one_object_at_a_time() -> None:
    """The first object reaches the sink before the rest of its page is decoded (here the
    rest is broken, and only the second object fails): a page is never held whole."""
    broken = b'{"metadata": {"resourceVersion": "3"}, "items": [{"metadata": {"name": "a"}}, {"me'

    class OnePage(Scripted):
        def list_page(self, limit: int, token: str | None) -> bytes:
            return broken

    objects = iter(Pages(OnePage([], []), 10))
    assert next(objects) == {"metadata": {"name": "a"}}
    with pytest.raises(ijson.JSONError, match="premature EOF"):
        next(objects)
