"""Validation with Great Expectations (1.x, ephemeral context) before shards are final.

One expectation suite per row kind, kept as JSON (default ``schemas/expectations/<kind>.json``,
``${domains}`` and ``${max_chars}`` filled from the recipe). Nested checks run on derived
per-row columns (``step_count``, ``step_tags_ok``, ``chosen_differs``, …) so every expectation
is a plain column expectation. Rows that fail go to quarantine naming the first expectation they
failed; the validation result is written beside the shards as ``validation/<kind>.json``.

Great Expectations takes seconds to import: it is imported only by this stage, and the pipeline
starts that import in the background when a recipe asks for validation.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from factory.errors import InputError
from factory.recipe.model import ValidateOptions
from factory.rows import KINDS, ROLES, STEP_TAGS
from factory.stages import Stage, StageContext, StageResult, register_stage

SUITES = Path(__file__).resolve().parent.parent.parent / "schemas" / "expectations"
_IMPORT: threading.Thread | None = None


def prefetch_great_expectations() -> None:
    """Start importing Great Expectations on a background thread (it overlaps reading)."""
    global _IMPORT
    if _IMPORT is None and "great_expectations" not in __import__("sys").modules:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        _IMPORT = threading.Thread(target=lambda: __import__("great_expectations"), daemon=True)
        _IMPORT.start()


def derived_columns(table: pa.Table) -> pl.DataFrame:
    """The flat per-row columns the suites check."""
    df = pl.from_arrow(table.select(["id", "domain", "kind", "trace_format", "question", "answer", "steps",
                                     "subquestions", "messages", "chosen", "rejected"]))
    assert isinstance(df, pl.DataFrame)
    position = pl.int_range(pl.len(), dtype=pl.Int32)
    el = pl.element()
    roles = pl.col("messages").list.eval(el.struct.field("role"))
    return df.select(
        "id", "domain", "kind", "trace_format",
        id_repeat=~pl.col("id").is_first_distinct(),
        question_chars=pl.col("question").str.len_chars().fill_null(0),
        answer_chars=pl.col("answer").str.len_chars().fill_null(0),
        step_count=pl.col("steps").list.len(),
        cot_steps_ok=(pl.col("trace_format") == "none") | (pl.col("steps").list.len() > 0),
        step_tags_ok=pl.col("steps").list.eval(el.struct.field("tag").is_in(list(STEP_TAGS))).list.all(),
        step_text_ok=pl.col("steps").list.eval(el.struct.field("text").str.contains(r"\S").fill_null(False)).list.all(),
        refs_ok=pl.col("subquestions").list.eval(
            el.struct.field("refs").list.eval(el >= 0).list.all() & (el.struct.field("refs").list.max().fill_null(-1) < position)
        ).list.all() & pl.col("steps").list.eval(
            el.struct.field("depends_on").list.eval(el >= 0).list.all() & (el.struct.field("depends_on").list.max().fill_null(-1) < position)
        ).list.all(),
        message_count=pl.col("messages").list.len(),
        roles_ok=roles.list.eval(el.is_in(list(ROLES))).list.all() & roles.list.contains("user") & roles.list.contains("assistant"),
        contents_ok=pl.col("messages").list.eval(el.struct.field("content").str.contains(r"\S").fill_null(False)).list.all(),
        chosen_count=pl.col("chosen").list.len(),
        rejected_count=pl.col("rejected").list.len(),
        chosen_differs=(pl.col("chosen") != pl.col("rejected")).fill_null(True),
    )


def _fill(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        key = value[2:-1]
        if key not in params:
            raise InputError(f"expectation suite uses ${{{key}}}, which the recipe does not provide (known: {', '.join(params)})")
        return params[key]
    if isinstance(value, dict):
        return {k: _fill(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, params) for v in value]
    return value


def load_suite(path: Path, params: dict[str, Any]) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"expectation suite not found: {path}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: invalid JSON in expectation suite: {e.msg}") from None
    return _fill(doc, params)


@register_stage("validate")
class Validate(Stage):
    def __init__(self, ctx: StageContext, opts: ValidateOptions, label: str | None = None):
        super().__init__(ctx, label)
        self.opts = opts
        recipe = ctx.loaded.recipe
        self.params = {"domains": sorted({s.domain for s in recipe.sources}), "max_chars": opts.max_chars}

    def suite_path(self, kind: str) -> Path:
        base = self.ctx.loaded.base_dir
        if kind in self.opts.suites:
            return base / self.opts.suites[kind]
        if self.opts.suite:
            return base / self.opts.suite
        return SUITES / f"{kind}.json"

    def run(self, table: pa.Table) -> StageResult:
        frame = derived_columns(table).with_row_index("_row")
        # rows of an unknown kind are checked against the qa suite, whose kind expectation fails
        frame = frame.with_columns(_suite=pl.when(pl.col("kind").is_in(list(KINDS))).then(pl.col("kind")).otherwise(pl.lit("qa")))
        failed: dict[int, tuple[str, dict[str, Any]]] = {}
        report: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        if table.num_rows:
            gx, context = _context()
            for kind in [k for k in KINDS if k in set(frame["_suite"].to_list())]:
                sub = frame.filter(pl.col("_suite") == kind)
                suite_doc = load_suite(self.suite_path(kind), self.params)
                result = _validate(gx, context, kind, sub, suite_doc)
                for exp in result["results"]:
                    for row in exp.pop("_unexpected_rows"):
                        failed.setdefault(row, (exp["name"], exp))
                mine = set(sub["_row"].to_list())
                report[kind] = {"suite": suite_doc.get("name", kind), "rows": sub.height, "success": result["success"],
                                "failed_rows": len(mine.intersection(failed)),
                                "expectations": [{k: e[k] for k in ("name", "type", "column", "success", "unexpected_count")}
                                                 for e in result["results"]]}
                files[f"validation/{kind}.json"] = (json.dumps(result, indent=2, sort_keys=True, default=str) + "\n").encode()
        bad = np.zeros(table.num_rows, dtype=bool)
        rows = sorted(failed)
        bad[rows] = True
        reasons = [f"failed expectation: {failed[r][0]} ({failed[r][1]['type']} on {failed[r][1]['column']})" for r in rows]
        details = [json.dumps({"expectation": failed[r][1]["type"], "column": failed[r][1]["column"], "name": failed[r][0]}) for r in rows]
        from factory.stages import rejected_rows

        mask = pa.array(bad)
        rejected = rejected_rows(table, mask, reasons, details)
        return StageResult(kept=table.filter(pc.invert(mask)), rejected=rejected, report=report, files=files)


def _context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    if _IMPORT is not None:
        _IMPORT.join()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return gx, context


def _validate(gx: Any, context: Any, kind: str, frame: pl.DataFrame, suite_doc: dict[str, Any]) -> dict[str, Any]:
    """Run one suite on one kind's rows; a compact, deterministic result with failing row numbers."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    pdf = frame.drop("_suite").to_pandas().set_index("_row")
    pdf.index.name = None          # unnamed: GE then reports plain row numbers
    source = context.data_sources.add_or_update_pandas(f"cot-{kind}")
    asset = source.add_dataframe_asset(kind)
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": pdf})
    suite = gx.ExpectationSuite(name=suite_doc.get("name", kind))
    for exp in suite_doc["expectations"]:
        suite.add_expectation_configuration(ExpectationConfiguration(type=exp["type"], kwargs=exp["kwargs"], meta=exp.get("meta", {})))
    validation = batch.validate(suite, result_format={"result_format": "COMPLETE", "partial_unexpected_count": 5})
    results = []
    for r in validation.results:
        cfg = r.expectation_config
        res = r.result or {}
        unexpected = [int(i) for i in res.get("unexpected_index_list") or []]
        results.append({
            "name": (cfg.meta or {}).get("name") or cfg.type, "type": cfg.type, "column": cfg.kwargs.get("column"),
            "kwargs": {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}, "success": bool(r.success),
            "unexpected_count": int(res.get("unexpected_count") or 0),
            "partial_unexpected_list": res.get("partial_unexpected_list", [])[:5],
            "_unexpected_rows": unexpected,
        })
    return {"suite": suite.name, "success": bool(validation.success), "rows": frame.height,
            "evaluated_expectations": len(results), "results": results}
