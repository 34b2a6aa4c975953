"""No trace in the source (``none``) and free-text rationales (``rationale``)."""

from __future__ import annotations

import polars as pl

from factory.recipe.model import TraceOptions
from factory.standardize.base import (
    EMPTY_STEPS, TraceFormat, answer_line, first_reject, is_blank, lines, register_format, steps_of, tag_last_summary,
)


@register_format("none")
class NoTrace(TraceFormat):
    doc = "no reasoning in the source: steps stay empty (a teacher may fill them); answer = gold answer"

    def apply(self, df: pl.DataFrame, options: TraceOptions) -> pl.DataFrame:
        return df.with_columns(steps=EMPTY_STEPS, gold_answer=pl.col("answer"), _reject=pl.lit(None, dtype=pl.String))


@register_format("rationale")
class Rationale(TraceFormat):
    doc = "a plain rationale column: one step per line; answer from `answer`, else from a closing 'The answer is …' line"

    def apply(self, df: pl.DataFrame, options: TraceOptions) -> pl.DataFrame:
        steps = lines(pl.col("trace"))
        closing = steps.list.last().str.extract(r"(?i)answer(?:\s+is)?\s*[:\-]?\s*(.+?)\.?$", 1)
        return df.with_columns(
            steps=tag_last_summary(steps_of(steps)),
            answer=pl.coalesce(pl.col("answer"), pl.when(answer_line(steps.list.last())).then(closing)),
            gold_answer=pl.col("answer"),
        ).with_columns(
            _reject=first_reject(
                (is_blank(pl.col("trace")), "rationale: empty or missing trace"),
                (is_blank(pl.col("answer")), "rationale: no answer field and no closing 'The answer is …' line"),
            )
        )
