"""Trace formats, registered by the name recipes use in ``trace_format``."""

from __future__ import annotations

import polars as pl

from factory.recipe.model import QASource, SourceBase
from factory.standardize import aqua, gsm8k, plain, strategyqa, tagged  # noqa: F401  (registers)
from factory.standardize.base import TRACE_FORMATS, TraceFormat, first_reject, subquestion_structs

_GARBLED = "\ufffd"


def standardize(df: pl.DataFrame, spec: SourceBase) -> pl.DataFrame:
    """Standardise one mapped batch; adds ``_reject`` (null = keep)."""
    if not isinstance(spec, QASource):  # conversations and preferences are canonical after mapping
        return df.with_columns(_reject=pl.lit(None, dtype=pl.String))
    # Text that was already mangled upstream (U+FFFD where bytes were lost) is checked before the
    # format rewrites the answer column, which may hold the whole solution (GSM8K).
    # Most sources map either a trace or an answer holding the solution: then _text is that
    # column itself (no copy); coalesce only when both are partly there.
    text = pl.col("answer") if df["trace"].null_count() == df.height else (
        pl.col("trace") if df["answer"].null_count() == df.height else pl.coalesce("trace", "answer"))
    df = df.with_columns(_text=text).with_columns(_garbled=first_reject(
        (pl.col("question").str.contains(_GARBLED, literal=True), "garbled question: contains U+FFFD replacement characters"),
        (pl.col("_text").str.contains(_GARBLED, literal=True), "garbled trace: contains U+FFFD replacement characters"),
    ))
    out = TRACE_FORMATS[spec.trace_format]().apply(df, spec.trace_options)
    if out.schema["subquestions"] == pl.List(pl.String):   # mapped, but the format made nothing of them
        out = out.with_columns(subquestions=subquestion_structs(pl.col("subquestions")))
    return out.with_columns(_reject=pl.coalesce("_reject", "_garbled")).drop("_garbled", "_text")


__all__ = ["TRACE_FORMATS", "TraceFormat", "standardize"]
