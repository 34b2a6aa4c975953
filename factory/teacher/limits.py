"""Flow control for teacher requests: token buckets (requests and tokens per minute), an
adaptive concurrency limit (AIMD) and a circuit breaker. All of it runs on one asyncio loop.

The concurrency limit is the provider-facing lever: a 429 halves it (at most once per
``cooldown`` so one burst of 429s counts once) and pauses new requests until the server's
``Retry-After`` has passed; every success adds ``1/limit`` (one slot per window of successes),
so the limit climbs back to ``max_concurrency`` once the provider copes again.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """``rate_per_minute`` units per minute, bursts up to ``burst`` (default: 10 s worth).
    A take larger than the bucket waits for a full bucket and leaves it in debt, so a single
    long prompt can never deadlock."""

    def __init__(self, rate_per_minute: float, burst: float | None = None):
        self.rate = rate_per_minute / 60.0
        self.capacity = max(1.0, burst if burst is not None else rate_per_minute / 6.0)
        self.level = self.capacity
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def take(self, n: float = 1.0) -> None:
        async with self.lock:           # FIFO: a big take is not starved by small ones
            while True:
                self._refill()
                if self.level >= min(n, self.capacity):
                    self.level -= n
                    return
                await asyncio.sleep((min(n, self.capacity) - self.level) / self.rate)

    def settle(self, estimated: float, actual: float) -> None:
        """Correct a take made on an estimate once the real usage is known."""
        self._refill()
        self.level = min(self.capacity, self.level + estimated - actual)


class AdaptiveConcurrency:
    def __init__(self, maximum: int, cooldown: float = 1.0):
        self.maximum = maximum
        self.limit = float(maximum)
        self.in_flight = 0
        self.cooldown = cooldown
        self.last_cut = -1e9
        self.resume_at = 0.0
        self.cuts = 0
        self.cond = asyncio.Condition()

    async def acquire(self) -> None:
        async with self.cond:
            await self.cond.wait_for(lambda: self.in_flight < max(1, int(self.limit)))
            self.in_flight += 1
        pause = self.resume_at - time.monotonic()
        if pause > 0:                   # the server asked everyone to wait
            await asyncio.sleep(pause)

    async def release(self) -> None:
        async with self.cond:
            self.in_flight -= 1
            self.cond.notify()

    def on_success(self) -> None:
        if self.limit < self.maximum:
            self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)

    def on_rate_limited(self, retry_after: float | None) -> None:
        now = time.monotonic()
        if retry_after:
            self.resume_at = max(self.resume_at, now + retry_after)
        if now - self.last_cut >= self.cooldown:
            self.limit = max(1.0, self.limit / 2)
            self.last_cut = now
            self.cuts += 1


class CircuitBreaker:
    """Opens after ``threshold`` requests in a row failed past their retries; any success
    closes the count again. An open breaker stops new requests; what was answered stays cached."""

    def __init__(self, threshold: int):
        self.threshold = threshold
        self.consecutive = 0
        self.last_error = ""

    @property
    def open(self) -> bool:
        return self.consecutive >= self.threshold

    def success(self) -> None:
        self.consecutive = 0

    def failure(self, error: str) -> None:
        self.consecutive += 1
        self.last_error = error
