"""Reading what a registry sends, bounded in size and in time.

A registry is untrusted: an ImageStream can name any host, and an import is a request the
controller makes on a user's behalf. Whatever it answers must cost a bounded amount of
memory and a bounded amount of time, or one hostile registry can run the controller out of
memory (an endless token answer) or hold every import worker (a body dripped a byte at a
time, each byte well within the socket's per-read timeout).

- `read_limited` reads a streamed body whole, up to a byte limit and within a deadline;
- `Watchdog` is the deadline: when it fires it shuts the connection's socket down, which
  wakes the thread blocked reading it (a socket timeout bounds one read, not all of them);
- `content_length` reads a `Content-Length` header without trusting it.

Bodies that are not read whole (blobs, which are copied as a stream and checked against
their descriptor's size) do not come here.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType

import requests

READ_CHUNK = 65536


class TooLarge(Exception):
    """The body is larger than the limit; reading stopped there."""


class TooSlow(Exception):
    """The body did not arrive within the deadline; the connection was shut down."""


class Watchdog:
    """Calls `abort` once `seconds` have passed, unless the block has ended by then.

    `with Watchdog(30, abort) as dog: …` then `dog.fired` tells whether it did.
    """

    def __init__(self, seconds: float, abort: Callable[[], None]) -> None:
        self.fired = False
        self._abort = abort
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        # Under the lock: once the block has ended, `abort` never runs (the socket it shuts
        # down may by then be back in the pool, serving another request).
        with self._lock:
            if self._done:
                return
            self.fired = True
            self._abort()

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


def shut_down(sock: socket.socket | None) -> None:
    """Wake whoever is blocked reading `sock`: its reads return end-of-file at once.

    The plain socket's shutdown, also for a TLS socket: SSLSocket.shutdown would first drop
    the TLS state that the blocked reader is still using."""
    if sock is None:
        return
    # OSError: already closed, or never connected: nothing is blocked on it.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The socket a response's body is read from. urllib3's connection drops `sock` as soon
    as the headers say that the connection will close, but the body is still read from it:
    guard's connections keep it as `reading_socket`."""
    connection = getattr(response.raw, "connection", None)
    return getattr(connection, "reading_socket", None) or getattr(connection, "sock", None)


def read_limited(response: requests.Response, limit: int, seconds: float) -> bytes:
    """The whole body of a streamed `response`: at most `limit` bytes (decoded), arriving
    within `seconds`; raises TooLarge or TooSlow otherwise (the connection is then closed,
    not drained), or the `requests` error of a broken connection."""
    chunks: list[bytes] = []
    received = 0
    with Watchdog(seconds, lambda: shut_down(_socket_of(response))) as dog:
        try:
            for chunk in response.iter_content(READ_CHUNK):
                received += len(chunk)
                if received > limit:
                    response.close()
                    raise TooLarge(f"more than {limit} bytes")
                chunks.append(chunk)
        except requests.RequestException:
            if dog.fired:
                raise TooSlow(f"not complete after {seconds:.0f}s") from None
            raise
    if dog.fired:
        # The socket was shut down while the last bytes were being read: what came may be
        # cut short, so it does not count as a body.
        response.close()
        raise TooSlow(f"not complete after {seconds:.0f}s")
    return b"".join(chunks)


_MAX_LENGTH_DIGITS = 18  # up to an exabyte; int() of a longer string is work for nothing
_ABSURD_LENGTH = 1 << 62


def content_length(value: str | None) -> int | None:
    """A `Content-Length` value as a number, None when absent or not a plain number.

    Absurdly long digit strings count as larger than any limit rather than being parsed
    (int() refuses strings of more than 4300 digits, with a ValueError)."""
    text = (value or "").strip()
    if not (text.isascii() and text.isdigit()):  # "²" is a digit to str.isdigit
        return None
    if len(text) > _MAX_LENGTH_DIGITS:
        return _ABSURD_LENGTH
    return int(text)
