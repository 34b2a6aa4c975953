"""Benchmark: the steps stage (split + tag + dependency order) against spaCy's sentencizer alone.

Rows: GSM8K train, AQuA-RAT and StrategyQA standardised by the factory (so steps look as the
stage sees them), replicated to at least --rows rows. Both sides run on the same step texts:

- reference: ``spacy.blank("en")`` + ``sentencizer`` over every step text with ``nlp.pipe`` —
  the cheapest spaCy splitting there is, with no rules, no tags and no dependencies;
- ours: ``factory.steps.stage.structure`` with ``order: dependency`` — splitting (spaCy only for
  texts that can split, plus the boundary rules), the tag table and dependency ordering, on
  --workers processes for the ordering.

Prints rows/s for both and the ratio. Target: ≥ 2,000 rows/s for ours on 2 cores.

    OMP_NUM_THREADS=1 python bench/steps.py [--data ../shared/data] [--rows 100000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import polars as pl
import yaml

from factory.pipeline import _read_source
from factory.quarantine import Quarantine
from factory.recipe import load_recipe
from factory.recipe.model import StepOptions
from factory.steps.stage import structure

REPO = Path(__file__).resolve().parent.parent


class _Quiet:
    def start(self, task, total=None): ...
    def advance(self, task, n=1): ...
    def finish(self, task): ...


def rows(data: Path, tmp: Path) -> pl.DataFrame:
    recipe = {
        "name": "steps-bench",
        "sources": [
            {"name": "gsm8k", "kind": "qa", "path": str(data / "gsm8k/train.jsonl"), "fields": {"question": "question", "answer": "answer"},
             "trace_format": "gsm8k", "trace_options": {"calculator": "action"}, "domain": "math"},
            {"name": "aqua", "kind": "qa", "path": str(data / "aqua_rat/dev.json"),
             "fields": {"question": "question", "trace": "rationale", "options": "options", "answer": "correct"},
             "trace_format": "aqua", "domain": "math"},
            {"name": "strategyqa", "kind": "qa", "path": str(data / "strategyqa/train.json"), "id_field": "qid",
             "fields": {"question": "question", "answer": "answer", "subquestions": "decomposition", "facts": "facts"},
             "trace_format": "strategyqa", "domain": "commonsense"},
        ],
    }
    path = tmp / "steps-bench.yaml"
    path.write_text(yaml.safe_dump(recipe))
    loaded = load_recipe(path)
    frames = [pl.from_arrow(_read_source(loaded, s, None, Quarantine(), _Quiet())[0]) for s in loaded.recipe.sources]
    return pl.concat(frames).select("question", "answer", "steps", "subquestions", "flags")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tmp = Path("/tmp")
    base = rows(args.data, tmp)
    reps = -(-args.rows // base.height)
    df = pl.concat([base] * reps)
    texts = df.select(pl.col("steps").list.eval(pl.element().struct.field("text"))).explode("steps")["steps"].drop_nulls().to_list()
    print(f"{df.height:,} rows ({base.height:,} distinct: GSM8K train, AQuA dev, StrategyQA train), {len(texts):,} step texts")

    import spacy
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    t = time.perf_counter()
    n_sents = sum(len(list(doc.sents)) for doc in nlp.pipe(texts, batch_size=512))
    ref = time.perf_counter() - t
    print(f"reference, spaCy sentencizer alone: {ref:6.1f} s  {df.height / ref:8,.0f} rows/s  ({n_sents:,} sentences)")

    t = time.perf_counter()
    out, report = structure(df, StepOptions(order="dependency"), workers=args.workers)
    ours = time.perf_counter() - t
    print(f"ours, split + tag + order:          {ours:6.1f} s  {df.height / ours:8,.0f} rows/s  "
          f"({report['steps_out']:,} steps; split {report['seconds']['split']:.1f} s, tag {report['seconds']['tag']:.1f} s, "
          f"order {report['seconds']['order']:.1f} s)")
    print(f"ratio ours / reference: {ref / ours:.2f}×  (target: ≥ 2,000 rows/s)")


if __name__ == "__main__":
    main()
