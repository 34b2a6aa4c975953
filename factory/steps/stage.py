"""The steps stage: split every trace into sentence steps, tag them, find what each step uses
and (when the recipe asks) put them in dependency order.

    steps (as standardised) ─ split (spaCy) ─ tag (rule table) ─ depends_on / order ─ steps

Splitting and tagging are columnar (one spaCy pass over the texts that can split, one regex pass
per rule); dependency analysis is per row and runs on a small process pool for large tables.
A structured tool call stays with the piece of its step that states its result. Sub-questions
whose references point forward are flagged; nothing is dropped here.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import polars as pl
import pyarrow as pa

from factory.recipe.model import StepOptions
from factory.rows import ROW_SCHEMA
from factory.stages import Stage, StageContext, StageResult, register_stage
from factory.steps.order import order_steps
from factory.steps.split import split_texts, terms as model_terms
from factory.steps.tags import rules_for, tag_expr

CALL_DTYPE = pl.List(pl.Struct({"tool": pl.String, "input": pl.String, "output": pl.String}))
PARALLEL_FROM = 20_000          # rows: below this a process pool costs more than it saves


def split_steps(steps: pl.DataFrame, model: str | None) -> pl.DataFrame:
    """One row per step (row, text, calls) → one row per piece, calls moved to their piece."""
    pieces = split_texts(steps["text"].fill_null("").to_list(), model)
    calls = steps["calls"].to_list()
    rows, texts, piece_calls = [], [], []
    for r, parts, cs in zip(steps["row"].to_list(), pieces, calls):
        parts = parts or [""]
        owner = [[] for _ in parts]
        for c in cs or []:
            out = (c.get("output") or "").strip()
            at = next((k for k, p in enumerate(parts) if out and out in p), len(parts) - 1)
            owner[at].append(c)
        rows.extend([r] * len(parts))
        texts.extend(parts)
        piece_calls.extend(owner)
    return pl.DataFrame({"row": rows, "text": texts, "calls": piece_calls},
                        schema={"row": pl.UInt32, "text": pl.String, "calls": CALL_DTYPE})


def _order_chunk(args: tuple[list, list, list, list, list | None, bool]) -> list[tuple[list[int], list[list[int]], list[str]]]:
    questions, answers, texts, calls, terms, reorder = args
    out = []
    for r, (q, a, ts, cs) in enumerate(zip(questions, answers, texts, calls)):
        tms = terms[r] if terms is not None else [None] * len(ts)
        steps = [{"text": t, "calls": c, "terms": tm, "i": k} for k, (t, c, tm) in enumerate(zip(ts, cs, tms))]
        ordered, flags = order_steps(steps, q or "", a, reorder=reorder)
        out.append(([s["i"] for s in ordered], [s["depends_on"] for s in ordered], flags))
    return out


def order_all(questions: list, answers: list, texts: list, calls: list, reorder: bool,
              workers: int = 1, terms: list | None = None) -> list[tuple[list[int], list[list[int]], list[str]]]:
    n = len(texts)
    if workers <= 1 or n < PARALLEL_FROM:
        return _order_chunk((questions, answers, texts, calls, terms, reorder))
    size = -(-n // (workers * 4))
    chunks = [(questions[i:i + size], answers[i:i + size], texts[i:i + size], calls[i:i + size],
               terms[i:i + size] if terms is not None else None, reorder) for i in range(0, n, size)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [r for part in pool.map(_order_chunk, chunks) for r in part]


def structure(df: pl.DataFrame, opts: StepOptions, workers: int = 1) -> tuple[pl.DataFrame, dict[str, Any]]:
    """``df`` (question, answer, steps, subquestions, flags) → the same columns with steps split,
    tagged and ordered, flags added; plus counts for the report."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    indexed = df.with_row_index("row")
    flat = (indexed.select("row", "steps").explode("steps").drop_nulls("steps").unnest("steps")
            .with_columns(calls=pl.col("calls").fill_null(pl.lit([], dtype=CALL_DTYPE))))
    steps_in = flat.height
    if opts.split == "spacy" and flat.height:
        flat = split_steps(flat, opts.model)
    else:
        flat = flat.select("row", "text", "calls")
    timings["split"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rules = rules_for(opts.tags)
    flat = flat.with_columns(tag=tag_expr(pl.col("text"), pl.col("calls").list.len() > 0, rules))
    if opts.model:      # a trained pipeline's entities and noun chunks feed dependency detection
        flat = flat.with_columns(terms=pl.Series(model_terms(flat["text"].to_list(), opts.model), dtype=pl.List(pl.String)))
    grouped = flat.group_by("row", maintain_order=True).agg("text", "calls", "tag", *(["terms"] if opts.model else []))
    timings["tag"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with_steps = grouped.join(indexed.select("row", "question", "answer"), on="row", how="left")
    orders = order_all(with_steps["question"].to_list(), with_steps["answer"].to_list(),
                       with_steps["text"].to_list(), with_steps["calls"].to_list(),
                       reorder=opts.order == "dependency", workers=workers,
                       terms=with_steps["terms"].to_list() if opts.model else None)
    timings["order"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # Back to nested steps without a Python dict per step: every piece gets its new position
    # and depends_on from the ordering, then one sort and one group_by rebuild the lists.
    sizes = [len(o) for o, _, _ in orders]
    placement = pl.DataFrame({
        "row": pl.Series(with_steps["row"]).gather([k for k, n in enumerate(sizes) for _ in range(n)]),
        "k": [i for o, _, _ in orders for i in o],
        "pos": [p for n in sizes for p in range(n)],
        "depends_on": pl.Series([d for _, ds, _ in orders for d in ds], dtype=pl.List(pl.Int32)),
    }, schema_overrides={"k": pl.UInt32, "pos": pl.UInt32})
    pieces = flat.with_columns(k=pl.int_range(pl.len(), dtype=pl.UInt32).over("row"))
    rebuilt = (pieces.join(placement, on=["row", "k"], how="left").sort("row", "pos")
               .group_by("row", maintain_order=True)
               .agg(_steps=pl.struct("tag", "text", "depends_on", "calls"))
               .join(pl.DataFrame({"row": with_steps["row"],
                                   "_flags": pl.Series([f for _, _, f in orders], dtype=pl.List(pl.String))}),
                     on="row", how="left"))
    reordered = sum(o != sorted(o) for o, _, _ in orders)
    rebuilt = rebuilt.with_columns(pl.col("_steps").cast(df.schema["steps"]))
    forward = pl.col("subquestions").list.eval(
        (pl.element().struct.field("refs").list.max().fill_null(-1) >= pl.int_range(pl.len()))).list.any().fill_null(False)
    out = (indexed.join(rebuilt, on="row", how="left")
           .with_columns(
               steps=pl.when(pl.col("_steps").is_not_null()).then(pl.col("_steps")).otherwise(pl.col("steps")),
               flags=pl.concat_list(pl.col("flags").fill_null([]), pl.col("_flags").fill_null([]),
                                    pl.when(forward).then(pl.lit(["subquestion_forward_ref"])).otherwise(pl.lit([], dtype=pl.List(pl.String)))),
           ).drop("row", "_steps", "_flags"))
    timings["assemble"] = time.perf_counter() - t0
    tag_counts = dict(flat["tag"].value_counts().iter_rows()) if flat.height else {}
    report = {
        "rows_with_steps": with_steps.height,
        "steps_in": steps_in,
        "steps_out": flat.height,
        "tags": {t: int(tag_counts.get(t, 0)) for t in ("THOUGHT", "ACTION", "CHECK", "SUMMARY")},
        "order": opts.order,
        "rows_reordered": reordered,
        "dependency_cycles": sum("dependency_cycle" in f for _, _, f in orders),
        "rows_out_of_order": sum("steps_out_of_order" in f for _, _, f in orders),
        "subquestion_forward_refs": int(out.select(forward.sum()).item()),
        "seconds": {k: round(v, 3) for k, v in timings.items()},
    }
    return out, report


@register_stage("steps")
class Steps(Stage):
    """Split, tag and (``order: dependency``) reorder reasoning steps; fill ``depends_on``."""

    def __init__(self, ctx: StageContext, opts: StepOptions, workers: int | None = None):
        super().__init__(ctx)
        self.opts = opts
        self.workers = workers or min(2, os.cpu_count() or 1)

    def run(self, table: pa.Table) -> StageResult:
        cols = ["question", "answer", "steps", "subquestions", "flags"]
        df = pl.from_arrow(table.select(cols))
        assert isinstance(df, pl.DataFrame)
        out, report = structure(df, self.opts, self.workers)
        for name in ("steps", "flags"):
            i = table.schema.get_field_index(name)
            table = table.set_column(i, ROW_SCHEMA.field(name), out[name].to_arrow().cast(ROW_SCHEMA.field(name).type))
        return StageResult(kept=table, report=report)
