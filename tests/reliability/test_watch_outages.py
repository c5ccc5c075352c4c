"""The list-then-watch loop (webhook/kube/watch.py) through API-server outages, against a
fake API server (fake_apiserver.py): once the API server answers again, the copy catches up
within about a second, however long the outage was; through the kubernetes client (the
controller's) and through the webhook's thin client (webhook/kube/listwatch.py) alike."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_apiserver import FakeApiServer

from webhook.kube.connect import GROUP, PLURAL, VERSION
from webhook.kube.kubeconfig import RestConfig
from webhook.kube.listwatch import RestClient, collection_path
from webhook.kube.watch import StreamWatcher, Watcher

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from sinks import NameSink as Names

CATCH_UP = 2.0  # seconds from the API server being ready to the copy having a new stream


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    yield server
    server.close()


def start_watch(api: FakeApiServer, sink: Names, client: str, watch_timeout: int = 300) -> Watcher:
    if client == "thin":
        rest = RestClient(RestConfig(server=api.url))
        source = rest.resource(collection_path(GROUP, VERSION, PLURAL))
        return Watcher(sink, source, what="image streams", watch_timeout=watch_timeout).start()
    from kubernetes import client as kubernetes

    custom = kubernetes.CustomObjectsApi(api.api_client())
    return StreamWatcher(sink, custom, watch_timeout=watch_timeout).start()


@pytest.mark.parametrize("client", ["kubernetes", "thin"])
def test_a_watch_from_a_compacted_version_relists(api: FakeApiServer, client: str) -> None:
    api.add_stream("team", "before")
    sink = Names()
    watcher = start_watch(api, sink, client, watch_timeout=1)  # it watches again each second
    try:
        assert sink.listed.wait(5) and sink.lists == 1
        api.add_stream_unseen("team", "unseen")  # no event: only a relist can find it
        deadline = time.monotonic() + 20
        while "unseen" not in sink.names:
            assert time.monotonic() < deadline, "no relist after 410 Gone"
            time.sleep(0.05)
        assert sink.lists == 2
        api.add_stream("team", "after")  # ...and the watch goes on from the new list
        while "after" not in sink.names:
            assert time.monotonic() < deadline, "no watch after the relist"
            time.sleep(0.05)
    finally:
        watcher.stop()


@pytest.mark.parametrize("client", ["kubernetes", "thin"])
@pytest.mark.parametrize(
    ("down", "unready", "hold"),
    [(4.0, 0.0, 0.0), (2.5, 1.0, 0.0), (2.0, 1.5, 3.0)],
    ids=["connections-refused", "then-503-while-starting", "then-held-while-starting"],
)
def test_the_copy_catches_up_soon_after_the_api_server_is_back(
    api: FakeApiServer,
    monkeypatch: pytest.MonkeyPatch,
    down: float,
    unready: float,
    hold: float,
    client: str,
) -> None:
    # No jitter: every wait is the longest the backoff allows, so the test is the worst case.
    monkeypatch.setattr("webhook.model.backoff.random.uniform", lambda low, high: high)
    api.add_stream("team", "before")
    sink = Names()
    watcher = start_watch(api, sink, client)
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
