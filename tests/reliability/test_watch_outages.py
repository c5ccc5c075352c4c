"""The list-then-watch loop (webhook/kube/watch.py) through API-server outages, against a
fake API server (fake_apiserver.py): once the API server answers again, the copy catches up
within about a second, however long the outage was."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pytest
from fake_apiserver import FakeApiServer

from webhook.kube.watch import StreamWatcher

CATCH_UP = 2.0  # seconds from the API server being ready to the copy having a new stream


class Names:
    """A StreamSink that keeps the names it has seen."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.listed = threading.Event()

    def replace_all(self, objs: Iterable[Mapping[str, Any]]) -> None:
        self.names = {obj["metadata"]["name"] for obj in objs}
        self.listed.set()

    def upsert(self, obj: Mapping[str, Any]) -> None:
        self.names.add(obj["metadata"]["name"])

    def delete(self, obj: Mapping[str, Any]) -> None:
        self.names.discard(obj["metadata"]["name"])

    def __len__(self) -> int:
        return len(self.names)


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    yield server
    server.close()


@pytest.mark.parametrize(
    ("down", "unready", "hold"),
    [(4.0, 0.0, 0.0), (2.5, 1.0, 0.0), (2.0, 1.5, 3.0)],
    ids=["connections-refused", "then-503-while-starting", "then-held-while-starting"],
)
def test_the_copy_catches_up_soon_after_the_api_server_is_back(
    api: FakeApiServer, monkeypatch: pytest.MonkeyPatch, down: float, unready: float, hold: float
) -> None:
    # No jitter: every wait is the longest the backoff allows, so the test is the worst case.
    monkeypatch.setattr("webhook.model.backoff.random.uniform", lambda low, high: high)
    from kubernetes import client

    api.add_stream("team", "before")
    sink = Names()
    watcher = StreamWatcher(sink, client.CustomObjectsApi(api.api_client())).start()
    try:
        assert sink.listed.wait(5) and sink.names == {"before"}
        api.down()
        time.sleep(down)
        api.up(unready_for=unready, hold=hold)
        time.sleep(unready)
        ready = time.monotonic()
        api.add_stream("team", "after")
        while "after" not in sink.names:
            assert time.monotonic() - ready < 20, "the watch never caught up"
            time.sleep(0.02)
        took = time.monotonic() - ready
    finally:
        watcher.stop()
    assert took < CATCH_UP, f"caught up {took:.1f}s after the API server was ready"
