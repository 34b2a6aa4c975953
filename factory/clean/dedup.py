"""The dedup stage: exact duplicates (normalised text) and near-duplicates (MinHash + LSH +
verified Jaccard), merged into connected components; one row per component is kept.

Which row is kept is decided by a priority, not by chance: a verified answer first, then a row
with reasoning steps, more steps, the earlier source in the recipe, the earlier row, the smaller
id. Every removed row goes to quarantine naming the row kept in its place and their Jaccard.
Two rows whose numbers differ are never merged, whatever their Jaccard: a math question with
other numbers is another question.
"""

from __future__ import annotations

import json
import time

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from factory.clean.minhash import ShingleSets, UnionFind, lsh_candidates, signatures
from factory.clean.text import doc_keys, ngrams, normalize, number_keys, tokenize_batched
from factory.recipe.model import DedupOptions
from factory.stages import Stage, StageContext, StageResult, register_stage

_TEXT_OF = {
    "question": lambda: pl.col("question"),
    "answer": lambda: pl.col("answer"),
    "messages": lambda: pl.col("messages").list.eval(pl.element().struct.field("content")).list.join("\n"),
    "chosen": lambda: pl.col("chosen").list.eval(pl.element().struct.field("content")).list.join("\n"),
    "rejected": lambda: pl.col("rejected").list.eval(pl.element().struct.field("content")).list.join("\n"),
    "steps": lambda: pl.col("steps").list.eval(pl.element().struct.field("text")).list.join("\n"),
}


def row_texts(table: pa.Table, fields: list[str]) -> pa.Array:
    """The compared text of every row: the chosen fields joined by newlines."""
    df = pl.from_arrow(table.select(list(dict.fromkeys(f if f != "steps" else "steps" for f in fields))))
    assert isinstance(df, pl.DataFrame)
    expr = pl.concat_str([_TEXT_OF[f]().fill_null("") for f in fields], separator="\n")
    return df.select(expr.alias("t")).to_series().to_arrow().cast(pa.string())


@register_stage("dedup")
class Dedup(Stage):
    def __init__(self, ctx: StageContext, opts: DedupOptions, label: str | None = None, threads: int = 2):
        super().__init__(ctx, label)
        self.opts = opts
        self.threads = threads

    def run(self, table: pa.Table) -> StageResult:
        n = table.num_rows
        timings: dict[str, float] = {}
        clock = time.perf_counter()
        norm = normalize(row_texts(table, list(self.opts.fields)), self.opts.normalize)
        tok = tokenize_batched(norm)
        full, _ = doc_keys(tok)
        numbers = number_keys(tok)
        timings["normalize+tokenize"] = time.perf_counter() - clock
        uf = UnionFind(n)
        exact_edges = 0
        if self.opts.exact and n:
            order = np.argsort(full, kind="stable")
            same = np.flatnonzero(full[order][1:] == full[order][:-1])
            for k in same.tolist():
                exact_edges += uf.union(int(order[k]), int(order[k + 1]))
        stats = {"candidate_pairs": 0, "verified_pairs": 0, "below_threshold": 0, "numbers_differ": 0}
        sets: ShingleSets | None = None
        mh = self.opts.minhash
        if mh is not None and n > 1:
            t0 = time.perf_counter()
            grams, gdoc, _ = ngrams(tok, mh.ngram)
            counts = np.bincount(gdoc, minlength=n)
            sigs = signatures(grams, counts, mh.num_perm, mh.seed, threads=self.threads)
            timings["signatures"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            pairs = lsh_candidates(sigs, mh.bands, mh.rows)
            timings["lsh"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            sets = ShingleSets(grams, counts)
            stats["candidate_pairs"] = len(pairs)
            for i, j in pairs.tolist():
                if uf.find(i) == uf.find(j):
                    continue
                if numbers[i] != numbers[j]:
                    stats["numbers_differ"] += 1
                    continue
                stats["verified_pairs"] += 1
                if sets.jaccard(i, j) >= mh.threshold:
                    uf.union(i, j)
                else:
                    stats["below_threshold"] += 1
            timings["verify"] = time.perf_counter() - t0
        root = uf.roots()
        kept_idx, size = self._choose(table, root)
        keep_mask = kept_idx == np.arange(n)
        ids = table["id"].to_numpy(zero_copy_only=False)
        kept_of = kept_idx
        reasons, details = [], []
        exact = near = 0
        for i in np.flatnonzero(~keep_mask).tolist():
            k = int(kept_of[i])
            if full[i] == full[k]:
                exact += 1
                reasons.append(f"exact duplicate of {ids[k]}")
                details.append(json.dumps({"kept_id": ids[k], "jaccard": 1.0, "cluster_size": int(size[i])}))
            else:
                near += 1
                j = sets.jaccard(i, k) if sets is not None else 0.0
                reasons.append(f"near-duplicate of {ids[k]} (jaccard {j:.3f})")
                details.append(json.dumps({"kept_id": ids[k], "jaccard": round(j, 4), "cluster_size": int(size[i])}))
        cluster_id = pa.array(ids[kept_of], type=pa.string())
        table = table.set_column(table.schema.get_field_index("cluster_id"), "cluster_id", cluster_id)
        table = table.set_column(table.schema.get_field_index("cluster_size"), "cluster_size", pa.array(size, type=pa.int32()))
        table = table.set_column(table.schema.get_field_index("kept"), "kept", pa.array(keep_mask))
        drop = pa.array(~keep_mask)
        removed = table.filter(drop)
        removed = removed.set_column(removed.schema.get_field_index("kept"), "kept", pa.array(np.zeros(removed.num_rows, bool)))
        rejected = pl.from_arrow(removed)
        assert isinstance(rejected, pl.DataFrame)
        rejected = rejected.with_columns(reason=pl.Series(reasons, dtype=pl.String), detail=pl.Series(details, dtype=pl.String))
        timings["total"] = time.perf_counter() - clock
        report = {
            "fields": list(self.opts.fields), "exact": self.opts.exact, "rows_in": n,
            "exact_removed": exact, "near_removed": near,
            "clusters": int(np.sum(size[keep_mask] > 1)),
            "minhash": mh.model_dump() if mh else None, **stats,
            "seconds": {k: round(v, 3) for k, v in timings.items()},
        }
        return StageResult(kept=table.filter(pc.invert(drop)), rejected=rejected, report=report)

    def _choose(self, table: pa.Table, root: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For every row: the index of its component's kept row, and the component's size."""
        order = self.ctx.source_order
        df = pl.from_arrow(table.select(["id", "source", "steps", "answer_correct"]))
        assert isinstance(df, pl.DataFrame)
        ranked = df.with_row_index("_i").with_columns(
            _root=pl.Series(root),
            _verified=pl.col("answer_correct").fill_null(False),
            _steps=pl.col("steps").list.len(),
            _source=pl.col("source").struct.field("name").replace_strict(order, default=len(order), return_dtype=pl.Int64),
            _row=pl.col("source").struct.field("row"),
        ).sort(["_root", "_verified", "_steps", "_source", "_row", "id"],
               descending=[False, True, True, False, False, False])
        first = ranked.group_by("_root", maintain_order=True).agg(pl.col("_i").first().alias("_kept"), pl.len().alias("_size"))
        joined = pl.DataFrame({"_root": root}).join(first, on="_root", how="left", maintain_order="left")
        return joined["_kept"].to_numpy().astype(np.int64), joined["_size"].to_numpy().astype(np.int64)
