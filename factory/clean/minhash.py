"""MinHash signatures (numpy, whole batches), LSH candidates (datasketch), exact verification.

Signatures: each shingle's 64-bit hash is folded to 32 bits and sent through 128 seeded
permutations x ↦ a·x + b (mod 2^32, a odd); a document's signature is the per-permutation
minimum. The loop runs permutation by permutation over cache-sized slices of shingles, which
numpy does at memory speed; slices go to a small thread pool (numpy releases the GIL).

Candidates come from datasketch's MinHashLSH (bands × rows); every candidate pair is then
verified with its real Jaccard on the shingle sets before it may join two rows.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np

SLICE = 1 << 16     # shingles per slice: a 256 KiB uint32 working set


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


def signatures(shingles: np.ndarray, counts: np.ndarray, num_perm: int, seed: int, threads: int = 2) -> np.ndarray:
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

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(pool.map(work, _slices(counts)))
    return out


class _Sketch:
    """What datasketch's LSH reads from a MinHash: its hash values and length."""

    __slots__ = ("hashvalues",)

    def __init__(self, hashvalues: np.ndarray):
        self.hashvalues = hashvalues

    def __len__(self) -> int:
        return len(self.hashvalues)


def lsh_candidates(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Candidate pairs (i < j) that share at least one LSH band bucket, via datasketch."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(num_perm=sigs.shape[1], params=(bands, rows))
    with lsh.insertion_session(buffer_size=len(sigs) + 1) as session:
        for i in range(len(sigs)):
            session.insert(i, _Sketch(sigs[i]), check_duplication=False)
    pairs: list[np.ndarray] = []
    for table in lsh.hashtables:
        buckets = getattr(table, "_dict", None)
        groups = buckets.values() if buckets is not None else (table.get(k) for k in table.keys())
        for members in groups:
            if len(members) > 1:
                pairs.append(_bucket_pairs(np.fromiter(members, dtype=np.int64, count=len(members))))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(pairs), axis=0)


SMALL_BUCKET = 16


def _bucket_pairs(members: np.ndarray) -> np.ndarray:
    """Pairs to verify in one bucket: all of them in a small bucket; in a large one each member
    against the first and against its neighbour (verification decides, components do the rest)."""
    members.sort()
    if len(members) <= SMALL_BUCKET:
        i, j = np.triu_indices(len(members), k=1)
        return np.stack((members[i], members[j]), axis=1)
    star = np.stack((np.full(len(members) - 1, members[0]), members[1:]), axis=1)
    chain = np.stack((members[1:-1], members[2:]), axis=1)
    return np.concatenate((star, chain))


class ShingleSets:
    """Sets of shingle hashes per document, built on first use (only candidates pay)."""

    def __init__(self, shingles: np.ndarray, counts: np.ndarray):
        self.shingles = shingles
        self.offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=self.offsets[1:])
        self._sets: dict[int, frozenset[int]] = {}

    def __getitem__(self, doc: int) -> frozenset[int]:
        s = self._sets.get(doc)
        if s is None:
            s = self._sets[doc] = frozenset(self.shingles[self.offsets[doc]: self.offsets[doc + 1]].tolist())
        return s

    def jaccard(self, i: int, j: int) -> float:
        a, b = self[i], self[j]
        inter = len(a & b)
        return inter / (len(a) + len(b) - inter) if (a or b) else 1.0


class UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, x: int) -> int:
        p = self.parent
        root = x
        while p[root] != root:
            root = p[root]
        while p[x] != root:
            p[x], x = root, p[x]
        return int(root)

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[max(ra, rb)] = min(ra, rb)
        return True

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)
