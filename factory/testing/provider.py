"""A loopback stand-in for paid teacher APIs, for tests and benchmarks.

It speaks the providers' real wire formats, so the official SDKs drive it unchanged:
OpenAI ``POST /v1/chat/completions`` and ``/v1/completions`` (JSON or SSE streaming, ``usage``,
``finish_reason``, ``reasoning_content``, OpenAI error bodies) and Anthropic ``POST /v1/messages``
(content blocks incl. ``thinking``, ``stop_reason``, ``usage``, Anthropic error bodies).

Faults are injected deterministically — from a hash of the prompt and how many times it has been
sent — so a test can predict nothing and still reproduce everything: ``429`` (with
``retry-after`` and ``retry-after-ms``), ``500``, ``503``, a stall longer than the client's
timeout, and a ``200`` whose JSON body is cut in half. The server counts every request per
prompt and how many good answers it gave per prompt (``GET /_stats``).

Run it:  python -m factory.testing.provider --port 0 [--latency 0.2]  (prints its URL)
Control: POST /_control {"latency_s", "fault_rate", "faults", "answers", "reasoning", ...}
         POST /_reset (counters), GET /_stats. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import sys
import time
from collections import defaultdict

import orjson
from aiohttp import web

from factory.testing import serve_forever

FAULTS = ("429", "500", "503", "timeout", "truncated")
DEFAULTS = {
    "latency_s": 0.0,          # every answer takes this long (on average, with jitter)
    "latency_jitter": 0.0,     # ± this fraction, uniform: real servers do not answer in lock-step
    "fault_rate": 0.0,         # share of attempts that fail
    "faults": list(FAULTS),    # which faults, chosen by hash
    "retry_after_s": 0.2,      # sent as retry-after-ms (and retry-after, rounded up)
    "stall_s": 3.0,            # "timeout": the answer comes this late
    "answers": {},             # question text → the answer the model gives (default "42"); a list: one per seed
    "default_answer": "42",
    "reasoning": False,        # OpenAI: reasoning_content; Anthropic: a thinking block (when asked)
    "fail_all": None,          # e.g. 401 or 500: every request fails with it (circuit-breaker tests)
}


class State:
    def __init__(self) -> None:
        self.config = dict(DEFAULTS)
        self.reset()

    def reset(self) -> None:
        self.requests: dict[str, int] = defaultdict(int)    # prompt key → requests
        self.answered: dict[str, int] = defaultdict(int)    # prompt key → good answers sent
        self.faults: dict[str, int] = defaultdict(int)
        self.total = 0
        self.started = time.time()
        self.first_at: float | None = None     # first request received, last good answer sent:
        self.last_at: float | None = None      # the request phase of any client, seen from here


def prompt_key(body: dict) -> str:
    """What identifies a prompt: model, the rendered input and the seed (samples differ by seed)."""
    shown = {k: body.get(k) for k in ("model", "messages", "prompt", "system", "seed")}
    return hashlib.sha256(orjson.dumps(shown, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _fault(state: State, key: str, attempt: int) -> str | None:
    cfg = state.config
    if cfg["fail_all"]:
        return str(cfg["fail_all"])
    if cfg["fault_rate"] <= 0 or not cfg["faults"]:
        return None
    h = int(hashlib.sha256(f"{key}:{attempt}".encode()).hexdigest()[:12], 16)
    if (h % 10_000) / 10_000 >= cfg["fault_rate"]:
        return None
    return cfg["faults"][(h // 10_000) % len(cfg["faults"])]


def _prompt_text(body: dict) -> str:
    if "prompt" in body:
        return body["prompt"] if isinstance(body["prompt"], str) else " ".join(body["prompt"])
    parts = [body.get("system") or ""] if isinstance(body.get("system"), str) else []
    for m in body.get("messages", []):
        c = m.get("content")
        parts.append(c if isinstance(c, str) else " ".join(b.get("text", "") for b in c or []))
    return "\n".join(parts)


def _answer_for(state: State, text: str, seed: int | None) -> str:
    # The question asked is the last one in the prompt (few-shot examples come first).
    best, at = state.config["default_answer"], -1
    for question, answer in state.config["answers"].items():
        i = text.rfind(question)
        if i > at:
            best, at = answer, i
    if isinstance(best, list):                 # samples differ by seed
        best = best[(seed or 0) % len(best)]
    return str(best)


def _completion(state: State, text: str, seed: int | None = None) -> str:
    answer = _answer_for(state, text, seed)
    return (
        "Issue: find the quantity the problem asks for.\n"
        "Sub-questions:\n"
        "1. Which quantities are given? — they fix the computation.\n"
        "2. How do they combine (uses #1)? — that gives the result.\n"
        "Steps:\n"
        "[THOUGHT] Read the given quantities from the problem.\n"
        f"[ACTION] Combine them: the result is {answer}.\n"
        f"[CHECK] Substituting {answer} back agrees with the problem.\n"
        f"Summary: The quantities combine to {answer}.\n"
        "Output possible: yes\n"
        f"Final answer: {answer}\n"
    )


def _tokens(s: str) -> int:
    return max(1, len(s) // 4)


def _cut(text: str, max_tokens: int | None) -> tuple[str, bool]:
    if max_tokens and _tokens(text) > max_tokens:
        return text[: max_tokens * 4], True
    return text, False


def _openai_error(status: int, message: str, etype: str, headers: dict | None = None) -> web.Response:
    body = {"error": {"message": message, "type": etype, "param": None, "code": None}}
    return web.json_response(body, status=status, headers=headers)


def _anthropic_error(status: int, message: str, etype: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"type": "error", "error": {"type": etype, "message": message}}, status=status, headers=headers)


async def _handle(request: web.Request, flavour: str) -> web.StreamResponse:
    state: State = request.app["state"]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        err = _anthropic_error if flavour == "anthropic" else _openai_error
        return err(400, "request body is not valid JSON", "invalid_request_error")
    key = prompt_key(body)
    if state.first_at is None:
        state.first_at = time.time()
    attempt = state.requests[key]
    state.requests[key] += 1
    state.total += 1
    cfg = state.config
    fault = _fault(state, key, attempt)
    err = _anthropic_error if flavour == "anthropic" else _openai_error
    if fault:
        state.faults[fault] += 1
    if fault == "429":
        ra = cfg["retry_after_s"]
        headers = {"retry-after-ms": str(int(ra * 1000)), "retry-after": str(max(1, math.ceil(ra)))}
        return err(429, "Rate limit reached for requests", "rate_limit_error" if flavour == "anthropic" else "requests", headers)
    if fault in ("500", "401", "400", "403", "404"):
        status = int(fault)
        kinds = {500: ("api_error", "server_error"), 401: ("authentication_error", "invalid_request_error"),
                 400: ("invalid_request_error", "invalid_request_error"), 403: ("permission_error", "invalid_request_error"),
                 404: ("not_found_error", "invalid_request_error")}
        a, o = kinds[status]
        return err(status, "The server had an error while processing your request." if status == 500 else "request refused",
                   a if flavour == "anthropic" else o)
    if fault == "503":
        return err(503, "The engine is currently overloaded, please try again later", "overloaded_error" if flavour == "anthropic" else "server_error")
    if fault == "timeout":
        await asyncio.sleep(cfg["stall_s"])
    elif cfg["latency_s"]:
        jitter = cfg["latency_jitter"]
        u = (int(hashlib.sha256(f"{key}:{attempt}:latency".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF) if jitter else 0.5
        await asyncio.sleep(cfg["latency_s"] * (1 + jitter * (2 * u - 1)))

    text = _prompt_text(body)
    completion, cut = _cut(_completion(state, text, body.get("seed")), body.get("max_tokens") or body.get("max_completion_tokens"))
    usage_in, usage_out = _tokens(text), _tokens(completion)
    created = int(time.time())
    if flavour == "anthropic":
        content = []
        if body.get("thinking", {}).get("type") == "enabled" and cfg["reasoning"]:
            content.append({"type": "thinking", "thinking": "I should read the quantities, then combine them.", "signature": "sig-" + key})
        content.append({"type": "text", "text": completion})
        payload = {"id": f"msg_{key}", "type": "message", "role": "assistant", "model": body.get("model"), "content": content,
                   "stop_reason": "max_tokens" if cut else "end_turn", "stop_sequence": None,
                   "usage": {"input_tokens": usage_in, "output_tokens": usage_out}}
    elif flavour == "chat":
        message = {"role": "assistant", "content": completion}
        if cfg["reasoning"]:
            message["reasoning_content"] = "I should read the quantities, then combine them."
        payload = {"id": f"chatcmpl-{key}", "object": "chat.completion", "created": created, "model": body.get("model"),
                   "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "length" if cut else "stop"}],
                   "usage": {"prompt_tokens": usage_in, "completion_tokens": usage_out, "total_tokens": usage_in + usage_out}}
    else:
        payload = {"id": f"cmpl-{key}", "object": "text_completion", "created": created, "model": body.get("model"),
                   "choices": [{"index": 0, "text": completion, "logprobs": None, "finish_reason": "length" if cut else "stop"}],
                   "usage": {"prompt_tokens": usage_in, "completion_tokens": usage_out, "total_tokens": usage_in + usage_out}}
    if fault == "truncated":
        raw = json.dumps(payload)
        return web.Response(body=raw[: len(raw) // 2].encode(), status=200, content_type="application/json")
    if body.get("stream"):
        return await _stream(request, flavour, payload, key, state)
    if fault != "timeout":
        state.answered[key] += 1
        state.last_at = time.time()
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


async def _stream(request: web.Request, flavour: str, payload: dict, key: str, state: State) -> web.StreamResponse:
    """Server-sent events in the provider's format, a few characters per event."""
    resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
    await resp.prepare(request)

    async def send(obj: dict, event: str | None = None) -> None:
        head = f"event: {event}\n" if event else ""
        await resp.write(f"{head}data: {json.dumps(obj)}\n\n".encode())

    if flavour == "anthropic":
        text = next(b["text"] for b in payload["content"] if b["type"] == "text")
        start = dict(payload, content=[], stop_reason=None, usage={"input_tokens": payload["usage"]["input_tokens"], "output_tokens": 0})
        await send({"type": "message_start", "message": start}, "message_start")
        await send({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}, "content_block_start")
        for i in range(0, len(text), 16):
            await send({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text[i:i + 16]}}, "content_block_delta")
        await send({"type": "content_block_stop", "index": 0}, "content_block_stop")
        await send({"type": "message_delta", "delta": {"stop_reason": payload["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": payload["usage"]["output_tokens"]}}, "message_delta")
        await send({"type": "message_stop"}, "message_stop")
    else:
        choice = payload["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
        base = {k: payload[k] for k in ("id", "created", "model")}
        base["object"] = "chat.completion.chunk" if "message" in choice else "text_completion"
        for i in range(0, len(text), 16):
            piece = text[i:i + 16]
            delta = {"delta": {"content": piece}} if "message" in choice else {"text": piece}
            await send(dict(base, choices=[dict(index=0, finish_reason=None, **delta)]))
        last = {"delta": {}} if "message" in choice else {"text": ""}
        await send(dict(base, choices=[dict(index=0, finish_reason=choice["finish_reason"], **last)], usage=payload["usage"]))
        await resp.write(b"data: [DONE]\n\n")
    state.answered[key] += 1
    await resp.write_eof()
    return resp


def make_app(config: dict | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 2**20)
    state = State()
    state.config.update(config or {})
    app["state"] = state

    async def control(request: web.Request) -> web.Response:
        update = await request.json()
        unknown = set(update) - set(DEFAULTS)
        if unknown:
            return web.json_response({"error": f"unknown settings: {sorted(unknown)}"}, status=400)
        state.config.update(update)
        return web.json_response(state.config)

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.json_response({"ok": True})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({
            "total": state.total, "prompts": len(state.requests), "faults": dict(state.faults),
            "requests": dict(state.requests), "answered": dict(state.answered),
            "answered_twice": sorted(k for k, n in state.answered.items() if n > 1),
            "span_s": (state.last_at - state.first_at) if state.first_at and state.last_at else None,
        })

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "cot-factory"}]})

    app.router.add_post("/v1/chat/completions", lambda r: _handle(r, "chat"))
    app.router.add_post("/v1/completions", lambda r: _handle(r, "completion"))
    app.router.add_post("/v1/messages", lambda r: _handle(r, "anthropic"))
    app.router.add_get("/v1/models", models)
    app.router.add_post("/_control", control)
    app.router.add_post("/_reset", reset)
    app.router.add_get("/_stats", stats)
    return app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--jitter", type=float, default=0.0, help="latency ± this fraction (uniform)")
    args = ap.parse_args(argv)
    # handler_cancellation: a client that timed out cancels its handler, so a stalled answer is
    # never counted as delivered
    serve_forever(make_app({"latency_s": args.latency, "latency_jitter": args.jitter}), args.port, handler_cancellation=True)


if __name__ == "__main__":
    sys.exit(main())
