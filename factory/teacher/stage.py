"""Teacher stage: Q-A rows without a trace (or all Q-A rows) get one from a teacher model.

    rows needing a trace ─► prompts (template + same-domain few-shot examples)
        ─► requests (one per sample; key = hash of what is sent) ─► runner (cache, limits, retries)
        ─► parse (sub-questions, tagged steps, answer) ─► answer check against gold ─► keep policy

``keep: first_correct`` samples in rounds: sample k+1 is only requested for questions that have
no correct sample yet, so nobody pays for samples that would be thrown away. The first kept
sample takes the row's id; other samples get ids of their own with ``parent_id`` set. Samples
that are not kept go to quarantine with their reason (wrong answer, request failed), so DPO
pairs can be built from them later and nothing vanishes.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa

from factory.answers import answers_match
from factory.errors import FactoryError
from factory.recipe.model import TeacherOptions
from factory.rows import ROW_SCHEMA, make_ids
from factory.stages import Stage, StageContext, StageResult, register_stage
from factory.steps.tags import fill_tags, rules_for
from factory.teacher.backends import BACKENDS, Backend, Request
from factory.teacher.cache import ResponseCache
from factory.teacher.local import LocalBackend
from factory.teacher.parse import Parsed, parse_reply
from factory.teacher.prompts import COMPLETION_STOPS, Prompter, examples_for, pick_examples
from factory.teacher.runner import Outcome, Tally, cost, price_of, request_key, run_requests

_USERINFO = re.compile(r"//[^/@]+@")


@dataclass
class Job:
    row: dict[str, Any]
    sample: int
    request: Request


def make_backend(opts: TeacherOptions, ctx: StageContext) -> Backend:
    try:
        cls = BACKENDS[opts.backend]
    except KeyError as e:
        raise FactoryError(f"teacher.backend: {e.args[0]}") from None
    if issubclass(cls, LocalBackend):
        backend: Backend = cls(opts, base_dir=ctx.loaded.base_dir)
        backend.prepare()
        return backend
    return cls(opts)


@register_stage("teacher")
class Teacher(Stage):
    def __init__(self, ctx: StageContext, opts: TeacherOptions):
        super().__init__(ctx)
        self.opts = opts
        self.progress: Any = None          # the pipeline's Progress, for the live request line
        self.tally: Tally | None = None
        self._parsed: dict[str, Parsed] = {}

    # ---- what to ask ----------------------------------------------------------------------

    def _targets(self, df: pl.DataFrame) -> pl.DataFrame:
        want = (pl.col("kind") == "qa") & pl.col("question").is_not_null() & (pl.col("question").str.strip_chars() != "")
        if self.opts.rows == "missing":
            want &= pl.col("steps").list.len().fill_null(0) == 0
        if self.opts.sources:
            want &= pl.col("source").struct.field("name").is_in(self.opts.sources)
        return df.with_row_index("_i").filter(want)

    def jobs(self, backend: Backend, targets: pl.DataFrame, examples: dict, samples: range) -> list[Job]:
        prompter = Prompter(self.opts, self.ctx.loaded.base_dir, backend.mode)
        stops = list(self.opts.stop) + (COMPLETION_STOPS if backend.mode == "completion" else [])
        jobs = []
        for row in targets.iter_rows(named=True):
            rendered = prompter.render(row, examples_for(row["id"], row["domain"], examples, self.opts.few_shot))
            for s in samples:
                params = {"temperature": self.opts.temperature, "top_p": self.opts.top_p, "max_tokens": self.opts.max_tokens,
                          "stop": stops or None, "seed": self.opts.seed + s}
                key = request_key(backend, rendered.messages, rendered.prompt, params)
                est = len(rendered.text) // 4 + self.opts.max_tokens
                jobs.append(Job(row, s, Request(key=key, row_id=row["id"], sample=s, messages=rendered.messages,
                                                prompt=rendered.prompt, params=params, est_tokens=est)))
        return jobs

    # ---- dry run ----------------------------------------------------------------------------

    def plan(self, table: pa.Table, show: int = 2) -> dict[str, Any]:
        """What a run would send and cost, without sending anything."""
        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        backend = make_backend(self.opts, self.ctx)
        targets = self._targets(df)
        jobs = self.jobs(backend, targets, pick_examples(df, self.opts.few_shot, self.tags()), range(self.opts.samples))
        cache = ResponseCache(self.opts.cache)
        cached = cache.get_many([j.request.key for j in jobs])
        cache.close()
        todo = [j for j in jobs if j.request.key not in cached]
        prices = price_of(self.opts, backend.model)
        est_in = sum(j.request.est_tokens - self.opts.max_tokens for j in todo)
        est_out = len(todo) * self.opts.max_tokens
        return {
            "backend": self.opts.backend, "model": backend.model, "endpoint": _USERINFO.sub("//", backend.endpoint),
            "rows": targets.height, "requests": len(jobs), "cached": len(jobs) - len(todo), "to_send": len(todo),
            "input_tokens": est_in, "output_tokens_max": est_out,
            "cost_usd_max": None if prices is None else round((est_in * prices.input_per_mtok + est_out * prices.output_per_mtok) / 1e6, 4),
            "prompts": [{"row": j.row["id"], "sample": j.sample, "messages": j.request.messages, "prompt": j.request.prompt}
                        for j in jobs[:show]],
        }

    # ---- run --------------------------------------------------------------------------------

    def run(self, table: pa.Table) -> StageResult:
        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        targets = self._targets(df)
        if targets.height == 0:
            return StageResult(kept=table, report={"rows": 0, "requests": 0})
        backend = make_backend(self.opts, self.ctx)
        examples = pick_examples(df, self.opts.few_shot, self.tags())
        rounds = [range(s, s + 1) for s in range(self.opts.samples)] if self.opts.keep == "first_correct" else [range(self.opts.samples)]

        async def sample_in_rounds(cache: ResponseCache) -> tuple[list[Job], dict[str, Outcome]]:
            jobs: list[Job] = []
            outcomes: dict[str, Outcome] = {}
            pending = targets
            for samples in rounds:
                new = self.jobs(backend, pending, examples, samples)
                jobs += new
                outcomes.update(await self._send(backend, [j.request for j in new], cache))
                if self.opts.keep == "first_correct":    # the next round only for questions still without a correct sample
                    solved = [j.row["id"] for j in new if self._correct(j, outcomes.get(j.request.key)) is not False]
                    pending = pending.filter(~pl.col("id").is_in(solved))
                    if pending.height == 0:
                        break
            return jobs, outcomes

        jobs, outcomes = self._with_backend(backend, sample_in_rounds)
        return self._assemble(df, targets, jobs, outcomes, backend)

    def send(self, backend: Backend, requests: list[Request]) -> dict[str, Outcome]:
        """One batch of requests, backend started and stopped around it (the dpo student builder)."""
        return self._with_backend(backend, lambda cache: self._send(backend, requests, cache))

    def _with_backend(self, backend: Backend, work):
        """Start the backend (the local one launches its server) and open the cache once, run
        ``work(cache)`` on one event loop, then close both."""
        cache = ResponseCache(self.opts.cache)

        async def go():
            await backend.start()
            try:
                return await work(cache)
            finally:
                await backend.close()

        try:
            return asyncio.run(go())
        finally:
            cache.close()

    async def _send(self, backend: Backend, requests: list[Request], cache: ResponseCache) -> dict[str, Outcome]:
        if self.progress is not None:
            self.progress.start("teacher requests", total=len({r.key for r in requests}))
        shown = [0]

        def on_done(t: Tally) -> None:
            if self.progress is not None:
                self.progress.advance("teacher requests", t.done - shown[0])
                shown[0] = t.done
                self.progress.note("teacher requests", t.line())

        try:
            outcomes, tally = await run_requests(backend, requests, cache, self.opts, on_done)
        finally:
            if self.progress is not None:
                self.progress.finish("teacher requests")
        self.tally = _merge(self.tally, tally)
        return outcomes

    def tags(self) -> dict | None:
        steps = self.ctx.loaded.recipe.steps
        return steps.tags if steps else None

    def _parse(self, key: str, text: str) -> Parsed:
        """Each reply parsed once: the first_correct rounds and the assembly both need it."""
        if key not in self._parsed:
            self._parsed[key] = parse_reply(text)
        return self._parsed[key]

    def _correct(self, job: Job, outcome: Outcome | None) -> bool | None:
        if outcome is None or outcome.reply is None:
            return False
        return answers_match(self._parse(job.request.key, outcome.reply.text).answer, job.row.get("gold_answer"), job.row.get("options"))

    def _assemble(self, df: pl.DataFrame, targets: pl.DataFrame, jobs: list[Job], outcomes: dict[str, Outcome],
                  backend: Backend) -> StageResult:
        prices = price_of(self.opts, backend.model)
        by_row: dict[str, list[Job]] = {}
        for j in jobs:
            by_row.setdefault(j.row["id"], []).append(j)
        replaced: list[dict] = []       # the row itself, now with the teacher's trace (keeps its position)
        extra: list[dict] = []          # further kept samples, appended
        rejected: list[dict] = []
        counts = {"correct": 0, "incorrect": 0, "unchecked": 0, "truncated": 0, "no_answer": 0, "failed_requests": 0,
                  "input_tokens": 0, "output_tokens": 0}
        total_cost: float | None = 0.0 if prices is not None else None
        for row_id, row_jobs in by_row.items():
            made: list[tuple[dict, bool, str | None]] = []        # (row, kept?, reason)
            for j in sorted(row_jobs, key=lambda j: j.sample):
                outcome = outcomes.get(j.request.key)
                if outcome is None or outcome.reply is None:
                    counts["failed_requests"] += 1
                    made.append((dict(j.row), False, outcome.error if outcome else "teacher request not sent"))
                    continue
                row, correct = self._row(j, outcome, backend, prices)
                counts["input_tokens"] += outcome.reply.input_tokens
                counts["output_tokens"] += outcome.reply.output_tokens
                if total_cost is not None:
                    total_cost += cost(prices, outcome.reply) or 0.0
                counts["correct" if correct else "unchecked" if correct is None else "incorrect"] += 1
                counts["truncated"] += "truncated" in row["flags"]
                counts["no_answer"] += "no_answer" in row["flags"]
                keep, reason = self._keep(correct, row, any(k for _, k, _ in made))
                made.append((row, keep, reason))
            first = next((i for i, (_, k, _) in enumerate(made) if k), 0)
            for i, (row, keep, reason) in enumerate(made):
                if i != first:
                    row["id"] = make_ids("teacher", [f"{row_id}#{row['teacher']['sample'] if row.get('teacher') else i}"])[0]
                    row["parent_id"] = row_id
                if keep:
                    (replaced if i == first else extra).append(row)
                else:
                    rejected.append(dict(row, reason=reason))
        out = self._table(df, targets, replaced, extra)
        rej = pl.from_arrow(_rows_table([{k: v for k, v in r.items() if k != "reason"} for r in rejected]))
        assert isinstance(rej, pl.DataFrame)
        if rejected:
            rej = rej.with_columns(reason=pl.Series([r["reason"] for r in rejected], dtype=pl.String))
        report = {
            "backend": self.opts.backend, "model": backend.model, "endpoint": _USERINFO.sub("//", backend.endpoint),
            "rows": targets.height, "requests": len({j.request.key for j in jobs}), "samples": self.opts.samples, "keep": self.opts.keep,
            "kept": len(replaced) + len(extra), "quarantined": len(rejected), **counts,
            "cost_usd": None if total_cost is None else round(total_cost, 6),
        }
        if self.tally is not None:
            report["this_run"] = self.tally.to_json()
        return StageResult(kept=out, rejected=rej if rejected else pl.DataFrame(), report=report)

    def _keep(self, correct: bool | None, row: dict, have_one: bool) -> tuple[bool, str | None]:
        if self.opts.keep == "all" or correct is None:
            return True, None
        if correct and (self.opts.keep == "all_correct" or not have_one):
            return True, None
        got = row.get("answer")
        return False, (f"teacher answer {got!r} does not match the gold answer {row.get('gold_answer')!r}" if got is not None
                       else "teacher reply has no final answer" + (" (truncated at max_tokens)" if "truncated" in row["flags"] else ""))

    def _row(self, job: Job, outcome: Outcome, backend: Backend, prices) -> tuple[dict, bool | None]:
        reply = outcome.reply
        assert reply is not None
        parsed = self._parse(job.request.key, reply.text)
        row = dict(job.row)
        gold = row.get("gold_answer")
        correct = answers_match(parsed.answer, gold, row.get("options"))
        flags = list(row.get("flags") or []) + parsed.flags
        if reply.finish_reason == "length":
            flags.append("truncated")
        if correct is False:
            flags.append("answer_incorrect")
        row.update(
            steps=[{"tag": s["tag"], "text": s["text"], "depends_on": [], "calls": []} for s in parsed.steps],
            subquestions=parsed.subquestions, answer=parsed.answer, answer_correct=correct, trace_format="teacher",
            flags=flags,
            teacher={"provider": backend.provider, "model": backend.model, "prompt_sha": job.request.key[:16],
                     "input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens, "cost_usd": cost(prices, reply),
                     "sample": job.sample, "finish_reason": reply.finish_reason, "request_key": job.request.key,
                     "response": reply.text, "reasoning": reply.reasoning or parsed.reasoning},
        )
        return row, correct

    def _table(self, df: pl.DataFrame, targets: pl.DataFrame, replaced: list[dict], extra: list[dict]) -> pa.Table:
        rules = rules_for(self.tags())
        new = pl.from_arrow(_rows_table(replaced))
        assert isinstance(new, pl.DataFrame)
        index = dict(zip(targets["id"].to_list(), targets["_i"].to_list()))
        new = new.with_columns(pl.Series("_i", [index[r["id"]] for r in replaced], dtype=pl.UInt32),
                               steps=fill_tags(pl.col("steps"), rules))
        rest = df.with_row_index("_i").filter(~pl.col("id").is_in(targets["id"].implode()))
        merged = pl.concat([rest, new.select(rest.columns)]).sort("_i").drop("_i")
        if extra:
            more = pl.from_arrow(_rows_table(extra))
            assert isinstance(more, pl.DataFrame)
            merged = pl.concat([merged, more.with_columns(steps=fill_tags(pl.col("steps"), rules)).select(merged.columns)])
        return merged.to_arrow().cast(ROW_SCHEMA)


def _rows_table(rows: list[dict]) -> pa.Table:
    cols = {name: [r.get(name) for r in rows] for name in ROW_SCHEMA.names}
    return pa.Table.from_pydict(cols, schema=ROW_SCHEMA)


def _merge(a: Tally | None, b: Tally) -> Tally:
    if a is None:
        return b
    for k in ("requests", "done", "cache_hits", "sent", "retries", "rate_limited", "failed", "input_tokens", "output_tokens",
              "cost_usd", "concurrency_cuts"):
        setattr(a, k, getattr(a, k) + getattr(b, k))
    return a


def render_plan(plan: dict[str, Any]) -> str:
    return json.dumps(plan, indent=2, ensure_ascii=False)
