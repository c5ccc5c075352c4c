"""Token buckets: a global import rate and one per registry.

OpenShift's default is 60 imports a minute; a per-registry bucket keeps one slow or
rate-limiting registry from taking the whole budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up. rate <= 0 means unlimited."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take one token; return how long to wait before using it (0 when available)."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class ImportLimiter:
    """Both limits at once: an import waits for the global and its registry's bucket."""

    def __init__(
        self,
        per_minute: float,
        per_registry_per_minute: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._global = TokenBucket(per_minute / 60, burst=max(1.0, per_minute / 6))
        self._per_registry = per_registry_per_minute
        self._registries: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()
        self._sleep = sleep

    def wait(self, registry: str) -> float:
        """Block until an import from `registry` may start; return the seconds waited."""
        with self._lock:
            bucket = self._registries.get(registry)
            if bucket is None:
                rate = self._per_registry / 60
                bucket = TokenBucket(rate, burst=max(1.0, self._per_registry / 6))
                self._registries[registry] = bucket
        delay = max(self._global.reserve(), bucket.reserve())
        if delay > 0:
            self._sleep(delay)
        return delay
