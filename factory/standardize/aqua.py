"""AQuA-RAT: rationale lines → steps; options; the correct letter → the answer text."""

from __future__ import annotations

import polars as pl

from factory.recipe.model import TraceOptions
from factory.standardize.base import TraceFormat, first_reject, is_blank, lines, register_format, steps_of, tag_last_summary


@register_format("aqua")
class AQuA(TraceFormat):
    doc = "AQuA-RAT: rationale lines → steps (closing 'Answer: C' → SUMMARY); correct letter → option text"

    def apply(self, df: pl.DataFrame, options: TraceOptions) -> pl.DataFrame:
        letter = pl.col("answer").str.strip_chars().str.strip_chars("()").str.to_uppercase()
        index = letter.str.to_integer(base=36, strict=False) - 10  # A → 0
        chosen = pl.col("options").list.get(index, null_on_oob=True)
        text = chosen.struct.field("text")
        answer = text if options.aqua_answer == "text" else letter
        return df.with_columns(
            steps=tag_last_summary(steps_of(lines(pl.col("trace")))),
            answer=answer,
            gold_answer=answer,
            _letter_ok=chosen.struct.field("label") == letter,
        ).with_columns(
            _reject=first_reject(
                (is_blank(pl.col("trace")), "aqua: empty or missing rationale"),
                (pl.col("options").is_null() | (pl.col("options").list.len() == 0), "aqua: no options"),
                (is_blank(pl.col("answer")) & pl.lit(options.aqua_answer == "text"), "aqua: correct letter not among the options"),
                (~pl.col("_letter_ok").fill_null(False), "aqua: correct letter not among the options"),
            )
        ).drop("_letter_ok")
