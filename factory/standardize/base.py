"""Trace standardisation: reasoning a source already carries → canonical steps / sub-questions /
answer, with no teacher. One ``TraceFormat`` per file, registered by the name recipes use in
``trace_format``. Each works on a whole polars batch with vectorised expressions.

Input columns (see ``factory.sources.mapping.QA_SCHEMA``): question, answer, trace, options,
facts, subquestions, system, and ``_text`` (trace, else answer). Output adds steps, subquestions (canonical), answer, gold_answer,
flags and ``_reject``: null for a good row, otherwise the reason it goes to quarantine.
"""

from __future__ import annotations

from typing import ClassVar

import polars as pl

from factory.recipe.model import TraceOptions
from factory.registry import Registry

STEP_DTYPE = pl.Struct({"tag": pl.String, "text": pl.String})
EMPTY_STEPS = pl.lit([], dtype=pl.List(STEP_DTYPE))
# Blank lines separate paragraphs; \x1e (record separator) never occurs in text we split.
_PARA_SEP = "\x1e"


class TraceFormat:
    name: ClassVar[str]
    doc: ClassVar[str] = ""

    def apply(self, df: pl.DataFrame, options: TraceOptions) -> pl.DataFrame:
        raise NotImplementedError


TRACE_FORMATS: Registry[type[TraceFormat]] = Registry("trace format", name_attr="name")
register_format = TRACE_FORMATS.register


# ---- expression helpers --------------------------------------------------------------------

def trace_text() -> pl.Expr:
    """The reasoning text: ``trace`` when mapped, else ``answer`` (GSM8K keeps it there).
    ``standardize`` materialises it as ``_text`` before a format overwrites ``answer``."""
    return pl.col("_text")


def lines(expr: pl.Expr) -> pl.Expr:
    """Non-empty, stripped lines."""
    return expr.str.split("\n").list.eval(pl.element().str.strip_chars()).list.filter(pl.element() != "")


def paragraphs(expr: pl.Expr) -> pl.Expr:
    """Blank-line separated blocks, stripped; single newlines stay inside a block."""
    return (
        expr.str.replace_all(r"\r\n?", "\n")
        .str.replace_all(r"\n[ \t]*\n\s*", _PARA_SEP)
        .str.split(_PARA_SEP)
        .list.eval(pl.element().str.strip_chars())
        .list.filter(pl.element() != "")
    )


def steps_of(texts: pl.Expr, tag: str = "THOUGHT") -> pl.Expr:
    """list[str] → list[{tag, text}] with one tag."""
    return texts.list.eval(pl.struct(tag=pl.lit(tag), text=pl.element()))


_REF = r"#(\d+)"


def subquestion_structs(texts: pl.Expr) -> pl.Expr:
    """list[str] → list[{question, answer, refs}], '#k' references as 0-based indices."""
    refs = pl.element().str.extract_all(_REF).list.eval(pl.element().str.slice(1).cast(pl.Int32) - 1)
    return texts.list.eval(pl.struct(question=pl.element().str.strip_chars(), answer=pl.lit(None, dtype=pl.String), refs=refs))


def forward_refs(texts: pl.Expr) -> pl.Expr:
    """True when a sub-question refers to itself or a later one (refs must point backwards)."""
    refs = pl.element().str.extract_all(_REF).list.eval(pl.element().str.slice(1).cast(pl.Int32) - 1)
    position = pl.int_range(pl.len(), dtype=pl.Int32)
    return texts.list.eval((refs.list.max() >= position) | (refs.list.min() < 0)).list.any()


def first_reject(*checks: tuple[pl.Expr, str]) -> pl.Expr:
    """The reason of the first failing check (checks are 'bad when true'); null when all pass."""
    expr = pl.lit(None, dtype=pl.String)
    for bad, reason in reversed(checks):
        expr = pl.when(bad.fill_null(False)).then(pl.lit(reason)).otherwise(expr)
    return expr


def is_blank(expr: pl.Expr) -> pl.Expr:
    return expr.is_null() | (expr.str.strip_chars() == "")


def answer_line(expr: pl.Expr) -> pl.Expr:
    """True for a closing 'Answer: C' / 'The answer is B.' / 'Correct answer - A' line."""
    return expr.str.contains(r"(?i)^(?:so,?\s+|hence,?\s+|thus,?\s+|therefore,?\s+)?(?:the\s+)?(?:correct\s+)?(?:answer|option|ans)\b")


def tag_last_summary(steps: pl.Expr) -> pl.Expr:
    """Re-tag the final step SUMMARY when it is an answer line."""
    return steps.list.eval(
        pl.struct(
            tag=pl.when((pl.int_range(pl.len()) == pl.len() - 1) & answer_line(pl.element().struct.field("text")))
            .then(pl.lit("SUMMARY"))
            .otherwise(pl.element().struct.field("tag")),
            text=pl.element().struct.field("text"),
        )
    )
