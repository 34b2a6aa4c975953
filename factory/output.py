"""Writing outputs safely: every file lands by rename, and a run's directory replaces the last
run's as a whole, so a reader never sees a half-written shard or shards of two runs mixed."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from factory.errors import InputError

MARKER = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_parquet_atomic(table: pa.Table, path: Path, *, compression: str = "zstd",
                         compression_level: int | None = None, row_group_rows: int = 10_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    pq.write_table(
        table, tmp,
        compression=None if compression == "none" else compression,
        compression_level=compression_level,
        row_group_size=row_group_rows,
        # Dictionary encoding hashes every value; zstd already squeezes the repeated short
        # strings (tags, roles, domains), and on free text the writer would try, then fall back.
        use_dictionary=False,
        # Nothing time-dependent goes into the file, so reruns are byte-identical.
    )
    os.replace(tmp, path)


def staging_dir(out: Path) -> Path:
    """A fresh sibling directory where a run writes before it replaces ``out``."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise InputError(f"refusing to replace {out}: it is not empty and holds no {MARKER} (not a CoT Factory output)")
    stage = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    return stage


def publish_dir(stage: Path, out: Path) -> None:
    """Replace ``out`` by ``stage``: two renames, so ``out`` is always one whole run."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(stage, out)
    if old.exists():
        shutil.rmtree(old)
