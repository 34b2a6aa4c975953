"""MinHash signatures (numpy, whole batches), LSH candidates (datasketch), exact verification.

Signatures: each shingle's 64-bit hash is folded to 32 bits and sent through 128 seeded
permutations x ↦ a·x + b (mod 2^32, a odd); a document's signature is the per-permutation
minimum. The loop runs permutation by permutation over cache-sized slices of shingles, which
numpy does at memory speed; slices go to a small thread pool (numpy releases the GIL).

Candidates come from LSH over datasketch's band layout (bands × rows), bucketed in numpy;
every candidate pair is then verified with its real Jaccard on the shingle sets before it may
join two rows.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Iterator

import numpy as np

SLICE = 1 << 16     # shingles per slice: a 256 KiB uint32 working set


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = (rng.integers(1, 2**32, num_perm, dtype=np.uint64) | np.uint64(1)).astype(np.uint32)
    b = rng.integers(0, 2**32, num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


def _slices(counts: np.ndarray) -> Iterator[tuple[int, int]]:
    """Document ranges whose shingles add up to about SLICE (a long document gets its own)."""
    ends = np.cumsum(counts)
    start_doc, start_sh = 0, 0
    while start_doc < len(counts):
        stop = int(np.searchsorted(ends, start_sh + SLICE, side="right"))
        stop = max(stop, start_doc + 1)
        yield start_doc, stop
        start_sh = int(ends[stop - 1])
        start_doc = stop


def signatures(shingles: np.ndarray, counts: np.ndarray, num_perm: int, seed: int, threads: int = 1) -> np.ndarray:
    """(documents × num_perm) uint32 MinHash signatures; every document has ≥ 1 shingle."""
    a, b = permutations(num_perm, seed)
    keys = ((shingles >> np.uint64(32)) ^ shingles).astype(np.uint32)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    out = np.empty((len(counts), num_perm), dtype=np.uint32)

    def work(span: tuple[int, int]) -> None:
        d0, d1 = span
        block = keys[offsets[d0]: offsets[d1]]
        starts = offsets[d0:d1] - offsets[d0]
        h = np.empty_like(block)
        with np.errstate(over="ignore"):
            for k in range(num_perm):
                np.multiply(block, a[k], out=h)
                h += b[k]
                out[d0:d1, k] = np.minimum.reduceat(h, starts)

    if threads <= 1:
        for span in _slices(counts):
            work(span)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(work, _slices(counts)))
    return out


SMALL_BUCKET = 6


@lru_cache(maxsize=16)
def band_ranges(num_perm: int, bands: int, rows: int) -> list[tuple[int, int]]:
    """The signature slice of every band, as datasketch's MinHashLSH lays them out."""
    from datasketch import MinHashLSH

    return list(MinHashLSH(num_perm=num_perm, params=(bands, rows)).hashranges)


def lsh_candidates(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Candidate pairs (i < j) that share a bucket in at least one band.

    The bands are datasketch's (same slices of the signature); the bucket of a document in a
    band is a 64-bit hash of its slice, grouped by sorting — one vectorised pass per band, where
    inserting 200k documents into a MinHashLSH object one by one took 23 s. Inside a bucket every
    pair is a candidate when the bucket is small; in a large one each member is paired with the
    first and its 5 sorted neighbours (verification decides, components do the rest).
    """
    n = len(sigs)
    found: list[np.ndarray] = []
    for start, end in band_ranges(sigs.shape[1], bands, rows):
        key = np.zeros(n, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for c in range(start, end):
                key = _mix(key ^ sigs[:, c].astype(np.uint64))
        order = np.argsort(key, kind="stable")
        k = key[order]
        new = np.concatenate(([True], k[1:] != k[:-1]))
        group = np.cumsum(new) - 1
        sizes = np.bincount(group)
        if sizes.max(initial=0) < 2:
            continue
        first = np.flatnonzero(new)
        for d in range(1, SMALL_BUCKET):
            same = group[d:] == group[:-d]
            if not same.any():
                break
            found.append(np.stack((order[:-d][same], order[d:][same]), axis=1))
        big = np.flatnonzero(sizes > SMALL_BUCKET)
        if big.size:
            members = np.isin(group, big)
            lead = order[first[group[members]]]
            found.append(np.stack((lead, order[members]), axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    import polars as pl

    pairs = np.concatenate(found)
    lo, hi = np.minimum(pairs[:, 0], pairs[:, 1]), np.maximum(pairs[:, 0], pairs[:, 1])
    code = (lo.astype(np.int64) * n + hi)[lo != hi]
    code = pl.Series(code).unique().sort().to_numpy()          # multi-threaded hash, then order
    return np.stack((code // n, code % n), axis=1)


def _mix(z: np.ndarray) -> np.ndarray:
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def agreement(sigs: np.ndarray, pairs: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """MinHash estimate of each pair's Jaccard: the share of equal signature values."""
    out = np.empty(len(pairs), dtype=np.float32)
    for a in range(0, len(pairs), chunk):
        p = pairs[a:a + chunk]
        out[a:a + chunk] = (sigs[p[:, 0]] == sigs[p[:, 1]]).mean(axis=1)
    return out


class UnionFind:
    """Union-find on a Python list (faster than a numpy array for element-wise access); the
    smaller index is the root, so roots do not depend on the order of unions."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        p = self.parent
        root = x
        while p[root] != root:
            root = p[root]
        while p[x] != root:
            p[x], x = root, p[x]
        return root

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if ra < rb:
            self.parent[rb] = ra
        else:
            self.parent[ra] = rb
        return True

    def roots(self) -> np.ndarray:
        find = self.find
        return np.fromiter((find(i) for i in range(len(self.parent))), dtype=np.int64, count=len(self.parent))
