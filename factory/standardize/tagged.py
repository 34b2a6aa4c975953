"""Tagged reasoning blocks: ``<Thought>…</Thought><Output>…</Output>`` (Marco-o1 / OpenO1)
and ``<think>…</think>answer`` (DeepSeek-R1 style)."""

from __future__ import annotations

import polars as pl

from factory.recipe.model import TraceOptions
from factory.standardize.base import TraceFormat, first_reject, is_blank, paragraphs, register_format, steps_of, trace_text


@register_format("thought")
class ThoughtOutput(TraceFormat):
    doc = "<Thought>…</Thought><Output>…</Output>: thought paragraphs → steps, output → answer"

    def apply(self, df: pl.DataFrame, options: TraceOptions) -> pl.DataFrame:
        text = trace_text()
        thought = text.str.extract(r"(?is)<thought>\s*(.*?)\s*</thought>", 1)
        output = text.str.extract(r"(?is)<output>\s*(.*?)\s*(?:</output>|$)", 1)
        trailing = text.str.extract(r"(?is)</output>\s*(.*)$", 1)
        unclosed = text.str.contains(r"(?i)<output>") & ~text.str.contains(r"(?i)</output>")
        no_flags = pl.lit([], dtype=pl.List(pl.String))
        return df.with_columns(
            steps=steps_of(paragraphs(thought)),
            answer=output,
            gold_answer=pl.lit(None, dtype=pl.String),
            flags=pl.concat_list(
                pl.when(~is_blank(trailing)).then(pl.lit(["text_after_output"])).otherwise(no_flags),
                pl.when(unclosed).then(pl.lit(["output_not_closed"])).otherwise(no_flags),
            ),
        ).with_columns(
            _reject=first_reject(
                (text.is_null(), "thought: no response text"),
                (thought.is_null(), "thought: no <Thought>…</Thought> block"),
                (is_blank(pl.col("answer")), "thought: no <Output> block or it is empty"),
                (pl.col("steps").list.len() == 0, "thought: the <Thought> block is empty"),
            )
        )


@register_format("think")
class Think(TraceFormat):
    doc = "<think>…</think> then the answer (an <answer>…</answer> block is used when present)"

    def apply(self, df: pl.DataFrame, options: TraceOptions) -> pl.DataFrame:
        text = trace_text()
        thought = text.str.extract(r"(?is)<think>\s*(.*?)\s*</think>", 1)
        after = text.str.extract(r"(?is)</think>\s*(.*?)\s*$", 1)
        tagged = after.str.extract(r"(?is)<answer>\s*(.*?)\s*</answer>", 1)
        unterminated = text.str.contains(r"(?i)<think>") & ~text.str.contains(r"(?i)</think>")
        return df.with_columns(
            steps=steps_of(paragraphs(thought)),
            answer=pl.coalesce(tagged, after),
            gold_answer=pl.col("answer"),
        ).with_columns(
            _reject=first_reject(
                (text.is_null(), "think: no response text"),
                (unterminated, "think: <think> block never closed (truncated trace?)"),
                (thought.is_null(), "think: no <think>…</think> block"),
                (is_blank(pl.col("answer")), "think: no answer after </think>"),
                (pl.col("steps").list.len() == 0, "think: the <think> block is empty"),
            )
        )
