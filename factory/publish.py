"""``factory publish``: a run's output directory → a Hugging Face Hub dataset repo.

What goes up: shards, exports, quarantine, the card (README.md, with ``configs:`` per domain and
per export), manifest.json and the resolved recipe (recipe.yaml) — everything in the directory
but run.json (timings of one machine). Checksums are verified against the manifest first, so a
file changed after the run is never published under the run's card. The token comes from
``HF_TOKEN`` (or the variable named by ``--token-env``) or the user's ``huggingface-cli login``;
it goes to ``huggingface_hub`` only and is never written or printed. Private by default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from factory.errors import FactoryError, InputError
from factory.manifest import load_manifest
from factory.output import sha256_file

LEFT_OUT = {"run.json"}


@dataclass
class PublishPlan:
    out: Path
    repo_id: str
    private: bool
    files: list[tuple[str, int]]          # path in repo, bytes
    card: str


def plan(out: Path, repo_id: str, private: bool = True) -> PublishPlan:
    manifest = load_manifest(out)
    if "/" not in repo_id or repo_id.count("/") != 1:
        raise FactoryError(f"--repo-id: expected ORG/NAME, got {repo_id!r}")
    for entry in manifest["shards"] + manifest.get("exports", []) + manifest["quarantine"]:
        path = out / entry["path"]
        if not path.is_file():
            raise InputError(f"{path}: listed in the manifest but missing")
        if sha256_file(path) != entry["sha256"]:
            raise InputError(f"{path}: changed since the run (sha256 differs from the manifest); re-run the recipe before publishing")
    files = sorted((p.relative_to(out).as_posix(), p.stat().st_size) for p in out.rglob("*")
                   if p.is_file() and p.relative_to(out).as_posix() not in LEFT_OUT and not p.name.startswith("."))
    return PublishPlan(out, repo_id, private, files, (out / "README.md").read_text(encoding="utf-8"))


def token_from(env_name: str | None) -> str | None:
    if env_name:
        value = os.environ.get(env_name)
        if not value:
            raise FactoryError(f"publish: the environment variable {env_name} is not set")
        return value
    from huggingface_hub import get_token

    return get_token()       # HF_TOKEN, or the token saved by `hf auth login`


def publish(p: PublishPlan, token: str | None, message: str | None = None) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if not token:
        raise FactoryError("publish: no Hugging Face token (set HF_TOKEN, or log in with `hf auth login`)")
    api = HfApi(token=token)
    try:
        url = api.create_repo(p.repo_id, repo_type="dataset", private=p.private, exist_ok=True)
        api.upload_folder(repo_id=p.repo_id, repo_type="dataset", folder_path=str(p.out), ignore_patterns=sorted(LEFT_OUT),
                          commit_message=message or f"CoT Factory: {len(p.files)} files")
    except HfHubHTTPError as e:       # the message names the request, never the headers
        status = e.response.status_code if e.response is not None else "?"
        raise FactoryError(f"publish to {p.repo_id} failed: HTTP {status}: {str(e).splitlines()[0][:300]}") from None
    return str(url)
