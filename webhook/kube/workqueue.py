"""A delaying work queue of keys, in the manner of client-go's workqueue.

A key is processed by one worker at a time; a key added while it is being processed is
processed again afterwards; a key added twice before a worker takes it is processed once;
`add_after` delays a key (the earliest due time wins). Written by hand: the Python
kubernetes client has no work queue, and kopf's is tied to its own framework.

Two lanes: `add(key, urgent=True)` puts a key ahead of every key that is not urgent, and
moves it there if it is already waiting. The controller uses it for what a person is
waiting on (`import-image`, a new or changed tag), so that it does not queue behind a
scheduled pass over thousands of streams; a delayed key, when due, joins the ordinary lane.
client-go's queue has no lanes (OpenShift's image controller runs one queue), but its
users are not stuck behind a 15-minute pass of their own making.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        # FIFOs of keys due now, urgent and ordinary. An entry whose key has moved to the
        # urgent lane (or been taken) is stale and skipped: moving is O(1), never a search.
        self._urgent: deque[K] = deque()
        self._ordinary: deque[K] = deque()
        self._queued: dict[K, bool] = {}  # key due now → whether it is in the urgent lane
        self._delayed: list[tuple[float, int, K]] = []  # heap of (due, seq, key)
        self._due: dict[K, float] = {}  # earliest due time of each delayed key
        self._active: set[K] = set()  # taken by a worker
        self._dirty: dict[K, bool] = {}  # added again while active → urgently
        self._seq = 0
        self._closed = False

    def add(self, key: K, *, urgent: bool = False) -> None:
        with self._cond:
            self._add_now(key, urgent)

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
                key = self._pop_ready()
                if key is not None:
                    self._active.add(key)
                    return key
                if deadline is not None and self._clock() >= deadline:
                    return None
                self._cond.wait(self._next_wait(deadline))

    def done(self, key: K) -> None:
        with self._cond:
            self._active.discard(key)
            if key in self._dirty:
                self._add_now(key, self._dirty.pop(key))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queued) + len(self._due)

    def urgent(self) -> int:
        """Keys waiting in the urgent lane."""
        with self._cond:
            return sum(self._queued.values())

    def _add_now(self, key: K, urgent: bool = False) -> None:
        self._due.pop(key, None)  # the delayed entry becomes stale; _promote_due skips it
        if key in self._active:
            self._dirty[key] = self._dirty.get(key, False) or urgent
            return
        queued = self._queued.get(key)
        if queued is None or (urgent and not queued):  # new, or moving to the urgent lane
            self._queued[key] = urgent
            (self._urgent if urgent else self._ordinary).append(key)
            self._cond.notify()

    def _pop_ready(self) -> K | None:
        """The first key of the urgent lane, else of the ordinary one; None when both are
        empty. Stale entries met on the way are dropped."""
        for lane, urgent in ((self._urgent, True), (self._ordinary, False)):
            while lane:
                key = lane.popleft()
                if self._queued.get(key) is urgent:
                    del self._queued[key]
                    return key
        return None

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
