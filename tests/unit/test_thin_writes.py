"""The thin client's PUT (webhook/kube/listwatch.py RestClient.put) over a real socket whose
server drops connections on purpose: what the API server cannot be made to do on demand. A
write whose connection broke under way is sent once more, not more. Its conflicts, 404s and
error statuses against the real API server: tests/e2e/test_stream_status_e2e.py."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
import urllib3

from webhook.kube.kubeconfig import RestConfig
from webhook.kube.listwatch import RestClient


class Dropping:
    """An HTTP server that closes the first `drops` connections on reading their request,
    and answers the others with 200 and the JSON body it was sent."""

    def __init__(self, drops: int) -> None:
        self.drops = drops
        self.requests: list[list[bytes]] = []  # each request's line and headers
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return  # closed
            with conn, contextlib.suppress(ConnectionError):
                head, body = _read_request(conn)
                self.requests.append(head)
                if len(self.requests) <= self.drops:
                    continue
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                )

    def close(self) -> None:
        self._socket.close()


def _read_request(conn: socket.socket) -> tuple[list[bytes], bytes]:
    """A request's line and headers, and its whole body (which may come in a later segment)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += _received(conn)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(h.split(b":")[1]) for h in lines if h.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += _received(conn)
    return lines, body


def _received(conn: socket.socket) -> bytes:
    chunk = conn.recv(65536)
    if not chunk:
        raise ConnectionError("the client closed the connection mid-request")
    return chunk


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Dropping]:
    dropping = Dropping(request.param)
    yield dropping
    dropping.close()


@pytest.mark.parametrize("server", [1], indirect=True)
def test_a_write_whose_connection_broke_is_sent_once_more(server: Dropping) -> None:
    client = RestClient(RestConfig(server=server.url))
    assert client.put("/apis/g/v1/x/status", {"status": {"n": 1}}) == {"status": {"n": 1}}
    assert [r[0] for r in server.requests] == [b"PUT /apis/g/v1/x/status HTTP/1.1"] * 2
    assert b"Content-Type: application/json" in server.requests[1]


@pytest.mark.parametrize("server", [2], indirect=True)
def test_a_write_broken_twice_is_an_error(server: Dropping) -> None:
    client = RestClient(RestConfig(server=server.url))
    with pytest.raises(urllib3.exceptions.HTTPError):
        client.put("/x", {})
    assert len(server.requests) == 2
