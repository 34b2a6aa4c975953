"""DPO export: TRL's ``prompt`` / ``chosen`` / ``rejected``, from three pair builders.

- ``preference``: preference rows (hh-rlhf): the shared prompt turns, the two continuations.
- ``samples``: teacher samples of one question, a correct one against an incorrect one (the
  incorrect ones are kept in the shards under ``keep: all`` or in ``quarantine/teacher.parquet``
  under the other policies; both are read).
- ``student``: the user's "learn from your own draft" pairs. A student (any teacher backend)
  drafts an answer; prompt = question + " Student draft: " + draft, chosen = the teacher's final,
  rejected = the draft — flipped when the student is right and the teacher wrong. When neither is
  right there is nothing to prefer: the row goes to quarantine.

Noisy-pair filter: every pair gets a disagreement score in [0, 1] —
``0.5 · label_noise + 0.5 · overlap`` where label_noise is 0 when the answer check says the chosen
side is right and the rejected side wrong, 0.5 when it cannot tell (both right, no gold answer, a
human label), and overlap is the word-set Jaccard of the two sides (near-identical sides teach
little and their label is the likeliest to be arbitrary). Per builder, the ``noisy_filter`` share
with the highest scores is dropped (ties: by pair id), each dropped pair quarantined with its score.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import polars as pl
import pyarrow as pa

from factory.answers import answers_match
from factory.exports.base import MESSAGES, Exporter, assistant_template, by_split, register_export, render_assistant, user_turn
from factory.recipe.model import DPOExport
from factory.rows import ROW_SCHEMA, make_ids
from factory.stages import StageContext
from factory.teacher.parse import parse_reply

_WORD = re.compile(r"\w+")
STUDENT_GLUE = " Student draft: "


def disagreement(chosen: str, rejected: str, label_noise: float) -> float:
    a, b = set(_WORD.findall(chosen.lower())), set(_WORD.findall(rejected.lower()))
    overlap = len(a & b) / len(a | b) if a | b else 1.0
    return round(0.5 * label_noise + 0.5 * overlap, 4)


def _text(messages: list[dict]) -> str:
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


@register_export("dpo")
class DPO(Exporter):
    opts: DPOExport

    def write(self, table: pa.Table) -> dict[str, Any]:
        rows = table.to_pylist()
        self.template = assistant_template(None, self.ctx.loaded.base_dir)
        self.rejected_rows: list[dict] = []
        kept: list[dict] = []
        report: dict[str, Any] = {"format": self.opts.format, "noisy_filter": self.opts.noisy_filter, "builders": {}}
        for builder in self.opts.builders:
            pairs = getattr(self, f"_{builder}")(rows)
            keep, dropped = self._filter(builder, pairs)
            kept += keep
            report["builders"][builder] = {"pairs": len(pairs), "kept": len(keep), "dropped_noisy": dropped}
        report["skipped"] = len(self.rejected_rows)
        self._quarantine()
        counts: dict[str, int] = {}
        for split, part in by_split(kept).items():
            self.save(split, self._table(part))
            counts[split] = len(part)
        report["rows"] = counts
        return report

    # ---- builders ------------------------------------------------------------------------------

    def _preference(self, rows: list[dict]) -> list[dict]:
        pairs = []
        for r in rows:
            if r["kind"] != "preference" or not r.get("chosen") or not r.get("rejected"):
                continue
            prompt = [{"role": m["role"], "content": m["content"]} for m in r.get("messages") or []]
            chosen = [{"role": m["role"], "content": m["content"]} for m in r["chosen"]]
            rejected = [{"role": m["role"], "content": m["content"]} for m in r["rejected"]]
            pairs.append(self._pair("preference", r, prompt, chosen, rejected, 0.5, r["id"]))
        return pairs

    def _samples(self, rows: list[dict]) -> list[dict]:
        candidates = [r for r in rows if r.get("trace_format") == "teacher" and r.get("answer_correct") is not None]
        candidates += self._quarantined_samples()
        groups: dict[str, list[dict]] = {}
        for r in candidates:
            groups.setdefault(r.get("parent_id") or r["id"], []).append(r)
        pairs = []
        for root, group in groups.items():
            group.sort(key=lambda r: (r["teacher"] or {}).get("sample") or 0)
            right = [r for r in group if r["answer_correct"]]
            wrong = [r for r in group if r["answer_correct"] is False]
            if not right or not wrong:
                continue
            prompt = [{"role": "user", "content": user_turn(group[0])}]
            for k in range(min(max(len(right), len(wrong)), self.opts.max_pairs_per_question)):
                good, bad = right[k % len(right)], wrong[k % len(wrong)]
                pairs.append(self._pair("samples", good, prompt, self._assistant(good), self._assistant(bad), 0.0, f"{root}:{k}"))
        return pairs

    def _student(self, rows: list[dict]) -> list[dict]:
        from factory.teacher.stage import Teacher, make_backend
        from factory.teacher.prompts import pick_examples

        assert self.opts.student is not None
        targets = [r for r in rows if r["kind"] == "qa" and r.get("gold_answer") and (r.get("steps") or r.get("answer"))
                   and (not self.opts.student_sources or r["source"]["name"] in self.opts.student_sources)]
        if not targets:
            return []
        stage_ctx = StageContext.of(self.ctx.loaded)
        student = Teacher(stage_ctx, self.opts.student)
        student.progress = self.ctx.progress
        backend = make_backend(self.opts.student, stage_ctx)
        frame = pl.from_arrow(pa.Table.from_pylist(targets, schema=ROW_SCHEMA))
        assert isinstance(frame, pl.DataFrame)
        examples = pick_examples(frame, self.opts.student.few_shot, student.tags())
        jobs = student.jobs(backend, frame.with_row_index("_i"), examples, range(1))
        outcomes = student.send(backend, [j.request for j in jobs])
        pairs = []
        for job in jobs:
            row = job.row
            outcome = outcomes.get(job.request.key)
            if outcome is None or outcome.reply is None:
                self.rejected_rows.append(dict(row, reason=(outcome.error if outcome else "student request not sent")))
                continue
            draft = outcome.reply.text.strip()
            gold = row["gold_answer"]
            student_right = answers_match(parse_reply(draft).answer, gold, row.get("options")) is True
            teacher_right = row.get("answer_correct")
            if teacher_right is None:
                teacher_right = answers_match(row.get("answer"), gold, row.get("options")) is True
            if not student_right and not teacher_right:
                self.rejected_rows.append(dict(row, reason="student pair: neither the teacher's answer nor the student's draft "
                                                           f"matches the gold answer {gold!r}"))
                continue
            prompt = [{"role": "user", "content": user_turn(row) + STUDENT_GLUE + draft}]
            final = self._assistant(row)
            draft_turn = [{"role": "assistant", "content": draft}]
            chosen, rejected = (draft_turn, final) if student_right and not teacher_right else (final, draft_turn)
            noise = 0.5 if student_right and teacher_right else 0.0
            pair = self._pair("student", row, prompt, chosen, rejected, noise, row["id"])
            pair["flipped"] = chosen is draft_turn
            pairs.append(pair)
        return pairs

    # ---- shared ----------------------------------------------------------------------------------

    def _assistant(self, row: dict) -> list[dict]:
        return [{"role": "assistant", "content": render_assistant(self.template, row)}]

    def _pair(self, builder: str, row: dict, prompt: list[dict], chosen: list[dict], rejected: list[dict],
              label_noise: float, key: str) -> dict:
        return {"id": make_ids("dpo", [f"{builder}:{key}"])[0], "builder": builder, "domain": row["domain"],
                "split": row["split"], "source": row["source"], "row_id": row["id"], "prompt": prompt,
                "chosen": chosen, "rejected": rejected, "flipped": False,
                "score": disagreement(_text(chosen), _text(rejected), label_noise)}

    def _filter(self, builder: str, pairs: list[dict]) -> tuple[list[dict], int]:
        n_drop = math.floor(self.opts.noisy_filter * len(pairs) + 0.5)
        if n_drop == 0:
            return pairs, 0
        ranked = sorted(pairs, key=lambda p: (-p["score"], p["id"]))
        dropped = {p["id"] for p in ranked[:n_drop]}
        for p in ranked[:n_drop]:
            self.rejected_rows.append({**p, "reason": f"noisy {builder} pair: disagreement score {p['score']:.3f}, among the "
                                                      f"{self.opts.noisy_filter:.0%} highest of {len(pairs)} pairs"})
        return [p for p in pairs if p["id"] not in dropped], n_drop

    def _quarantined_samples(self) -> list[dict]:
        if "teacher" not in self.ctx.quarantine.stages():
            return []
        q = self.ctx.quarantine.table("teacher").to_pylist()
        out = []
        for r in q:
            try:
                row = json.loads(r["raw"])
            except (TypeError, ValueError):
                continue
            if row.get("answer_correct") is False and row.get("teacher"):
                out.append(row)
        return out

    def _quarantine(self) -> None:
        if not self.rejected_rows:
            return
        def raw(r: dict) -> str:
            keep = {k: r[k] for k in ("prompt", "chosen", "rejected", "score", "builder", "row_id") if k in r}
            return json.dumps(keep or {k: r.get(k) for k in ("id", "question", "answer", "gold_answer")}, ensure_ascii=False)
        self.ctx.quarantine.add_frame("export_dpo", pl.DataFrame({
            "reason": [r["reason"] for r in self.rejected_rows],
            "source_name": [r["source"]["name"] for r in self.rejected_rows],
            "source_path": [r["source"]["path"] for r in self.rejected_rows],
            "source_row": [r["source"]["row"] for r in self.rejected_rows],
            "source_line": [r["source"]["line"] for r in self.rejected_rows],
            "id": [r["id"] for r in self.rejected_rows],
            "raw": [raw(r) for r in self.rejected_rows],
            "detail": [json.dumps({"score": r["score"]}) if "score" in r else None for r in self.rejected_rows],
        }, schema_overrides={"source_row": pl.Int64, "source_line": pl.Int64}))

    def _table(self, pairs: list[dict]) -> pa.Table:
        if self.opts.format == "messages":
            cols = {k: [p[k] for p in pairs] for k in ("prompt", "chosen", "rejected")}
            types = {k: MESSAGES for k in cols}
        else:
            cols = {"prompt": [_text(p["prompt"]) for p in pairs], "chosen": [_text(p["chosen"]) for p in pairs],
                    "rejected": [_text(p["rejected"]) for p in pairs]}
            types = {k: pa.string() for k in cols}
        meta = {"id": pa.string(), "domain": pa.string(), "builder": pa.string(), "row_id": pa.string(),
                "flipped": pa.bool_(), "score": pa.float64()}
        for k in meta:
            cols[k] = [p[k] for p in pairs]
        schema = pa.schema([pa.field(k, t) for k, t in {**types, **meta}.items()])
        return pa.Table.from_pydict(cols, schema=schema)
