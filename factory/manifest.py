"""manifest.json: what a run made and from what. No timestamps: two runs of the same recipe on
the same inputs give the same bytes (timings go to run.json beside it)."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST_FORMAT = "cot-factory/manifest@1"


@dataclass
class StageCount:
    stage: str
    rows_in: int = 0
    rows_out: int = 0
    quarantined: int = 0
    added: int = 0              # rows a stage made (derived rows)

    @property
    def balanced(self) -> bool:
        return self.rows_in + self.added == self.rows_out + self.quarantined


@dataclass
class SourceReport:
    name: str
    path: str
    format: str
    kind: str
    domain: str
    license: str | None
    sha256: str | None
    records: int = 0
    blank_lines: int = 0
    rows: int = 0               # in the shards, derived rows included
    derived: int = 0            # rows derived from this source's rows (in ``rows``)
    stages: list[StageCount] = field(default_factory=list)


@lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    import polars
    import pyarrow
    import pydantic
    import yaml

    from factory import __version__

    out = {"python": platform.python_version(), "cot-factory": __version__, "pyarrow": pyarrow.__version__,
           "polars": polars.__version__, "pydantic": pydantic.VERSION, "pyyaml": yaml.__version__}
    try:   # not imported by a run: ask the installed metadata
        out["datasets"] = metadata.version("datasets")
    except metadata.PackageNotFoundError:
        out["datasets"] = "not installed"
    return tuple(sorted(out.items()))


def versions() -> dict[str, str]:
    return dict(_versions())


def build_manifest(*, recipe_name: str, recipe_sha: str, recipe: dict[str, Any], sources: list[SourceReport],
                   stages: list[StageCount], shards: list[dict], quarantine: list[dict],
                   reports: dict[str, Any] | None = None, exports: list[dict] | None = None) -> dict[str, Any]:
    domains: dict[str, dict[str, int]] = {}
    for s in shards:
        d = domains.setdefault(s["domain"], {})
        d[s["split"]] = d.get(s["split"], 0) + s["rows"]
    return {
        "format": MANIFEST_FORMAT,
        "recipe": {"name": recipe_name, "sha256": recipe_sha, "resolved": recipe},
        "versions": versions(),
        "rows": sum(s["rows"] for s in shards),
        "domains": {k: domains[k] for k in sorted(domains)},
        "stages": [asdict(s) for s in stages],
        "sources": [{**asdict(s), "stages": [asdict(c) for c in s.stages]} for s in sources],
        "shards": shards,
        "quarantine": quarantine,
        "exports": exports or [],
        "reports": reports or {},
    }


def dumps(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode()


def load_manifest(out: Path) -> dict[str, Any]:
    from factory.errors import InputError

    path = out / "manifest.json"
    if not path.exists():
        raise InputError(f"{out}: no manifest.json (not a CoT Factory output, or the run did not finish)")
    return json.loads(path.read_text(encoding="utf-8"))
