"""StrategyQA: decomposition → sub-questions (``#k`` references resolved to indices), facts,
boolean answer → yes/no."""

from __future__ import annotations

import polars as pl

from factory.recipe.model import TraceOptions
from factory.standardize.base import TraceFormat, first_reject, forward_refs, register_format, steps_of, subquestion_structs


@register_format("strategyqa")
class StrategyQA(TraceFormat):
    doc = "StrategyQA: decomposition → sub-questions with #k refs → indices; facts → steps and facts; true/false → yes/no"

    def apply(self, df: pl.DataFrame, options: TraceOptions) -> pl.DataFrame:
        answer = pl.col("answer").str.strip_chars().str.to_lowercase().replace({"true": "yes", "false": "no"})
        facts = pl.col("facts").list.eval(pl.element().str.strip_chars()).list.filter(pl.element() != "")
        # Nested list expressions each get their own with_columns (polars runs an expression
        # single-threaded when it shares a with_columns with others).
        return df.with_columns(
            _forward=forward_refs(pl.col("subquestions")),
        ).with_columns(
            subquestions=subquestion_structs(pl.col("subquestions")),
        ).with_columns(
            facts=facts,
        ).with_columns(
            steps=steps_of(pl.col("facts")),
            answer=answer,
            gold_answer=answer,
        ).with_columns(
            _reject=first_reject(
                (pl.col("subquestions").is_null() | (pl.col("subquestions").list.len() == 0), "strategyqa: no decomposition"),
                (pl.col("_forward"), "strategyqa: a sub-question refers to itself or a later one (#k)"),
                (~pl.col("answer").is_in(["yes", "no"]), "strategyqa: answer is not a boolean / yes / no"),
            )
        ).drop("_forward")
