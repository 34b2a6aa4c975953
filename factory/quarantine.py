"""Quarantine: every row a stage rejects, with where it came from and why. Nothing is dropped
silently: the manifest checks that, per stage, rows in = rows out + rows quarantined."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow as pa

from factory.sources.base import Reject

QUARANTINE_SCHEMA = pa.schema([
    pa.field("stage", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("source_name", pa.string()),
    pa.field("source_path", pa.string()),
    pa.field("source_row", pa.int64()),
    pa.field("source_line", pa.int64()),
    pa.field("id", pa.string()),
    pa.field("raw", pa.string()),   # the rejected record / line / row, as JSON or original text
    pa.field("detail", pa.string()),  # JSON with what a stage measured (jaccard, matched n-gram, expectation)
])
_POLARS = pl.from_arrow(QUARANTINE_SCHEMA.empty_table()).schema


class Quarantine:
    def __init__(self) -> None:
        self._parts: dict[str, list[pl.DataFrame]] = {}

    def add_rejects(self, stage: str, source_name: str, source_path: str, rejects: list[Reject]) -> None:
        if not rejects:
            return
        self._add(stage, pl.DataFrame({
            "stage": [stage] * len(rejects),
            "reason": [r.reason for r in rejects],
            "source_name": [source_name] * len(rejects),
            "source_path": [source_path] * len(rejects),
            "source_row": [r.row for r in rejects],
            "source_line": [r.line for r in rejects],
            "id": [None] * len(rejects),
            "raw": [r.raw for r in rejects],
            "detail": [None] * len(rejects),
        }, schema=_POLARS))

    def add_frame(self, stage: str, df: pl.DataFrame) -> None:
        """Add rows that already carry reason/source_*/id/raw columns (missing ones become null)."""
        if df.height == 0:
            return
        cols = [pl.lit(stage).alias("stage")] + [
            (pl.col(c).cast(t) if c in df.columns else pl.lit(None, dtype=t)).alias(c)
            for c, t in _POLARS.items() if c != "stage"
        ]
        self._add(stage, df.select(cols))

    def _add(self, stage: str, df: pl.DataFrame) -> None:
        self._parts.setdefault(stage, []).append(df)

    def merge(self, other: "Quarantine") -> None:
        """Append another collector's rows (a source read in parallel), keeping its order."""
        for stage, parts in other._parts.items():
            self._parts.setdefault(stage, []).extend(parts)

    def count(self, stage: str | None = None) -> int:
        stages = [stage] if stage else list(self._parts)
        return sum(df.height for s in stages for df in self._parts.get(s, []))

    def stages(self) -> list[str]:
        return list(self._parts)

    def table(self, stage: str) -> pa.Table:
        return pl.concat(self._parts[stage]).to_arrow().cast(QUARANTINE_SCHEMA)

    def top_reasons(self, n: int = 8) -> list[tuple[str, str, int]]:
        counts: Counter[tuple[str, str]] = Counter()
        for stage, parts in self._parts.items():
            for df in parts:
                for reason, k in df.group_by("reason").len().iter_rows():
                    counts[(stage, _generalise(reason))] += k
        return [(s, r, k) for (s, r), k in counts.most_common(n)]


def _generalise(reason: str) -> str:
    """Group reasons that differ only in positions ('at column 7') for the summary."""
    import re

    return re.sub(r"\b(at|line|column|byte|character)\s+\d+", r"\1 N", reason)


def read_quarantine(out: Path) -> pa.Table:
    import pyarrow.parquet as pq

    files = sorted((out / "quarantine").glob("*.parquet"))
    if not files:
        return QUARANTINE_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f) for f in files])
