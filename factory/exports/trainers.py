"""Files other trainers read: LLaMA-Factory's ``dataset_info.json`` (in ``exports/``, so
``dataset_dir: <out>/exports`` works), registering the SFT export in the sharegpt format and the
DPO export as a sharegpt *ranking* dataset. LLaMA-Factory's ranking format wants ``chosen`` and
``rejected`` as single messages rather than TRL's lists, so that view is written beside the DPO
export (``exports/llamafactory/``)."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from factory.exports.base import MESSAGES, ExportFile
from factory.output import sha256_file, write_bytes_atomic, write_parquet_atomic

TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
        "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
MESSAGE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])


def write_llamafactory(ctx: Any, recipe_name: str, files: list[ExportFile], dpo_format: str | None) -> dict[str, Any] | None:
    info: dict[str, Any] = {}
    written = []
    name = recipe_name.replace("-", "_")
    for f in files:
        suffix = "" if f.split == "train" else f"_{f.split}"
        rel = f.path.removeprefix("exports/")
        if f.kind == "sft":
            cols = pq.read_schema(ctx.out / f.path).names
            if "messages" not in cols:
                continue                   # prompt/completion: LLaMA-Factory reads the messages view
            info[f"{name}_sft{suffix}"] = {"file_name": rel, "formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": TAGS}
        elif f.kind == "dpo" and dpo_format == "messages":
            t = pq.read_table(ctx.out / f.path, columns=["prompt", "chosen", "rejected"])
            ranking = pa.table({
                "conversations": t["prompt"].cast(MESSAGES),
                "chosen": pa.array([c[0] if c else None for c in t["chosen"].to_pylist()], MESSAGE),
                "rejected": pa.array([r[0] if r else None for r in t["rejected"].to_pylist()], MESSAGE),
            })
            lf_rel = f"exports/llamafactory/dpo-{f.split}.parquet"
            write_parquet_atomic(ranking, ctx.out / lf_rel)
            written.append({"path": lf_rel, "rows": ranking.num_rows, "sha256": sha256_file(ctx.out / lf_rel)})
            info[f"{name}_dpo{suffix}"] = {"file_name": lf_rel.removeprefix("exports/"), "formatting": "sharegpt", "ranking": True,
                                           "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
                                           "tags": TAGS}
    if not info:
        return None
    write_bytes_atomic(ctx.out / "exports" / "dataset_info.json", (json.dumps(info, indent=2) + "\n").encode())
    return {"dataset_info": "exports/dataset_info.json", "datasets": sorted(info), "files": written}
