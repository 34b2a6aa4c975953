"""Loopback stand-ins for paid remote services (provider.py: OpenAI / Anthropic; hub.py: the
Hugging Face Hub), used by the tests and benchmarks and runnable for your own recipes."""

from __future__ import annotations

import asyncio

from aiohttp import web


def serve_forever(app: web.Application, port: int, **runner_options) -> None:
    """Serve ``app`` on 127.0.0.1 (never another interface), print its URL — the first line a
    test reads — and run until interrupted. uvloop is used when installed: a faster loop keeps
    the stand-in's own overhead out of client benchmarks."""

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None, **runner_options)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        print(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", flush=True)   # type: ignore[union-attr]
        await asyncio.Event().wait()

    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        run(serve())
    except KeyboardInterrupt:
        pass
