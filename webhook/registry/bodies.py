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
import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

import requests

log = logging.getLogger(__name__)

READ_CHUNK = 65536


class TooLarge(Exception):
    """The body is larger than the limit; reading stopped there."""


class TooSlow(Exception):
    """The body did not arrive within the deadline; the connection was shut down."""


class Watchdog:
    """Calls `abort` once `seconds` have passed, unless the block has ended by then.

    `with Watchdog(30, abort) as dog: …` then `dog.fired` tells whether it did. Every
    watchdog is kept by one shared thread (`_Deadlines`), not a timer thread of its own: a
    registry request arms two of them (its headers, its body), and starting a thread for
    each cost more CPU than the request itself.
    """

    def __init__(self, seconds: float, abort: Callable[[], None]) -> None:
        self.fired = False
        self._abort = abort
        self._lock = threading.Lock()
        self._done = False
        self._seconds = max(0.0, seconds)

    @property
    def done(self) -> bool:
        return self._done

    def fire(self) -> None:
        # Under the lock: once the block has ended, `abort` never runs (the socket it shuts
        # down may by then be back in the pool, serving another request).
        with self._lock:
            if self._done:
                return
            self.fired = True
            self._abort()

    def __enter__(self) -> Watchdog:
        _DEADLINES.arm(time.monotonic() + self._seconds, self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._lock:
            self._done = True
        _DEADLINES.ended()


class _Deadlines:
    """The one thread that fires every armed Watchdog whose time has come.

    A heap of (deadline, sequence, watchdog); a watchdog whose block ended stays in the heap
    until it surfaces (or until the ended ones outnumber the live ones, when the heap is
    rebuilt without them), so ending a block costs no search. The thread starts with the
    first watchdog and waits on a condition until the earliest deadline.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Watchdog]] = []
        self._sequence = itertools.count()
        self._ended = 0  # watchdogs in the heap whose block has ended
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, dog: Watchdog) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._sequence), dog))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="registry-deadlines", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is dog:
                self._cond.notify()  # earlier than what the thread is waiting for

    def ended(self) -> None:
        with self._cond:
            self._ended += 1
            if self._ended > _COMPACT_AT and self._ended * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
                self._ended = 0

    def _due(self) -> list[Watchdog]:
        """Pop what is due (waiting until something is); under the condition's lock."""
        while True:
            now = time.monotonic()
            due: list[Watchdog] = []
            while self._heap and (self._heap[0][0] <= now or self._heap[0][2].done):
                dog = heapq.heappop(self._heap)[2]
                if dog.done:
                    self._ended = max(0, self._ended - 1)
                else:
                    due.append(dog)
            if due:
                return due
            self._cond.wait(self._heap[0][0] - now if self._heap else None)

    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._due()
            for dog in due:  # outside the lock: an abort may take a moment
                try:
                    dog.fire()
                except Exception:  # one failed abort must not stop every other deadline
                    log.exception("aborting a registry read failed")


_COMPACT_AT = 1024
_DEADLINES = _Deadlines()


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
