"""Benchmark: ``domain: auto`` against the true source domains.

Every source of a recipe is read with its domain replaced by ``auto``; the classifier's domain is
compared with the domain the recipe gave the source. Run on the quickstart recipe (the acceptance
figure, ≥ 90 %) and on held-out files of the same datasets (bench/domains_holdout.yaml, which
needs ../shared/data) to see how far the cues carry beyond the rows they were written against.

    python bench/domains.py [recipes/quickstart.yaml bench/domains_holdout.yaml]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import polars as pl

from factory.domains import classify, cues_for
from factory.pipeline import _read_source
from factory.quarantine import Quarantine
from factory.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent


def agreement(recipe_path: Path) -> None:
    loaded = load_recipe(recipe_path)
    frames = []
    for spec in loaded.recipe.sources:
        if not (loaded.base_dir / spec.path).exists():
            print(f"  {spec.name}: {spec.path} not found, skipped")
            continue
        table, _ = _read_source(loaded, spec, None, Quarantine(), _Quiet())
        frames.append(pl.from_arrow(table).with_columns(true_domain=pl.lit(spec.domain)))
    df = pl.concat(frames)
    t = time.perf_counter()
    df = df.with_columns(auto=classify(df, cues_for(loaded.recipe.domains)))
    seconds = time.perf_counter() - t
    hit = df["auto"] == df["true_domain"]
    print(f"{recipe_path}: {df.height:,} rows, domain: auto agrees with the source's domain on "
          f"{100 * hit.mean():.1f} % ({df.height / seconds:,.0f} rows/s)")
    per = (df.with_columns(hit=hit).group_by(pl.col("source").struct.field("name").alias("source"), "true_domain")
           .agg(rows=pl.len(), agree=pl.col("hit").mean() * 100,
                most_confused_with=pl.col("auto").filter(~pl.col("hit")).mode().first())
           .sort("source"))
    with pl.Config(tbl_rows=20, tbl_hide_dataframe_shape=True, float_precision=1):
        print(per)


class _Quiet:
    def start(self, task, total=None): ...
    def advance(self, task, n=1): ...
    def finish(self, task): ...


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or [REPO / "recipes/quickstart.yaml", REPO / "bench/domains_holdout.yaml"]
    for p in paths:
        agreement(p)
