"""SFT export: TRL's conversational format (``messages``), or prompt / completion turns.

Q-A rows become [system?] + user (question, options) + assistant (the template: by default
``<reasoning>{steps}</reasoning>\\n<answer>{answer}</answer>``); conversations keep all their
turns; preference rows (when asked for) become their prompt turns + the chosen continuation.
Rows whose answer was checked and found wrong are left out unless ``only_correct: false``.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from factory.exports.base import MESSAGES, Exporter, assistant_template, by_split, register_export, render_assistant, user_turn
from factory.recipe.model import SFTExport


@register_export("sft")
class SFT(Exporter):
    opts: SFTExport

    def write(self, table: pa.Table) -> dict[str, Any]:
        template = assistant_template(self.opts.template, self.ctx.loaded.base_dir)
        made: list[dict] = []
        skipped = {"no_trace": 0, "incorrect": 0, "kind": 0}
        for row in table.to_pylist():
            messages = self._messages(row, template, skipped)
            if messages is None:
                continue
            out = {"id": row["id"], "domain": row["domain"], "source": row["source"]["name"], "split": row["split"]}
            if self.opts.format == "messages":
                out["messages"] = messages
            else:
                out["prompt"], out["completion"] = messages[:-1], messages[-1:]
            made.append(out)
        cols = ["messages"] if self.opts.format == "messages" else ["prompt", "completion"]
        schema = pa.schema([pa.field(c, MESSAGES) for c in cols] + [pa.field(c, pa.string()) for c in ("id", "domain", "source")])
        counts = {}
        for split, rows in by_split(made).items():
            self.save(split, pa.Table.from_pylist(rows, schema=schema))
            counts[split] = len(rows)
        return {"format": self.opts.format, "rows": counts, "skipped": skipped}

    def _messages(self, row: dict, template, skipped: dict) -> list[dict] | None:
        kind = row["kind"]
        if kind not in self.opts.kinds:
            skipped["kind"] += 1
            return None
        if kind == "qa":
            if not row.get("steps") and not row.get("answer"):
                skipped["no_trace"] += 1
                return None
            if self.opts.only_correct and row.get("answer_correct") is False:
                skipped["incorrect"] += 1
                return None
            head = [{"role": "system", "content": self.opts.system}] if self.opts.system else []
            return head + [{"role": "user", "content": user_turn(row)},
                           {"role": "assistant", "content": render_assistant(template, row)}]
        turns = [{"role": m["role"], "content": m["content"]} for m in row.get("messages") or []]
        if kind == "preference":
            turns += [{"role": m["role"], "content": m["content"]} for m in row.get("chosen") or []]
        if not turns or turns[-1]["role"] != "assistant":
            skipped["no_trace"] += 1
            return None
        return turns
