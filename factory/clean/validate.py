"""Validation with Great Expectations (1.x, ephemeral context) before shards are final.

One expectation suite per row kind, kept as JSON (default ``schemas/expectations/<kind>.json``,
``${domains}`` and ``${max_chars}`` filled from the recipe). Nested checks run on derived
per-row columns (``step_count``, ``step_tags_ok``, ``chosen_differs``, …) so every expectation
is a plain column expectation. Rows that fail go to quarantine naming the first expectation they
failed; the validation result is written beside the shards as ``validation/<kind>.json``.

Great Expectations takes seconds to import: the pipeline starts a worker process that imports it
while the run reads its sources (``factory/clean/gx_worker.py``), and the stage hands it the
derived columns as Arrow IPC. Without a worker (the stage used on its own) it runs in-process.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from factory.domains import possible_domains
from factory.errors import InputError
from factory.recipe.model import ValidateOptions
from factory.rows import KINDS, ROLES, STEP_TAGS
from factory.stages import Stage, StageContext, StageResult, register_stage

SUITES = Path(__file__).resolve().parent.parent.parent / "schemas" / "expectations"


class Worker:
    """The Great Expectations worker process, started early, used by the validate stage."""

    def __init__(self) -> None:
        env = {**os.environ, "GX_ANALYTICS_ENABLED": "False", "PYTHONPATH": os.pathsep.join(sys.path)}
        self.proc = subprocess.Popen([sys.executable, "-m", "factory.clean.gx_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.lock = threading.Lock()

    def validate(self, kind: str, frame: pl.DataFrame, suite_doc: dict[str, Any]) -> dict[str, Any]:
        sink = io.BytesIO()
        table = frame.to_arrow()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        data = sink.getvalue()
        with self.lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            try:
                self.proc.stdin.write((json.dumps({"kind": kind, "suite": suite_doc, "nbytes": len(data)}) + "\n").encode())
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
                line = self.proc.stdout.readline()
            except BrokenPipeError:
                line = b""
        if not line:
            err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
            raise RuntimeError(f"the Great Expectations worker exited: {err}")
        result = json.loads(line)
        if "error" in result:
            raise InputError(f"validation of {kind} rows failed: {result['error']}")
        return result

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write(b'{"quit": true}\n')
                self.proc.stdin.flush()
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


_WORKER: Worker | None = None


def prefetch_great_expectations() -> None:
    """Start the worker (and so the import of Great Expectations) now, for a later stage."""
    global _WORKER
    if _WORKER is None or _WORKER.proc.poll() is not None:
        _WORKER = Worker()


def stop_worker() -> None:
    global _WORKER
    if _WORKER is not None:
        _WORKER.close()
        _WORKER = None


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
        cot_steps_ok=(pl.col("trace_format") == "none") | (pl.col("steps").list.len() > 0),   # derived rows carry steps too
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
        self.params = {"domains": possible_domains(recipe), "max_chars": opts.max_chars}

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
            local = None
            for kind in [k for k in KINDS if k in set(frame["_suite"].to_list())]:
                sub = frame.filter(pl.col("_suite") == kind).drop("_suite")
                suite_doc = load_suite(self.suite_path(kind), self.params)
                if _WORKER is not None and _WORKER.proc.poll() is None:
                    result = _WORKER.validate(kind, sub, suite_doc)
                else:
                    from factory.clean.gx_worker import context, validate_frame

                    local = local or context()
                    pdf = sub.to_pandas().set_index("_row")
                    pdf.index.name = None
                    result = validate_frame(*local, kind, pdf, suite_doc)
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
