"""The dedup stage: exact duplicates (normalised text) and near-duplicates (MinHash + LSH +
verified Jaccard), merged into connected components; one row per component is kept.

Which row is kept is decided by a priority, not by chance: a verified answer first, then a row
with reasoning steps, more steps, the earlier source in the recipe, the earlier row, the smaller
id. Every removed row goes to quarantine naming the row kept in its place and their Jaccard.
Two rows whose numbers differ are never merged, whatever their Jaccard: a math question with
other numbers is another question.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from factory.clean.features import extract
from factory.clean.minhash import UnionFind, agreement, band_ranges, lsh_candidates
from factory.recipe.model import DedupOptions
from factory.stages import Stage, StageContext, StageResult, register_stage, rejected_rows

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
    parts = []
    for f in fields:
        if f in ("question", "answer"):       # plain strings: Arrow joins them without a copy to polars
            parts.append(pc.fill_null(table[f].combine_chunks().cast(pa.string()), ""))
        else:
            df = pl.from_arrow(table.select([f]))
            assert isinstance(df, pl.DataFrame)
            parts.append(df.select(_TEXT_OF[f]().fill_null("")).to_series().to_arrow().cast(pa.string()))
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, "\n")


@register_stage("dedup")
class Dedup(Stage):
    def __init__(self, ctx: StageContext, opts: DedupOptions, label: str | None = None, threads: int = 2):
        super().__init__(ctx, label)
        self.opts = opts
        self.threads = threads
        if opts.minhash is not None:      # datasketch (and scipy) take ~0.8 s to import: overlap it
            threading.Thread(target=band_ranges, args=(opts.minhash.num_perm, opts.minhash.bands, opts.minhash.rows),
                             daemon=True).start()

    def run(self, table: pa.Table) -> StageResult:
        n = table.num_rows
        timings: dict[str, float] = {}
        clock = time.perf_counter()
        mh = self.opts.minhash
        feats = extract(row_texts(table, list(self.opts.fields)), self.opts.normalize, mh, threads=self.threads)
        full, numbers = feats.full, feats.numbers
        timings["features"] = time.perf_counter() - clock
        uf = UnionFind(n)
        # Exact duplicates: equal token sequences. One member of each group stands for it below.
        order = np.argsort(full, kind="stable")
        same = np.zeros(n, dtype=bool)
        if n:
            same[1:] = full[order][1:] == full[order][:-1]
        if self.opts.exact:
            for k in np.flatnonzero(same).tolist():
                uf.union(int(order[k - 1]), int(order[k]))
        stats = {"candidate_pairs": 0, "numbers_differ": 0, "estimate_below": 0, "verified_pairs": 0, "below_threshold": 0}
        verified: dict[int, float] = {}                  # lo * n + hi → Jaccard, for accepted edges
        if mh is not None and n > 1:
            t0 = time.perf_counter()
            reps = np.sort(order[~same])                    # identical texts have identical signatures
            assert feats.sigs is not None and feats.shingles is not None
            pairs = reps[lsh_candidates(feats.sigs[reps], mh.bands, mh.rows)]
            stats["candidate_pairs"] = len(pairs)
            timings["lsh"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            # vectorised filters first: different numbers never merge; a MinHash estimate far
            # below the threshold cannot verify (128 permutations: standard error 0.035 near
            # 0.8, so 0.25 below is more than 7 errors away)
            same_numbers = numbers[pairs[:, 0]] == numbers[pairs[:, 1]]
            stats["numbers_differ"] = int(np.sum(~same_numbers))
            pairs = pairs[same_numbers]
            estimate = agreement(feats.sigs, pairs)
            hopeless = estimate < mh.threshold - 0.25
            stats["estimate_below"] = int(np.sum(hopeless))
            pairs = pairs[~hopeless][np.argsort(-estimate[~hopeless], kind="stable")]
            for i, j in pairs.tolist():
                if uf.find(i) == uf.find(j):
                    continue
                stats["verified_pairs"] += 1
                jac = feats.shingles.jaccard(i, j)
                if jac >= mh.threshold:
                    uf.union(i, j)
                    verified[min(i, j) * n + max(i, j)] = jac
                else:
                    stats["below_threshold"] += 1
            timings["verify"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        root = uf.roots()
        kept_of, size, jaccard = self._choose(table, root, full, feats, mh.threshold if mh else 1.0, verified)
        keep_mask = kept_of == np.arange(n)
        ids = table["id"].to_numpy(zero_copy_only=False)
        reasons, details = [], []
        exact = near = 0
        for i in np.flatnonzero(~keep_mask).tolist():
            k = int(kept_of[i])
            if full[i] == full[k]:
                exact += 1
                reasons.append(f"exact duplicate of {ids[k]}")
                details.append(f'{{"kept_id": "{ids[k]}", "jaccard": 1.0, "cluster_size": {int(size[i])}}}')
            else:
                near += 1
                jac = float(jaccard[i])
                reasons.append(f"near-duplicate of {ids[k]} (jaccard {jac:.3f})")
                details.append(f'{{"kept_id": "{ids[k]}", "jaccard": {round(jac, 4)}, "cluster_size": {int(size[i])}}}')
        table = table.set_column(table.schema.get_field_index("cluster_id"), "cluster_id", pa.array(ids[kept_of], type=pa.string()))
        table = table.set_column(table.schema.get_field_index("cluster_size"), "cluster_size", pa.array(size, type=pa.int32()))
        table = table.set_column(table.schema.get_field_index("kept"), "kept", pa.array(keep_mask))
        drop = pa.array(~keep_mask)
        rejected = rejected_rows(table, drop, reasons, details)
        timings["choose"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - clock
        report = {
            "fields": list(self.opts.fields), "exact": self.opts.exact, "rows_in": n,
            "exact_removed": exact, "near_removed": near,
            "clusters": int(np.sum(size[keep_mask] > 1)),
            "components_split": int(len(np.unique(root)) - int(np.sum(keep_mask)) and 0) + int(np.sum(keep_mask) - len(np.unique(root))),
            "minhash": mh.model_dump() if mh else None, **stats,
            "seconds": {k: round(v, 3) for k, v in timings.items()},
        }
        return StageResult(kept=table.filter(pc.invert(drop)), rejected=rejected, report=report)

    def _choose(self, table: pa.Table, root: np.ndarray, full: np.ndarray, feats, threshold: float,
                verified: dict[int, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For every row: the row kept in its place, the cluster size, and the Jaccard with it.

        Within a component the best row by priority is kept; every member within the threshold
        of it (verified directly, not through a chain) joins its cluster. Members further away
        were only linked through others: the best of them starts a cluster of its own, and so
        on. So a removed row is always a near-duplicate of the very row that replaced it."""
        n = table.num_rows
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
        kept_of = np.arange(n)
        jac = np.ones(n, dtype=np.float64)
        idx = ranked["_i"].to_numpy().astype(np.int64)
        roots = ranked["_root"].to_numpy()
        tier = ranked.select(pl.struct("_verified", "_steps", "_source").rank("dense")).to_series().to_numpy()
        sigs = feats.sigs
        starts = np.flatnonzero(np.concatenate(([True], roots[1:] != roots[:-1])))
        ends = np.concatenate((starts[1:], [n]))
        first_centre = self._centres(idx, tier, starts, ends, sigs, threshold)
        # first round, vectorised: every member against its component's centre
        sizes = ends - starts
        comp = np.repeat(np.arange(len(starts)), sizes)
        centre = first_centre[comp]
        member = idx
        todo = (centre >= 0) & (member != centre)
        m, c = member[todo], centre[todo]
        j = np.where(full[m] == full[c], 1.0, np.nan)
        if verified:
            codes = np.fromiter(verified.keys(), dtype=np.int64, count=len(verified))
            values = np.fromiter(verified.values(), dtype=np.float64, count=len(verified))
            order_v = np.argsort(codes)
            codes, values = codes[order_v], values[order_v]
            want = np.minimum(m, c).astype(np.int64) * n + np.maximum(m, c)
            at = np.minimum(np.searchsorted(codes, want), len(codes) - 1)
            hit = (codes[at] == want) & np.isnan(j)
            j[hit] = values[at[hit]]
        missing = np.flatnonzero(np.isnan(j))
        if feats.shingles is not None:
            for k in missing.tolist():
                j[k] = feats.shingles.jaccard(int(m[k]), int(c[k]))
        else:
            j[missing] = 0.0
        joined = j >= threshold
        kept_of[m[joined]] = c[joined]
        jac[m[joined]] = j[joined]
        # later rounds (members only linked to the centre through others), one component at a time
        left_comps = np.unique(comp[todo][~joined])
        for g in left_comps.tolist():
            a, b = int(starts[g]), int(ends[g])
            rows = idx[a:b]
            remaining = [r for r in rows.tolist() if kept_of[r] == r and r != first_centre[g]]
            tiers = dict(zip(rows.tolist(), tier[a:b].tolist()))
            while remaining:
                k = self._centre(remaining, tiers, sigs, threshold)
                later = []
                for r in remaining:
                    if r == k:
                        continue
                    jr = 1.0 if full[r] == full[k] else (feats.shingles.jaccard(r, k) if feats.shingles is not None else 0.0)
                    if jr >= threshold:
                        kept_of[r], jac[r] = k, jr
                    else:
                        later.append(r)
                remaining = later
        size = np.bincount(kept_of, minlength=n)[kept_of]
        return kept_of, size, jac

    @staticmethod
    def _centres(idx: np.ndarray, tier: np.ndarray, starts: np.ndarray, ends: np.ndarray, sigs: np.ndarray | None,
                 threshold: float, cap: int = 64) -> np.ndarray:
        """``_centre`` for every component at once (one vectorised MinHash comparison over all
        candidate × member pairs); -1 for singletons. Components with more than ``cap`` tied
        rows or members use the first ``cap`` of each, in priority order."""
        sizes = ends - starts
        out = np.where(sizes > 1, idx[starts], -1)
        if sigs is None:
            return out
        comp = np.repeat(np.arange(len(starts)), sizes)
        rank = np.arange(len(idx)) - np.repeat(starts, sizes)            # position within the component
        in_pool = (rank < cap) & (sizes[comp] > 1)
        tied = in_pool & (tier == tier[starts][comp])
        if not np.any(np.bincount(comp[tied], minlength=len(starts)) > 1):
            return out
        cand = np.flatnonzero(tied)                                      # candidate positions
        pool_counts = np.minimum(sizes, cap)
        reps = pool_counts[comp[cand]]
        left = np.repeat(cand, reps)
        right = np.repeat(starts[comp[cand]], reps) + (np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps))
        agree = agreement(sigs, np.stack((idx[left], idx[right]), axis=1)) >= threshold
        cover = np.bincount(np.repeat(np.arange(len(cand)), reps)[agree], minlength=len(cand))
        # best cover per component; ties: the earlier (higher priority) candidate
        order = np.lexsort((rank[cand], -cover, comp[cand]))
        firsts = order[np.concatenate(([True], comp[cand][order][1:] != comp[cand][order][:-1]))]
        out[comp[cand[firsts]]] = idx[cand[firsts]]
        return out

    @staticmethod
    def _centre(members: list[int], tiers: dict[int, int], sigs: np.ndarray | None, threshold: float) -> int:
        """The row to keep: the best by priority; among rows tied on it (verified answer, steps,
        source), the one that is a near-duplicate of most others (by MinHash estimate), so that
        a cluster is built around its middle, not its edge."""
        best = tiers[members[0]]
        tied = [m for m in members[:200] if tiers[m] == best]
        if len(tied) == 1 or sigs is None:
            return members[0]
        pool = sigs[np.asarray(members[:2000])]
        agree = (sigs[np.asarray(tied)][:, None, :] == pool[None, :, :]).mean(axis=2) >= threshold
        return tied[int(np.argmax(agree.sum(axis=1)))]      # first of the best: priority order breaks ties
