"""A delaying work queue of keys, in the manner of client-go's workqueue.

A key is processed by one worker at a time; a key added while it is being processed is
processed again afterwards; a key added twice before a worker takes it is processed once;
`add_after` delays a key (the earliest due time wins). Written by hand: the Python
kubernetes client has no work queue, and kopf's is tied to its own framework.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._ready: list[K] = []  # FIFO of keys due now
        self._queued: set[K] = set()  # in _ready
        self._delayed: list[tuple[float, int, K]] = []  # heap of (due, seq, key)
        self._due: dict[K, float] = {}  # earliest due time of each delayed key
        self._active: set[K] = set()  # taken by a worker
        self._dirty: set[K] = set()  # added again while active
        self._seq = 0
        self._closed = False

    def add(self, key: K) -> None:
        with self._cond:
            self._add_now(key)

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            due = self._clock() + delay
            if key in self._queued or self._due.get(key, float("inf")) <= due:
                return
            self._due[key] = due
            self._seq += 1
            heapq.heappush(self._delayed, (due, self._seq, key))
            self._cond.notify()

    def get(self, timeout: float | None = None) -> K | None:
        """The next due key (the caller must call `done(key)`), or None on close/timeout."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                if self._closed:
                    return None
                self._promote_due()
                if self._ready:
                    key = self._ready.pop(0)
                    self._queued.discard(key)
                    self._active.add(key)
                    return key
                if deadline is not None and self._clock() >= deadline:
                    return None
                self._cond.wait(self._next_wait(deadline))

    def done(self, key: K) -> None:
        with self._cond:
            self._active.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self._add_now(key)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._ready) + len(self._due)

    def _add_now(self, key: K) -> None:
        self._due.pop(key, None)  # the delayed entry becomes stale; _promote_due skips it
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.append(key)
            self._cond.notify()

    def _promote_due(self) -> None:
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            due, _, key = heapq.heappop(self._delayed)
            if self._due.get(key) == due:
                del self._due[key]
                self._add_now(key)

    def _next_wait(self, deadline: float | None) -> float | None:
        now = self._clock()
        waits = [self._delayed[0][0] - now] if self._delayed else []
        if deadline is not None:
            waits.append(deadline - now)
        return max(0.0, min(waits)) if waits else None
