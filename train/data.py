"""Training data from CoT Factory exports: which files, which rows, in which order.

The order of rows is decided here, not by the trainer (its sampler is sequential): a seeded
shuffle, a domain mix (exact per-domain quotas by largest remainder, then a seeded interleave,
so every stretch of batches keeps the proportions), or a curriculum (easy → hard by reasoning
steps or answer length).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from factory.errors import InputError
from train.plan import CurriculumSpec, DataSpec, MixSpec, StageSpec


def export_files(spec: DataSpec, method: str, base: Path) -> tuple[list[Path], list[dict]]:
    """The export's Parquet files for the split, and what the run's manifest says of them."""
    kind = spec.export or method
    root = Path(spec.path)
    root = root if root.is_absolute() else base / root
    manifest_path = next((p / "manifest.json" for p in (root, root.parent.parent) if (p / "manifest.json").exists()), None)
    folder = root if root.name == kind and root.parent.name == "exports" else root / "exports" / kind
    files = sorted(folder.glob(f"{spec.split}-*.parquet"))
    if not files:
        raise InputError(f"{folder}: no {spec.split}-*.parquet (run the recipe with exports: [{kind}])")
    hashes = []
    if manifest_path:
        manifest = json.loads(manifest_path.read_text())
        listed = {f["path"]: f for f in manifest.get("exports", [])}
        for f in files:
            rel = f.relative_to(manifest_path.parent).as_posix()
            hashes.append({"path": str(f), "sha256": listed.get(rel, {}).get("sha256"), "rows": listed.get(rel, {}).get("rows"),
                           "recipe_sha256": manifest["recipe"]["sha256"]})
    return files, hashes


def load_rows(stage: StageSpec, base: Path) -> tuple[pa.Table, list[dict]]:
    tables, hashes = [], []
    for spec in stage.data:
        files, h = export_files(spec, stage.method, base)
        hashes += h
        t = pa.concat_tables(pq.read_table(f) for f in files)
        if spec.domains:
            import pyarrow.compute as pc
            t = t.filter(pc.is_in(t["domain"], pa.array(spec.domains)))
        if spec.limit:
            t = t.slice(0, spec.limit)
        tables.append(t)
    table = pa.concat_tables(tables, promote_options="default")
    if table.num_rows == 0:
        raise InputError(f"stage {stage.name}: no rows after the domain filters")
    return table, hashes


def draws_needed(stage: StageSpec, n_rows: int) -> int:
    if stage.max_steps:
        return stage.max_steps * stage.batch_size * stage.grad_accum
    return max(1, math.ceil(n_rows * stage.epochs))


def mix_order(domains: list[str], n: int, mix: MixSpec, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    present = sorted(set(domains))
    sizes = {d: sum(1 for x in domains if x == d) for d in present}
    if mix.weights:
        missing = sorted(set(mix.weights) - set(present))
        if missing:
            raise InputError(f"mix.weights: no rows of domain {', '.join(missing)} in the stage's data (has: {', '.join(present)})")
        raw = {d: mix.weights[d] for d in present if mix.weights.get(d, 0) > 0}
    else:
        raw = {d: sizes[d] ** (mix.temperature or 1.0) for d in present}
    total = sum(raw.values())
    exact = {d: n * w / total for d, w in raw.items()}
    quota = {d: int(math.floor(v)) for d, v in exact.items()}
    for d in sorted(exact, key=lambda d: (-(exact[d] - quota[d]), d))[: n - sum(quota.values())]:
        quota[d] += 1
    pools = {d: [i for i, x in enumerate(domains) if x == d] for d in raw}
    picks: dict[str, list[int]] = {}
    for d, q in quota.items():
        pool = pools[d]
        reps = -(-q // len(pool))
        seq = np.concatenate([rng.permutation(pool) for _ in range(reps)])[:q]     # every row before any repeats
        picks[d] = seq.tolist()
    labels = np.array([d for d in quota for _ in range(quota[d])])
    rng.shuffle(labels)
    cursor = {d: 0 for d in quota}
    order = []
    for d in labels:
        order.append(picks[d][cursor[d]])
        cursor[d] += 1
    return order


_REASONING = re.compile(r"<reasoning>(.*?)</reasoning>", re.S)


def difficulty(row: dict, key: str) -> int:
    turns = row.get("messages") or row.get("completion") or row.get("chosen") or []
    answer = next((m["content"] for m in reversed(turns) if m["role"] == "assistant"), "") if isinstance(turns, list) else str(turns)
    if key == "length":
        return len(answer)
    m = _REASONING.search(answer)
    return len([ln for ln in (m.group(1) if m else answer).splitlines() if ln.strip()])


def curriculum_order(rows: list[dict], n: int, spec: CurriculumSpec) -> list[int]:
    ranked = sorted(range(len(rows)), key=lambda i: (difficulty(rows[i], spec.key), rows[i].get("id") or ""),
                    reverse=spec.order == "hard_first")
    reps = -(-n // len(ranked))
    return (ranked * reps)[:n]           # one pass easy → hard, repeated when more steps are asked for


def row_order(stage: StageSpec, table: pa.Table, seed: int) -> list[int]:
    n = draws_needed(stage, table.num_rows)
    if stage.mix:
        return mix_order(table["domain"].to_pylist(), n, stage.mix, seed)
    if stage.curriculum:
        return curriculum_order(table.to_pylist(), n, stage.curriculum)
    rng = np.random.default_rng(seed)
    reps = -(-n // table.num_rows)
    return np.concatenate([rng.permutation(table.num_rows) for _ in range(reps)])[:n].tolist()


def as_dataset(table: pa.Table, order: list[int]) -> Any:
    import datasets

    return datasets.Dataset(datasets.table.InMemoryTable(table.take(pa.array(order, pa.int64()))))
