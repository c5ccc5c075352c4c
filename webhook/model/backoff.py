"""How long to wait before trying again: one rule for failed imports, copies and watches."""

from __future__ import annotations

import random


def backoff(
    failures: int,
    *,
    initial: float,
    cap: float,
    retry_after: float | None = None,
    jitter: float = 0.2,
) -> float:
    """Exponential from `initial` (the first failure waits `initial`), capped at `cap`,
    shortened by up to `jitter` of itself so that many waiters do not return together, and
    never sooner than a server asked (`retry_after`)."""
    delay = min(cap, initial * 2.0 ** max(0, failures - 1))
    return max(delay * random.uniform(1.0 - jitter, 1.0), retry_after or 0.0)
