"""Teacher throughput against the loopback provider: 2,000 requests at 200 ms latency with
max_concurrency 64. Prints wall time / ideal (2000 / 64 × 0.2 s; target ≤ 1.10) and the
client's CPU time per request, next to a bare aiohttp client on the same server (the floor the
server itself sets). With ``--curator-python`` (a venv where bespokelabs-curator installs; its pins
clash with ours) it runs Curator against the same server in the same script, with jittered latency.

    python bench/teacher.py [--requests 2000] [--latency 0.2] [--concurrency 64] [--curator-python /tmp/curvenv/bin/python]
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


CURATOR = """
import os, sys, tempfile, time
os.environ.setdefault("OPENAI_API_KEY", "bench-not-a-key")
os.environ["CURATOR_CACHE_DIR"] = tempfile.mkdtemp()
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["CURATOR_DISABLE_RICH_DISPLAY"] = "1"
url, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
from bespokelabs import curator
llm = curator.LLM(model_name="gpt-4o-mini", backend="openai",
    backend_params={"base_url": url + "/v1", "max_requests_per_minute": 10**7, "max_tokens_per_minute": 10**10,
                    "max_concurrent_requests": c, "require_all_responses": False},
    generation_params={"max_tokens": 256, "temperature": 0.0})
prompts = [f"Curator {i}: what is {i} + {i}? Answer with steps." for i in range(n)]
t0 = time.perf_counter()
out = llm(prompts)
print("CURATOR_SECONDS", time.perf_counter() - t0, len(out.dataset) if hasattr(out, "dataset") else len(out))
"""


def curator(python: str, url: str, n: int, concurrency: int) -> tuple[float, int] | str:
    """Curator in its own interpreter (its pins clash with ours), against the same server.
    Offline it needs tiktoken's cl100k_base file, which litellm ships: point TIKTOKEN_CACHE_DIR there."""
    probe = subprocess.run([python, "-c", "import litellm, os; print(os.path.dirname(litellm.__file__))"], capture_output=True, text=True)
    if probe.returncode != 0:
        return "bespokelabs-curator is not importable with " + python
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": os.path.join(probe.stdout.strip(), "litellm_core_utils", "tokenizers")}
    proc = subprocess.run([python, "-c", CURATOR, url, str(n), str(concurrency)], capture_output=True, text=True, env=env, timeout=900)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("CURATOR_SECONDS")), None)
    if line is None:
        return "failed: " + proc.stderr[-300:]
    _, seconds, rows = line.split()
    return float(seconds), int(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--curator-python", help="a Python with bespokelabs-curator installed (its own venv): run it too")
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
            spans = {"cot-factory": httpx.get(url + "/_stats").json()["span_s"]}
        if args.curator_python:
            httpx.post(url + "/_reset")
            result = curator(args.curator_python, url, args.requests, args.concurrency)
            stats = httpx.get(url + "/_stats").json()
            if isinstance(result, str):
                print(f"  curator: {result}")
            else:
                t, rows = result
                print(f"    curator (end to end):        {t:.2f} s → ratio {t / ideal:.3f}; {rows} rows, {stats['total']} sent")
                print(f"    request phase seen by the server: cot-factory {spans['cot-factory']:.2f} s, curator {stats['span_s']:.2f} s "
                      f"→ curator / cot-factory = {stats['span_s'] / spans['cot-factory']:.2f}")
    finally:
        proc.terminate()


if __name__ == "__main__":
    main()
