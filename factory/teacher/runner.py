"""Send teacher requests: cache first, then one asyncio loop with ``max_concurrency`` workers,
token buckets, adaptive concurrency, tenacity retries and a circuit breaker.

Retries use tenacity (jittered exponential backoff, capped), with the wait replaced by the
server's ``Retry-After`` when it sent one. Which failures are retried is the backend's call
(429, 5xx, timeouts, connection errors and unreadable bodies are; 4xx are not). A request that
fails past its retries becomes an :class:`Outcome` with its last error — its row goes to
quarantine and the run goes on — unless the circuit breaker opens, which ends the run with
:class:`TeacherStopped` after the requests in flight have finished and been cached.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from factory.errors import FactoryError
from factory.recipe.model import Prices, TeacherOptions
from factory.teacher.backends import Backend, Reply, Request
from factory.teacher.cache import ResponseCache
from factory.teacher.limits import AdaptiveConcurrency, CircuitBreaker, TokenBucket

# USD per million tokens (input, output), list prices when this table was written; a recipe's
# ``teacher.prices`` wins. Unknown models cost None (reported as unknown, never as 0).
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00), "gpt-4o-mini": (0.15, 0.60), "gpt-4.1": (2.00, 8.00), "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40), "o3-mini": (1.10, 4.40), "o4-mini": (1.10, 4.40),
    "claude-3-5-haiku-latest": (0.80, 4.00), "claude-3-7-sonnet-latest": (3.00, 15.00),
    "claude-sonnet-4-0": (3.00, 15.00), "claude-opus-4-0": (15.00, 75.00),
}


class TeacherStopped(FactoryError):
    """The circuit breaker opened: the run stops, everything answered so far is cached."""


def request_key(backend: Backend, messages: list[dict] | None, prompt: str | None, params: dict) -> str:
    """Hash of what is actually sent. Parameters are normalised (None dropped, floats rounded,
    keys sorted) so that equivalent recipes share answers."""
    norm = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in sorted(params.items()) if v is not None and v != []}
    shown = {"provider": backend.provider, "endpoint": backend.endpoint, "model": backend.model,
             "messages": messages, "prompt": prompt, "params": norm,
             "thinking": backend.opts.thinking_tokens}
    return hashlib.sha256(json.dumps(shown, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def price_of(opts: TeacherOptions, model: str) -> Prices | None:
    if opts.prices is not None:
        return opts.prices
    if opts.backend == "local":
        return Prices(input_per_mtok=0.0, output_per_mtok=0.0)
    hit = PRICES.get(model) or next((v for k, v in sorted(PRICES.items(), key=lambda kv: -len(kv[0])) if model.startswith(k)), None)
    return Prices(input_per_mtok=hit[0], output_per_mtok=hit[1]) if hit else None


def cost(prices: Prices | None, reply: Reply) -> float | None:
    if prices is None:
        return None
    return (reply.input_tokens * prices.input_per_mtok + reply.output_tokens * prices.output_per_mtok) / 1e6


@dataclass
class Outcome:
    reply: Reply | None
    cached: bool
    attempts: int = 0
    error: str | None = None


@dataclass
class Tally:
    """What this run did, live (the progress line) and at the end (run.json)."""
    requests: int = 0             # distinct requests needed
    done: int = 0                 # answered or failed for good, cache hits included
    cache_hits: int = 0
    sent: int = 0                 # HTTP attempts, retries included
    retries: int = 0
    rate_limited: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0         # spent by this run (cache hits are free)
    concurrency_cuts: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        dt = max(1e-9, time.monotonic() - self.started)
        return (f"{(self.sent - self.retries) / dt:5.1f} req/s · {(self.input_tokens + self.output_tokens) / dt / 1000:5.1f}k tok/s · "
                f"${self.cost_usd:.4f} · {self.cache_hits} cached · {self.retries} retries")

    def to_json(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "started"}
        d["cost_usd"] = round(self.cost_usd, 6)
        d["seconds"] = round(time.monotonic() - self.started, 3)
        return d


async def run_requests(backend: Backend, requests: list[Request], cache: ResponseCache, opts: TeacherOptions,
                       on_done: Callable[[Tally], None] | None = None) -> tuple[dict[str, Outcome], Tally]:
    """Answer every request, from the cache or the backend. Returns outcomes by request key."""
    tally = Tally()
    unique: dict[str, Request] = {}
    for r in requests:
        unique.setdefault(r.key, r)
    tally.requests = len(unique)
    outcomes: dict[str, Outcome] = {k: Outcome(reply=v, cached=True) for k, v in cache.get_many(list(unique)).items()}
    tally.cache_hits = tally.done = len(outcomes)
    if on_done and outcomes:
        on_done(tally)
    todo = [r for k, r in unique.items() if k not in outcomes]
    if not todo:
        return outcomes, tally

    prices = price_of(opts, backend.model)
    limiter = AdaptiveConcurrency(opts.max_concurrency)
    rpm = TokenBucket(opts.requests_per_minute) if opts.requests_per_minute else None
    tpm = TokenBucket(opts.tokens_per_minute) if opts.tokens_per_minute else None
    breaker = CircuitBreaker(opts.breaker_failures)
    queue: Iterable[Request] = iter(todo)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        failure = backend.classify(exc) if exc else None
        if failure and failure.wait is not None:
            return failure.wait
        return backend_wait(state)

    backend_wait = wait_exponential_jitter(multiplier=0.25, max=30, jitter=0.5)

    def retryable(exc: BaseException) -> bool:
        return backend.classify(exc).retry

    def before_sleep(state: RetryCallState) -> None:
        tally.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        failure = backend.classify(exc) if exc else None
        if failure and failure.rate_limited:
            tally.rate_limited += 1
            limiter.on_rate_limited(failure.wait)
            tally.concurrency_cuts = limiter.cuts

    async def attempt(request: Request) -> Reply:
        if rpm:
            await rpm.take(1)
        if tpm:
            await tpm.take(request.est_tokens)
        await limiter.acquire()
        tally.sent += 1
        try:
            reply = await backend.send(request)
        finally:
            await limiter.release()
        if tpm:
            tpm.settle(request.est_tokens, reply.input_tokens + reply.output_tokens)
        limiter.on_success()
        return reply

    async def one(request: Request) -> None:
        retrying = AsyncRetrying(stop=stop_after_attempt(opts.max_retries + 1), wait=wait, retry=retry_if_exception(retryable),
                                 before_sleep=before_sleep, reraise=True)
        try:
            reply = await retrying(attempt, request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:                     # past its retries, or not retryable
            reason = backend.classify(exc).reason
            attempts = retrying.statistics.get("attempt_number", 1)
            outcomes[request.key] = Outcome(reply=None, cached=False, attempts=attempts,
                                            error=f"teacher request failed after {attempts} attempt{'s' if attempts != 1 else ''}: {reason}")
            tally.failed += 1
            breaker.failure(reason)
        else:
            cache.put(request.key, backend.provider, backend.model, reply)
            outcomes[request.key] = Outcome(reply=reply, cached=False, attempts=retrying.statistics.get("attempt_number", 1))
            breaker.success()
            tally.input_tokens += reply.input_tokens
            tally.output_tokens += reply.output_tokens
            tally.cost_usd += cost(prices, reply) or 0.0
        tally.done += 1
        if on_done:
            on_done(tally)

    async def worker() -> None:
        for request in queue:            # a shared iterator: each request goes to one worker
            if breaker.open:
                return
            await one(request)

    # More workers than slots: a worker busy caching its answer must not hold a slot idle, so a
    # few extra wait at the limiter ready to send the moment one frees up.
    workers = min(opts.max_concurrency + max(4, opts.max_concurrency // 8), len(todo))
    await asyncio.gather(*(worker() for _ in range(workers)))
    if breaker.open:
        done = sum(1 for o in outcomes.values() if o.reply is not None)
        raise TeacherStopped(
            f"teacher stopped: {breaker.consecutive} requests in a row failed past their retries "
            f"(last: {breaker.last_error}); {done} of {tally.requests} answers are cached in {cache.path} — "
            "fix the cause and run again to resume")
    return outcomes, tally
