"""Shards: canonical rows → ``data/<domain>/<split>-0000i-of-0000N.parquet``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory.output import sha256_file, write_parquet_atomic
from factory.recipe.model import ShardOptions


@dataclass
class ShardFile:
    path: str        # relative to the output directory, with forward slashes
    domain: str
    split: str
    rows: int
    sha256: str

    def to_json(self) -> dict:
        return asdict(self)


def partitions(table: pa.Table) -> dict[tuple[str, str], pa.Table]:
    """Rows grouped by (domain, split), in row order, sorted by key.

    Rows arrive in runs (a source has one domain and one split), so a partition is a
    concatenation of zero-copy slices, found from where the key changes: no take, no filter
    over the nested columns.
    """
    n = table.num_rows
    if n == 0:
        return {}
    domain, split = table["domain"].combine_chunks(), table["split"].combine_chunks()
    changed = pc.or_(pc.not_equal(domain.slice(1), domain.slice(0, n - 1)),
                     pc.not_equal(split.slice(1), split.slice(0, n - 1)))
    starts = np.concatenate(([0], np.flatnonzero(changed.to_numpy(zero_copy_only=False)) + 1))
    ends = np.concatenate((starts[1:], [n]))
    runs: dict[tuple[str, str], list[pa.Table]] = {}
    for s, e in zip(starts.tolist(), ends.tolist()):
        key = (domain[s].as_py(), split[s].as_py())
        runs.setdefault(key, []).append(table.slice(s, e - s))
    return {k: pa.concat_tables(runs[k]) for k in sorted(runs)}


def write_shards(table: pa.Table, out: Path, options: ShardOptions, threads: int = 2,
                 on_start: Callable[[int], None] | None = None, on_file: Callable[[], None] | None = None) -> list[ShardFile]:
    """Write every (domain, split) partition in row order, ``max_rows`` rows per file at most.
    Files are independent, so they are encoded on a few threads (pyarrow releases the GIL);
    the list comes back in layout order whatever the threads do."""
    jobs: list[tuple[str, str, str, pa.Table]] = []
    for (domain, split), part in partitions(table).items():
        n = -(-part.num_rows // options.max_rows)
        for i in range(n):
            rel = f"data/{domain}/{split}-{i:05d}-of-{n:05d}.parquet"
            jobs.append((rel, domain, split, part.slice(i * options.max_rows, options.max_rows)))

    if on_start:
        on_start(len(jobs))

    def write(job: tuple[str, str, str, pa.Table]) -> ShardFile:
        rel, domain, split, chunk = job
        path = out / rel
        write_parquet_atomic(chunk, path, compression=options.compression,
                             compression_level=options.compression_level, row_group_rows=options.row_group_rows)
        if on_file:
            on_file()
        return ShardFile(rel, domain, split, chunk.num_rows, sha256_file(path))

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(write, jobs))
