"""Per-document features for dedup and decontamination, computed chunk by chunk.

A chunk of documents is normalised, tokenised, shingled and sketched in one go, so every
temporary array is small enough to stay in cache: on the 2-core machines here a numpy pass over
a 200 MB array costs as much in page faults as in arithmetic. Chunks run on a small thread pool
(numpy and Arrow release the GIL); what is kept per document is small (two keys, a signature,
the sorted shingle set).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, TypeVar

import numpy as np
import pyarrow as pa

from factory.clean.minhash import signatures
from factory.clean.text import Tokens, doc_keys, ngrams, normalize, number_keys, tokenize_batched
from factory.recipe.model import MinHashOptions, Normalization

CHUNK_DOCS = 8192
_LOW40 = np.uint64((1 << 40) - 1)
T = TypeVar("T")


def for_chunks(texts: pa.Array, opts: Normalization, work: Callable[[int, int, Tokens, pa.Array], T], threads: int) -> list[T]:
    """Apply ``work(lo, hi, tokens, normalised)`` to every chunk of documents, in order."""
    n = len(texts)

    def one(lo: int) -> T:
        hi = min(n, lo + CHUNK_DOCS)
        norm = normalize(texts.slice(lo, hi - lo), opts)
        return work(lo, hi, tokenize_batched(norm, threads=1), norm)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(one, range(0, n, CHUNK_DOCS)))


class ShingleStore:
    """Every document's shingles as a sorted, de-duplicated slice (one sort per chunk): exact
    Jaccard of two documents is a merge of two slices. Shingles are compared on their top 40
    bits (a collision inside one pair: ~m²/2^40)."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray]]):
        # one array for all documents, offsets as a Python list (indexing it is cheaper)
        self.values = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.uint64)
        offsets = [0]
        for _, offs in parts:
            base = offsets[-1]
            offsets.extend((base + offs[1:]).tolist())
        self.offsets = offsets

    @staticmethod
    def part(shingles: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import polars as pl

        doc = np.repeat(np.arange(len(counts), dtype=np.uint64), counts)
        key = pl.Series((doc << np.uint64(40)) | (shingles >> np.uint64(24))).sort().to_numpy()
        keep = np.ones(len(key), dtype=bool)
        keep[1:] = key[1:] != key[:-1]
        key = key[keep]
        offsets = np.searchsorted(key >> np.uint64(40), np.arange(len(counts) + 1, dtype=np.uint64))
        return key & _LOW40, offsets

    def slice(self, doc: int) -> np.ndarray:
        return self.values[self.offsets[doc]: self.offsets[doc + 1]]

    def jaccard(self, i: int, j: int) -> float:
        """Both slices are sorted and unique: merge them (a stable sort of two runs is one merge)
        and count the values that appear twice."""
        o = self.offsets
        la, lb = o[i + 1] - o[i], o[j + 1] - o[j]
        if not la or not lb:
            return 1.0 if la == lb else 0.0
        both = np.concatenate((self.values[o[i]: o[i + 1]], self.values[o[j]: o[j + 1]]))
        both.sort(kind="stable")
        inter = int(np.count_nonzero(both[1:] == both[:-1]))
        return inter / (la + lb - inter)


@dataclass
class DocFeatures:
    full: np.ndarray                 # key of the exact normalised token sequence
    numbers: np.ndarray              # key of the sequence of tokens that hold digits
    sigs: np.ndarray | None          # (documents × num_perm) MinHash signatures
    shingles: ShingleStore | None


def extract(texts: pa.Array, opts: Normalization, minhash: MinHashOptions | None, threads: int = 2) -> DocFeatures:
    n = len(texts)
    full = np.empty(n, dtype=np.uint64)
    numbers = np.empty(n, dtype=np.uint64)
    sigs = np.empty((n, minhash.num_perm), dtype=np.uint32) if minhash else None

    def work(lo: int, hi: int, tok: Tokens, _norm: pa.Array):
        full[lo:hi] = doc_keys(tok)
        numbers[lo:hi] = number_keys(tok)
        if minhash is None:
            return None
        grams, doc, _ = ngrams(tok, minhash.ngram)
        counts = np.bincount(doc, minlength=hi - lo)
        sigs[lo:hi] = signatures(grams, counts, minhash.num_perm, minhash.seed, threads=1)
        return ShingleStore.part(grams, counts)

    parts = for_chunks(texts, opts, work, threads)
    return DocFeatures(full, numbers, sigs, ShingleStore(parts) if minhash else None)
