"""Dataset statistics for the card, computed on the final rows (polars expressions, no loops)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa


def token_lengths(table: pa.Table) -> dict[str, dict[str, int]]:
    """Per domain: percentiles of whitespace tokens in question + steps + answer + turns (card stats)."""
    df = pl.from_arrow(table.select(["domain", "question", "steps", "answer", "messages", "chosen"]))
    assert isinstance(df, pl.DataFrame)
    words = lambda e: e.fill_null("").str.count_matches(r"\S+")           # noqa: E731
    texts = lambda c: pl.col(c).list.eval(pl.element().struct.field("content")).list.join(" ")  # noqa: E731
    n = (words(pl.col("question")) + words(pl.col("steps").list.eval(pl.element().struct.field("text")).list.join(" "))
         + words(pl.col("answer")) + words(texts("messages")) + words(texts("chosen")))
    stats = df.with_columns(n=n).group_by("domain").agg(
        rows=pl.len(), **{f"p{q}": pl.col("n").quantile(q / 100, "nearest") for q in (10, 50, 90, 99)}, max=pl.col("n").max())
    return {r["domain"]: {k: int(v) for k, v in r.items() if k != "domain"} for r in stats.sort("domain").iter_rows(named=True)}
