"""Teacher throughput against the loopback provider: 2,000 requests at 200 ms latency with
max_concurrency 64. Prints wall time / ideal (2000 / 64 × 0.2 s; target ≤ 1.10) and the
client's CPU time per request; with ``--curator`` and bespokelabs-curator installed, runs Curator
against the same server in the same script and prints the ratio.

    python bench/teacher.py [--requests 2000] [--latency 0.2] [--concurrency 64] [--curator]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from factory.recipe.model import TeacherOptions
from factory.teacher.backends import OpenAIBackend, Request
from factory.teacher.cache import ResponseCache
from factory.teacher.runner import request_key, run_requests


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "factory.testing.provider", "--port", "0", "--latency", str(latency)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def ours(url: str, n: int, concurrency: int) -> tuple[float, float, int]:
    opts = TeacherOptions(backend="openai", model="bench", base_url=url + "/v1", max_concurrency=concurrency,
                          max_tokens=256, cache=None)
    backend = OpenAIBackend(opts)
    requests = []
    for i in range(n):
        messages = [{"role": "user", "content": f"Question {i}: what is {i} + {i}? Answer with steps."}]
        params = {"temperature": 0.0, "max_tokens": 256, "seed": 0}
        requests.append(Request(key=request_key(backend, messages, None, params), row_id=str(i), sample=0,
                                messages=messages, prompt=None, params=params, est_tokens=300))
    with tempfile.TemporaryDirectory() as tmp:
        cache = ResponseCache(Path(tmp) / "bench.sqlite")

        async def go():
            await backend.start()        # imports the SDK and opens the client: once per run, not per request
            try:
                cpu0, t0 = time.process_time(), time.perf_counter()
                outcomes, _ = await run_requests(backend, requests, cache, opts)
                return outcomes, time.perf_counter() - t0, time.process_time() - cpu0
            finally:
                await backend.close()

        outcomes, wall, cpu = asyncio.run(go())
        cache.close()
    ok = sum(1 for o in outcomes.values() if o.reply is not None)
    return wall, cpu, ok


def bare_client(url: str, n: int, concurrency: int) -> float:
    """The transport floor: a bare aiohttp client with a semaphore, no SDK, cache or retries."""
    import aiohttp

    async def go() -> float:
        sem = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency + 8)) as session:
            async def one(i: int) -> None:
                async with sem:
                    body = {"model": "bare", "messages": [{"role": "user", "content": f"Bare {i}: what is {i} + {i}?"}], "max_tokens": 256}
                    async with session.post(url + "/v1/chat/completions", json=body) as r:
                        await r.json()
            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return time.perf_counter() - t0

    return asyncio.run(go())


def curator(url: str, n: int, concurrency: int) -> float | None:
    try:
        from bespokelabs import curator as bc  # type: ignore
    except ImportError:
        return None
    os.environ.setdefault("OPENAI_API_KEY", "bench-not-a-key")
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"        # no price-table download
    llm = bc.LLM(model_name="gpt-4o-mini", backend="openai",
                 backend_params={"base_url": url + "/v1", "max_requests_per_minute": 10**7, "max_tokens_per_minute": 10**10,
                                 "max_concurrent_requests": concurrency, "require_all_responses": False},
                 generation_params={"max_tokens": 256, "temperature": 0.0})
    prompts = [f"Curator {i}: what is {i} + {i}? Answer with steps." for i in range(n)]
    t0 = time.perf_counter()
    llm(prompts)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--curator", action="store_true")
    args = ap.parse_args()
    proc, url = start_server(args.latency)
    try:
        ideal = args.requests / args.concurrency * args.latency
        print(f"{args.requests} requests, latency {args.latency * 1000:.0f} ms, max_concurrency {args.concurrency}; "
              f"ideal {ideal:.2f} s (server: {url})")
        for jitter in (0.0, 0.1):
            httpx.post(url + "/_control", json={"latency_s": args.latency, "latency_jitter": jitter})
            label = "fixed latency (lock-step)" if not jitter else f"latency ± {jitter:.0%} (mean {args.latency * 1000:.0f} ms)"
            floor = bare_client(url, args.requests, args.concurrency)
            httpx.post(url + "/_reset")
            wall, cpu, ok = ours(url, args.requests, args.concurrency)
            sent = httpx.get(url + "/_stats").json()["total"]
            print(f"  {label}:")
            print(f"    bare aiohttp client (floor): {floor:.2f} s → ratio {floor / ideal:.3f}")
            print(f"    cot-factory:                 {wall:.2f} s → ratio {wall / ideal:.3f} (target ≤ 1.10); "
                  f"{ok} answered, {sent} sent; client CPU {cpu * 1000 / args.requests:.2f} ms/request")
        if args.curator:
            httpx.post(url + "/_reset")
            try:
                t = curator(url, args.requests, args.concurrency)
            except Exception as e:        # e.g. offline: Curator fetches tiktoken's encoding from the internet per run
                print(f"  curator: failed: {type(e).__name__}: {str(e)[:200]}")
                t = -1.0
            if t is None:
                print("  curator: bespokelabs-curator is not installed")
            elif t < 0:
                pass
            else:
                print(f"  curator:     {t:.2f} s wall → ratio {t / ideal:.3f}; cot-factory is {t / wall:.2f}× faster")
    finally:
        proc.terminate()


if __name__ == "__main__":
    main()
