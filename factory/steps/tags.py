"""Step tags from one rule table: CHECK, ACTION, SUMMARY, else THOUGHT.

A step that carries a structured tool call (GSM8K's ``<<48/2=24>>``) is ACTION whatever its
words ("the check came to 3 * 8 = $24" is a bill, not a verification). Otherwise rules are tried
in the table's order and the first tag whose pattern matches wins, so a step that verifies a
calculation ("Check: 3 * 8 = 24 ✓") is CHECK, a calculation that concludes ("So he pays
8 * 3 = $24.") is ACTION, and a plain conclusion is SUMMARY. A recipe's
``steps.tags`` replaces the patterns of the tags it names.
"""

from __future__ import annotations

import re

import polars as pl

# a calculation: numbers (or a variable) joined by an operator and an equals sign, or a
# variable assigned a value ("x = 3"), or a call to something outside the text
_NUM = r"(?:[$€£]?\d[\d,]*(?:\.\d+)?%?|\.\d+|[a-zA-Z]\b)"
RULES: dict[str, list[str]] = {
    "CHECK": [
        r"(?i)\b(?:check(?:ing|s|ed)?|verif(?:y|ies|ying|ied|ication)|double[- ]check|sanity check|confirm(?:s|ed|ing)?)\b",
        r"(?i)\b(?:substitut\w*|plug\w*|put\w*)\b[^.]{0,40}\bback\b",
        r"(?i)\bwhich (?:matches|agrees with|is consistent with)\b|\bas expected\b|✓|✔",
    ],
    "ACTION": [
        rf"{_NUM}\s*(?:[-+*/×÷^−–]|\bx\b|\btimes\b|\bplus\b|\bminus\b|\bdivided by\b)\s*\(?{_NUM}[^=\n]*(?:=|\bequals?\b)",
        r"(?i)^\s*(?:let\s+)?[a-z]\s*=\s*[-\d($.]",
        r"(?i)\b(?:search(?:ed|ing)? (?:for|the web)|look(?:ed|ing)? up|call(?:ed|ing)? the|run(?:ning)? the|"
        r"execut(?:e|ed|ing)|query(?:ing)? the|use the (?:calculator|tool|api))\b",
    ],
    "SUMMARY": [
        r"(?i)^\s*(?:so|thus|therefore|hence|in (?:total|conclusion|summary|all)|altogether|overall|finally|"
        r"the (?:final )?answer is|answer\s*:|to (?:sum up|summari[sz]e))\b",
    ],
}
ORDER = ("CHECK", "ACTION", "SUMMARY")


def rules_for(overrides: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """The built-in table with a recipe's patterns in place of the tags it names."""
    table = {tag: list(patterns) for tag, patterns in RULES.items()}
    for tag, patterns in (overrides or {}).items():
        if tag != "THOUGHT":
            table[tag] = list(patterns)
    for patterns in table.values():
        for p in patterns:
            re.compile(p)            # a bad pattern fails here, before any row is read
    return table


def tag_expr(text: pl.Expr, has_calls: pl.Expr, rules: dict[str, list[str]]) -> pl.Expr:
    """The tag of every step (vectorised over a column of step texts)."""
    def hit(tag: str) -> pl.Expr:
        patterns = rules.get(tag) or []
        if not patterns:
            return pl.lit(False)
        return pl.any_horizontal([text.str.contains(p) for p in patterns]).fill_null(False)

    expr = pl.when(has_calls).then(pl.lit("ACTION"))      # a structured tool call is an action, whatever its words
    expr = expr.when(hit("CHECK")).then(pl.lit("CHECK"))
    expr = expr.when(hit("ACTION")).then(pl.lit("ACTION"))
    expr = expr.when(hit("SUMMARY")).then(pl.lit("SUMMARY"))
    return expr.otherwise(pl.lit("THOUGHT"))


def fill_tags(steps: pl.Expr, rules: dict[str, list[str]]) -> pl.Expr:
    """A list-of-steps column with every missing tag taken from the table (given tags stay)."""
    has_calls = pl.field("calls").list.len().fill_null(0) > 0
    return steps.list.eval(pl.element().struct.with_fields(
        pl.coalesce(pl.field("tag"), tag_expr(pl.field("text"), has_calls, rules)).alias("tag")))
