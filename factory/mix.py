"""Domain balance (``mix:``): keep a deterministic, seeded sample of each domain so that the
output has the proportions the recipe asks for.

- ``weights``: each listed domain gets its share of the output; the total is the largest the
  available rows allow (or ``total``, when smaller). Unlisted domains are left out.
- ``temperature`` T: domain d's share is n_d^T / Σ n^T (T = 1 keeps the natural mix, T → 0
  makes it uniform), over every domain present.
- ``caps``: at most this many rows of a domain (after weights/temperature).

Which rows stay is decided by a seeded hash of the row id, not by position, so the choice does
not depend on the order rows arrived in and a re-run keeps the same rows. Rows left out go to
quarantine with the reason; the report has the rows per domain before and after.
"""

from __future__ import annotations

import math

import polars as pl
import pyarrow as pa

from factory.recipe.model import MixOptions
from factory.stages import Stage, StageContext, StageResult, register_stage, rejected_rows


def targets(counts: dict[str, int], opts: MixOptions) -> dict[str, int]:
    """Rows to keep per domain."""
    if opts.weights:
        # a weighted domain with no rows cannot be filled: the others share the output (the
        # report lists it under missing_domains)
        weights = {d: w for d, w in opts.weights.items() if w > 0 and counts.get(d, 0) > 0}
    elif opts.temperature is not None:
        weights = {d: n ** opts.temperature for d, n in counts.items() if n}
    else:
        weights = {}
    if weights:
        total_w = sum(weights.values())
        shares = {d: w / total_w for d, w in weights.items()}
        # the largest total every domain can fill at its share (a missing domain: zero rows)
        feasible = min((counts.get(d, 0) / s for d, s in shares.items()), default=0)
        total = math.floor(feasible + 1e-9)
        if opts.total is not None:
            total = min(total, opts.total)
        want = _apportion(total, shares)
        want = {d: min(k, counts.get(d, 0)) for d, k in want.items()}
    else:
        want = dict(counts)
    for d, cap in opts.caps.items():
        if d in want:
            want[d] = min(want[d], cap)
    return {d: want.get(d, 0) for d in counts} | {d: k for d, k in want.items() if d not in counts}


def _apportion(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Largest-remainder rounding: the counts sum to ``total`` exactly."""
    exact = {d: total * s for d, s in shares.items()}
    out = {d: math.floor(x) for d, x in exact.items()}
    left = total - sum(out.values())
    for d in sorted(exact, key=lambda d: (-(exact[d] - out[d]), d))[:left]:
        out[d] += 1
    return out


def seeded_rank(ids: pl.Series, seed: int) -> pl.Series:
    """A pseudo-random, order-independent rank key per row id."""
    return ids.hash(seed=seed & 0xFFFFFFFFFFFFFFFF)


@register_stage("mix")
class Mix(Stage):
    def __init__(self, ctx: StageContext, opts: MixOptions):
        super().__init__(ctx)
        self.opts = opts

    def run(self, table: pa.Table) -> StageResult:
        df = pl.from_arrow(table.select(["id", "domain"]))
        assert isinstance(df, pl.DataFrame)
        counts = dict(df.group_by("domain").len().iter_rows())
        want = targets(counts, self.opts)
        ranked = df.with_columns(_key=seeded_rank(df["id"], self.opts.seed))
        ranked = ranked.with_columns(_rank=pl.col("_key").rank("ordinal").over("domain") - 1)
        keep_n = pl.col("domain").replace_strict(want, default=0, return_dtype=pl.Int64)
        ranked = ranked.with_columns(_keep=pl.col("_rank") < keep_n)
        keep = ranked["_keep"].to_numpy()
        kept = table.filter(pa.array(keep))
        after = {d: int(min(want.get(d, 0), n)) for d, n in counts.items()}
        total_after = sum(after.values())
        target = pl.col("domain").replace_strict(want, default=0, return_dtype=pl.Int64)
        unlisted = pl.lit(bool(self.opts.weights)) & ~pl.col("domain").is_in(list(self.opts.weights))
        reasons = ranked.filter(~pl.col("_keep")).select(
            pl.when(unlisted).then(pl.format("mix: domain '{}' is not in the mix weights", pl.col("domain")))
            .otherwise(pl.format("mix: domain '{}' over its target of {} rows (seeded sample, seed {})",
                                 pl.col("domain"), target, pl.lit(self.opts.seed))))
        rejected = rejected_rows(table, pa.array(~keep), reasons.to_series().to_list())
        report = {
            "strategy": "weights" if self.opts.weights else "temperature" if self.opts.temperature is not None else "caps",
            "seed": self.opts.seed,
            "before": dict(sorted(counts.items())),
            "after": dict(sorted(after.items())),
            "share_after": {d: round(k / total_after, 4) if total_after else 0.0 for d, k in sorted(after.items())},
        }
        if self.opts.weights:
            missing = sorted(d for d in self.opts.weights if d not in counts)
            if missing:
                report["missing_domains"] = missing
        return StageResult(kept=kept, rejected=rejected, report=report)
