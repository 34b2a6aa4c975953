from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

# Nothing in the suite may reach a hub: datasets and huggingface_hub must fail fast instead.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "recipes" / "data"
QUICKSTART = REPO / "recipes" / "quickstart.yaml"


def write_recipe(directory: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def run_recipe(tmp_path):
    """Write a recipe into tmp_path, run it, return (RunResult, rows as dicts, quarantine as dicts)."""
    from factory.pipeline import run
    from factory.quarantine import read_quarantine
    from factory.recipe import load_recipe
    from factory.shards import ShardFile  # noqa: F401

    def _run(text: str, **kwargs):
        import pyarrow.parquet as pq

        path = write_recipe(tmp_path, text)
        result = run(load_recipe(path), tmp_path / "out", **kwargs)
        rows = []
        for shard in result.manifest["shards"]:
            rows.extend(pq.read_table(result.out / shard["path"]).to_pylist())
        return result, rows, read_quarantine(result.out).to_pylist()

    return _run


# The teacher's response cache never defaults to the user's ~/.cache inside the suite.
if "COT_FACTORY_CACHE" not in os.environ:
    import tempfile

    os.environ["COT_FACTORY_CACHE"] = str(Path(tempfile.mkdtemp(prefix="cot-factory-cache-")) / "teacher.sqlite")


@pytest.fixture(scope="session")
def server():
    """The loopback OpenAI/Anthropic stand-in (factory.testing.provider) in its own process."""
    import subprocess
    import sys

    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "factory.testing.provider", "--port", "0"], stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:")

    class Server:
        def __init__(self):
            self.url = url

        def configure(self, **settings):
            r = httpx.post(url + "/_control", json=settings)
            r.raise_for_status()

        def reset(self, **settings):
            httpx.post(url + "/_reset").raise_for_status()
            base = {"latency_s": 0.0, "latency_jitter": 0.0, "fault_rate": 0.0, "answers": {}, "reasoning": False, "default_answer": "42",
                    "fail_all": None, "faults": ["429", "500", "503", "timeout", "truncated"], "retry_after_s": 0.2, "stall_s": 3.0}
            self.configure(**{**base, **settings})

        def stats(self) -> dict:
            return httpx.get(url + "/_stats").json()

    yield Server()
    proc.terminate()
    proc.wait(timeout=10)


