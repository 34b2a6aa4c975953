"""Derived rows: new training rows made from existing ones without a teacher.

- Sub-question pairs: every sub-question with a known answer (GSM8K Socratic lines) or a
  supporting fact that answers it (StrategyQA: the fact sharing the most content words, at least
  ``min_fact_overlap`` of the sub-question's) becomes a row of its own. A sub-question that refers
  back (``#1``) carries the referenced sub-questions and answers as context, so it stands alone.
- Contrast rows: where one question has several traces with different steps (two sources, or
  several teacher samples), a row that lays two of them side by side and states, step for step,
  what they share, where they part and whether they reach the same answer.

Each derived row keeps its parent's id in ``parent_id``, gets an id of its own (a hash of the
parent id and what was derived), and is tagged with a domain of its own by the classifier (its
parent's when no cue fires).
"""

from __future__ import annotations

import json
import re
from typing import Any

import polars as pl
import pyarrow as pa

from factory.domains import classify, cues_for, in_domain, scores
from factory.recipe.model import DeriveOptions
from factory.rows import conform, make_ids
from factory.stages import Stage, StageContext, StageResult, register_stage
from factory.steps.tags import rules_for, tag_expr

_WORD = re.compile(r"[a-z0-9]+")
_STOP = set("a an the of in on at to for by with from and or is are was were be been do does did what which who "
            "whom whose how many much would could can will should has have had it its this that these those as "
            "than then there their they them he she his her i you we our your not no yes if".split())
_REF = re.compile(r"#(\d+)")
OWN_DOMAIN_MIN = 3.0
_YES_NO_QUESTION = re.compile(r"(?i)^\s*(?:is|are|was|were|do|does|did|can|could|would|will|has|have|should)\b")


def _norm(text: str | None) -> str:
    """Case, spacing and punctuation folded: 'Same  answer.' == 'same answer'."""
    return " ".join(_WORD.findall((text or "").lower()))


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall((text or "").lower()) if w not in _STOP and len(w) > 1}


def best_fact(question: str, facts: list[str], min_overlap: float) -> str | None:
    """The fact sharing the largest share of the sub-question's content words (ties: first)."""
    want = content_words(re.sub(_REF, " ", question))
    if not want or not facts:
        return None
    scored = [(len(want & content_words(f)) / len(want), -k, f) for k, f in enumerate(facts)]
    share, _, fact = max(scored)
    return fact if share >= min_overlap else None


def subquestion_rows(row: dict[str, Any], opts: DeriveOptions) -> list[dict[str, Any]]:
    """The derived sub-question pairs of one canonical row (plain dicts)."""
    subqs = row.get("subquestions") or []
    facts = row.get("facts") or []
    answers: list[str | None] = []
    out = []
    for k, sq in enumerate(subqs):
        question = (sq.get("question") or "").strip()
        answer = (sq.get("answer") or "").strip() or best_fact(question, facts, opts.min_fact_overlap)
        final = (row.get("answer") or "").strip().lower()
        if k == len(subqs) - 1 and final in ("yes", "no") and _YES_NO_QUESTION.match(question):
            answer = final.capitalize()      # StrategyQA: the last step is the question's own yes/no
        answers.append(answer)
        if not question or not answer:
            continue
        context = []
        for r in sorted(set(sq.get("refs") or [])):
            if 0 <= r < k:
                context.append(f"{r + 1}. {subqs[r].get('question', '').strip()} — {answers[r] or 'unknown'}")
        text = _REF.sub(lambda m: f"(answer {m.group(1)})", question) if context else question
        if opts.domain_wording:
            text = in_domain(text, row["domain"])
        if context:
            text = "Known:\n" + "\n".join(context) + "\n\n" + text
        out.append({
            "key": f"{row['id']}/subquestion/{k}",
            "question": text,
            "answer": answer,
            "step": answer,
            "flag": "derived:subquestion",
            "meta": {"parent_subquestion": k},
        })
    return out


def contrast_rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    """One contrast row per question that has at least two different traces (the first two by id)."""
    qa = df.filter((pl.col("kind") == "qa") & (pl.col("steps").list.len() > 0) & pl.col("question").is_not_null())
    if qa.height < 2:
        return []
    qa = qa.with_columns(
        _q=pl.col("question").map_elements(_norm, return_dtype=pl.String),
        _trace=pl.col("steps").list.eval(pl.element().struct.field("text")).list.join("\n"),
    ).sort("id")
    out = []
    for _, group in qa.group_by("_q", maintain_order=True):
        distinct = group.unique("_trace", keep="first", maintain_order=True)
        if distinct.height < 2:
            continue
        a, b = distinct.row(0, named=True), distinct.row(1, named=True)
        out.append(_contrast(a, b))
    return out


def _contrast(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    sa = [s["text"] for s in a["steps"]]
    sb = [s["text"] for s in b["steps"]]
    norm_b = {_norm(t) for t in sb}
    shared = [t for t in sa if _norm(t) in norm_b]
    first_diff = next((k for k, (x, y) in enumerate(zip(sa, sb)) if _norm(x) != _norm(y)), min(len(sa), len(sb)))
    ans_a, ans_b = (a.get("answer") or "").strip(), (b.get("answer") or "").strip()
    same = _norm(ans_a) == _norm(ans_b)
    render = lambda steps: "\n".join(f"{k + 1}. {t}" for k, t in enumerate(steps))  # noqa: E731
    question = (f"{a['question'].strip()}\n\nSolution A:\n{render(sa)}\nAnswer: {ans_a}\n\n"
                f"Solution B:\n{render(sb)}\nAnswer: {ans_b}\n\n"
                "Compare the two reasoning paths: what do they share, where do they part, and do they agree?")
    steps = [
        f"Solution A takes {len(sa)} steps and solution B takes {len(sb)}; {len(shared)} step(s) are the same in both.",
        (f"They part at step {first_diff + 1}: A says \"{sa[first_diff]}\" where B says \"{sb[first_diff]}\"."
         if first_diff < min(len(sa), len(sb)) else "One path is the other with steps added at the end."),
        (f"Both reach the answer {ans_a}." if same else f"A answers {ans_a} but B answers {ans_b}: at most one is right."),
    ]
    return {
        "key": f"{a['id']}/contrast/{b['id']}",
        "question": question,
        "answer": f"{'Same answer' if same else 'Different answers'}; paths part at step {first_diff + 1}.",
        "steps": steps,
        "flag": "derived:contrast",
        "meta": {"contrasted": [a["id"], b["id"]]},
        "parent": a,
    }


def own_domains(rows: pl.DataFrame, cues) -> pl.Series:
    """A derived row's domain: the classifier's, when its cues clearly outweigh those of the
    parent's domain (a short sub-question carries little evidence); the parent's otherwise."""
    table = scores(rows, cues)
    own = classify(rows, cues)
    top = table.select(pl.max_horizontal(pl.all())).to_series()
    parent = rows["domain"]
    parent_score = pl.Series([table[d][i] if d in table.columns else 0.0 for i, d in enumerate(parent.to_list())])
    clear = (top >= OWN_DOMAIN_MIN) & (top >= 2 * parent_score) & (own != "general")
    return own.zip_with(clear, parent).rename("domain")


@register_stage("derive")
class Derive(Stage):
    """Adds derived rows (sub-question pairs, contrasts); every input row is kept as it was."""

    def __init__(self, ctx: StageContext, opts: DeriveOptions):
        super().__init__(ctx)
        self.opts = opts
        self.cues = cues_for(ctx.loaded.recipe.domains)
        self.rules = rules_for(ctx.loaded.recipe.steps.tags if ctx.loaded.recipe.steps else None)

    def run(self, table: pa.Table) -> StageResult:
        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        made: list[tuple[dict[str, Any], dict[str, Any]]] = []        # (parent row, derived fields)
        if self.opts.subquestion_pairs:
            with_subqs = df.filter(pl.col("subquestions").list.len() > 0)
            for row in with_subqs.iter_rows(named=True):
                made.extend((row, d) for d in subquestion_rows(row, self.opts))
        n_subq = len(made)
        if self.opts.contrast:
            made.extend((d.pop("parent"), d) for d in contrast_rows(df))
        report = {"subquestion_rows": n_subq, "contrast_rows": len(made) - n_subq}
        if not made:
            return StageResult(kept=table, report=report)
        new = self._rows(made)
        report["domains"] = dict(sorted(new.group_by("domain").len().iter_rows()))
        return StageResult(kept=pa.concat_tables([table, conform(new)]), report=report)

    def _rows(self, made: list[tuple[dict[str, Any], dict[str, Any]]]) -> pl.DataFrame:
        parents = [p for p, _ in made]
        derived = [d for _, d in made]
        steps_text = [d["steps"] if "steps" in d else [d["step"]] for d in derived]
        flat = pl.DataFrame({"row": [k for k, ts in enumerate(steps_text) for _ in ts],
                             "text": [t for ts in steps_text for t in ts]})
        flat = flat.with_columns(tag=tag_expr(pl.col("text"), pl.lit(False), self.rules))
        tags = flat.group_by("row", maintain_order=True).agg("tag")["tag"].to_list()
        step_lists = [[{"tag": tg, "text": t, "depends_on": [], "calls": []} for tg, t in zip(tgs, ts)]
                      for tgs, ts in zip(tags, steps_text)]
        new = pl.DataFrame({
            "id": make_ids("derived", [d["key"] for d in derived]),
            "domain": [p["domain"] for p in parents],
            "kind": ["qa"] * len(made),
            "split": [p["split"] for p in parents],
            "source": [p["source"] for p in parents],
            "question": [d["question"] for d in derived],
            "answer": [d["answer"] for d in derived],
            "steps": step_lists,
            "trace_format": ["derived"] * len(made),
            "flags": [[d["flag"]] for d in derived],
            "meta": [json.dumps(d["meta"], sort_keys=True) for d in derived],
            "parent_id": [p["id"] for p in parents],
            "recipe": [p["recipe"] for p in parents],
        })
        conformed = pl.from_arrow(conform(new))
        assert isinstance(conformed, pl.DataFrame)
        return conformed.with_columns(domain=own_domains(conformed, self.cues))
