"""Great Expectations, run in a worker process.

Importing Great Expectations costs seconds of CPU (it pulls in pandas, scipy.stats, marshmallow,
…). In a thread of the pipeline that import fights the pipeline for the GIL; in its own process
it uses whatever core the pipeline leaves idle. The pipeline starts this worker when a recipe
asks for validation, long before the stage runs, and talks to it over stdin/stdout:

    request:  one JSON line {"kind", "suite", "nbytes"} then nbytes of an Arrow IPC stream
    response: one JSON line, the validation result (or {"error": …})

``validate_frame`` is also what the stage calls in-process when no worker is running.
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


def context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return gx, ctx


def validate_frame(gx: Any, ctx: Any, kind: str, pdf: Any, suite_doc: dict[str, Any]) -> dict[str, Any]:
    """Run one suite on one kind's rows (a pandas frame indexed by row number); a compact,
    deterministic result with the failing row numbers of every expectation."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    source = ctx.data_sources.add_or_update_pandas(f"cot-{kind}")
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
        results.append({
            "name": (cfg.meta or {}).get("name") or cfg.type, "type": cfg.type, "column": cfg.kwargs.get("column"),
            "kwargs": {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}, "success": bool(r.success),
            "unexpected_count": int(res.get("unexpected_count") or 0),
            "partial_unexpected_list": [_plain(v) for v in (res.get("partial_unexpected_list") or [])[:5]],
            "_unexpected_rows": [int(i) for i in res.get("unexpected_index_list") or []],
        })
    return {"suite": suite.name, "success": bool(validation.success), "rows": len(pdf),
            "evaluated_expectations": len(results), "results": results}


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def frame_from_ipc(data: bytes):
    import pyarrow as pa

    table = pa.ipc.open_stream(io.BytesIO(data)).read_all()
    pdf = table.to_pandas().set_index("_row")
    pdf.index.name = None          # unnamed: Great Expectations then reports plain row numbers
    return pdf


def main() -> None:
    # Low priority: the import should use only CPU the pipeline leaves idle. When the pipeline
    # reaches validation it waits for this process, which then has the machine to itself.
    try:
        os.nice(15)
    except OSError:
        pass
    gx, ctx = context()
    stdin, stdout = sys.stdin.buffer, sys.stdout
    while True:
        line = stdin.readline()
        if not line:
            return
        request = json.loads(line)
        if request.get("quit"):
            return
        data = stdin.read(request["nbytes"])
        try:
            result = validate_frame(gx, ctx, request["kind"], frame_from_ipc(data), request["suite"])
        except Exception as e:  # reported to the pipeline, which raises it there
            result = {"error": f"{type(e).__name__}: {e}"}
        stdout.write(json.dumps(result, default=str) + "\n")
        stdout.flush()


if __name__ == "__main__":
    main()
