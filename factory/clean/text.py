"""Text for comparison: normalisation, tokens and n-gram hashes, vectorised over whole batches.

Normalisation (each step a recipe option): NFKC (only rows that are not plain ASCII pay for
it), lowercase, chat-template tokens stripped, digits kept. Punctuation and whitespace fold
away in tokenisation: a token is a run of ASCII letters/digits or of non-ASCII bytes.

Tokens are hashed straight from the UTF-8 bytes with a polynomial hash computed from prefix
sums (numpy, no Python loop per word): h(token) = Σ b_k · P^(end-1-k) mod 2^64, then mixed with
splitmix64. The same bytes always give the same hash, on every machine and run.
"""

from __future__ import annotations

import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory.recipe.model import Normalization

# Chat-template and role markers that say nothing about content.
_TEMPLATE = (r"(?im)<\|[^|>\n]{1,40}\|>|</?s>|\[/?inst\]|<</?sys>>|<start_of_turn>|<end_of_turn>"
             r"|^\s*#{2,4}\s*(?:instruction|response|input|output|system|user|assistant)\s*:?"
             r"|^\s*(?:human|assistant|user|system|gpt)\s*:")
# One pass finds the rows that may hold a template (RE2 has no multiline ^: a newline instead).
_TEMPLATE_FIND = (r"<\|[^|>\n]{1,40}\|>|</?s>|\[/?inst\]|<</?sys>>|_of_turn>|#{2,4}\s*(?:instruction|response|input|output|system|user|assistant)"
                  r"|(?:^|\n)\s*(?:human|assistant|user|system|gpt)\s*:")

_P = np.uint64(0x100000001B3)                     # odd, so invertible mod 2^64
_P_INV = np.uint64(pow(int(_P), -1, 2**64))
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_NGRAM = np.uint64(0x9E3779B97F4A7C15)

_TOKEN_BYTE = np.zeros(256, dtype=bool)
_TOKEN_BYTE[np.frombuffer(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", np.uint8)] = True
_TOKEN_BYTE[0x80:] = True
_DIGIT_BYTE = np.zeros(256, dtype=bool)
_DIGIT_BYTE[np.frombuffer(b"0123456789", np.uint8)] = True
_WORD = re.compile(r"[0-9A-Za-z\u0080-\U0010FFFF]+")


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, elementwise."""
    with np.errstate(over="ignore"):
        z = z ^ (z >> np.uint64(30))
        z = z * _MIX1
        z = z ^ (z >> np.uint64(27))
        z = z * _MIX2
        return z ^ (z >> np.uint64(31))


def normalize(texts: pa.Array, opts: Normalization) -> pa.Array:
    """Normalised copies of ``texts`` (null → empty). Each step touches only the rows that need
    it: plain-ASCII rows skip NFKC and take the ASCII lowercase; only rows that look like they
    hold a chat template pay for the regex that strips it."""
    out = pc.fill_null(texts.cast(pa.string()), "")
    if isinstance(out, pa.ChunkedArray):
        out = out.combine_chunks()
    ascii_ = pc.string_is_ascii(out)
    if opts.lowercase:
        out = pc.ascii_lower(out)
    if len(out) and not pc.all(ascii_).as_py() and (opts.nfkc or opts.lowercase):
        # Rows with non-ASCII text. Which of them NFKC would change is a quick check in Python;
        # the work itself runs in Arrow kernels, which release the GIL (chunks run in parallel).
        rest = pc.invert(ascii_)
        sub = out.filter(rest)
        if opts.nfkc:
            change = pa.array([not unicodedata.is_normalized("NFKC", v) for v in sub.to_pylist()], pa.bool_())
            if pc.any(change).as_py():
                sub = pc.replace_with_mask(sub, change, pc.utf8_normalize(sub.filter(change), "NFKC"))
        if opts.lowercase:
            sub = pc.utf8_lower(sub)
        out = pc.replace_with_mask(out, rest, sub)
    if opts.strip_templates and len(out):
        hit = pc.match_substring_regex(out, _TEMPLATE_FIND, ignore_case=True)
        if pc.any(hit).as_py():
            out = pc.replace_with_mask(out, hit, pc.replace_substring_regex(out.filter(hit), _TEMPLATE, " "))
    if not opts.keep_digits:
        out = pc.replace_substring_regex(out, r"[0-9]+", "0")
    return out


def words(text: str) -> list[str]:
    """The tokens of one normalised text, as strings (for reports; hashing is vectorised)."""
    return _WORD.findall(text)


_POWERS: list[np.ndarray] = [np.ones(1, np.uint64), np.ones(1, np.uint64)]


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    if len(_POWERS[0]) < n:
        m = max(n, 2 * len(_POWERS[0]))
        with np.errstate(over="ignore"):
            p = np.full(m, _P, dtype=np.uint64)
            p[0] = 1
            np.cumprod(p, out=p)
            ip = np.full(m, _P_INV, dtype=np.uint64)
            ip[0] = 1
            np.cumprod(ip, out=ip)
        _POWERS[0], _POWERS[1] = p, ip
    return _POWERS[0], _POWERS[1]


@dataclass
class Tokens:
    hashes: np.ndarray        # uint64, all tokens of all documents, in order
    counts: np.ndarray        # tokens per document
    numeric: np.ndarray       # bool per token: holds a digit ("24", "10ml", "x2")

    @property
    def offsets(self) -> np.ndarray:
        out = np.zeros(len(self.counts) + 1, dtype=np.int64)
        np.cumsum(self.counts, out=out[1:])
        return out


def tokenize(texts: pa.Array) -> Tokens:
    """Token hashes of every document of a (normalised) string array."""
    arr = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    arr = arr.cast(pa.string())
    n_docs = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset: arr.offset + n_docs + 1].astype(np.int64)
    data_buf = arr.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0]: offsets[-1]] if data_buf is not None else np.zeros(0, np.uint8)
    offsets = offsets - offsets[0]
    n = len(data)
    if n == 0:
        return Tokens(np.zeros(0, np.uint64), np.zeros(n_docs, np.int64), np.zeros(0, bool))
    is_tok = _TOKEN_BYTE[data]
    boundary = np.zeros(n + 1, dtype=bool)
    boundary[offsets] = True                       # documents never share a token
    prev = np.empty(n, dtype=bool)
    prev[0] = False
    prev[1:] = is_tok[:-1]
    nxt = np.empty(n, dtype=bool)
    nxt[-1] = False
    nxt[:-1] = is_tok[1:]
    starts = np.flatnonzero(is_tok & (~prev | boundary[:n]))
    ends = np.flatnonzero(is_tok & (~nxt | boundary[1:])) + 1
    powers, inverse = _powers(n + 1)
    with np.errstate(over="ignore"):
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(data.astype(np.uint64) * inverse[:n], out=prefix[1:])
        hashes = mix64((prefix[ends] - prefix[starts]) * powers[ends - 1])
    digits = np.flatnonzero(_DIGIT_BYTE[data])
    first_digit = np.searchsorted(digits, starts)          # the first digit at or after each token start
    numeric = np.zeros(len(starts), dtype=bool)
    inside = first_digit < len(digits)
    numeric[inside] = digits[first_digit[inside]] < ends[inside]
    counts = np.diff(np.searchsorted(starts, offsets)).astype(np.int64)
    return Tokens(hashes, counts, numeric)


def tokenize_batched(texts: pa.Array, docs_per_batch: int = 1000, threads: int = 2) -> Tokens:
    """``tokenize`` in cache-sized slices (3× faster than one pass over a large array), on a few
    threads (numpy releases the GIL)."""
    batches = [texts.slice(i, docs_per_batch) for i in range(0, len(texts), docs_per_batch)]
    if threads <= 1:
        parts = [tokenize(b) for b in batches]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            parts = list(pool.map(tokenize, batches))
    if not parts:
        return Tokens(np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, bool))
    return Tokens(np.concatenate([p.hashes for p in parts]), np.concatenate([p.counts for p in parts]),
                  np.concatenate([p.numeric for p in parts]))


def segment_keys(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per segment (document), a hash of its ordered values: Σ v_k · P^(end-1-k) mod 2^64 from
    one prefix sum, mixed; the length is mixed in so that '' and 'a' differ."""
    offs = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offs[1:])
    n = len(values)
    powers, inverse = _powers(n + 1)
    with np.errstate(over="ignore"):
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(values * inverse[:n], out=prefix[1:])
        raw = (prefix[offs[1:]] - prefix[offs[:-1]]) * powers[np.maximum(offs[1:] - 1, 0)]
        return mix64(raw + counts.astype(np.uint64) * _NGRAM)


def doc_keys(tok: Tokens) -> np.ndarray:
    """Per document: a key of its exact token sequence (equal keys: equal normalised text)."""
    return segment_keys(tok.hashes, tok.counts)


def number_keys(tok: Tokens) -> np.ndarray:
    """Per document: a key of the ordered sequence of its tokens that hold digits ("24", "10ml").
    Two rows may only be duplicates when these are equal: a math question with other numbers is
    another question."""
    offs = tok.offsets
    per_doc = np.add.reduceat(tok.numeric.astype(np.int64), offs[:-1]) if len(tok.hashes) else np.zeros(len(tok.counts), np.int64)
    per_doc = np.where(tok.counts > 0, per_doc, 0)
    return segment_keys(tok.hashes[tok.numeric], per_doc)


def ngrams(tok: Tokens, n: int, short: str = "whole") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Word n-gram hashes: (hashes, document of each, token position of each), grouped by
    document. A document with fewer than n tokens gives one hash of all its tokens
    (``short='whole'``) or none ('skip')."""
    h, counts = tok.hashes, tok.counts
    offs = tok.offsets
    total = len(h)
    windows = max(total - n + 1, 0)
    with np.errstate(over="ignore"):
        grams = h[:windows].copy()
        for k in range(1, n):
            grams *= _NGRAM
            grams += h[k: windows + k]
    per_doc = np.maximum(counts - n + 1, 0)
    whole = (counts < n) if short == "whole" else np.zeros(len(counts), bool)
    out_counts = per_doc + whole
    out_offs = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(out_counts, out=out_offs[1:])
    size = int(out_offs[-1])
    out = np.empty(size, dtype=np.uint64)
    doc = np.repeat(np.arange(len(counts)), out_counts)
    pos = np.arange(size, dtype=np.int64) - out_offs[doc]
    # windows of long documents: the k-th window of document d starts at its k-th token
    long_rows = ~whole[doc]
    out[long_rows] = grams[offs[doc[long_rows]] + pos[long_rows]]
    few = np.flatnonzero(whole)
    if few.size:
        acc = np.zeros(few.size, np.uint64)
        with np.errstate(over="ignore"):
            for k in range(n - 1):
                has = counts[few] > k
                if total:
                    acc = np.where(has, acc * _NGRAM + h[np.minimum(offs[few] + k, total - 1)], acc)
            acc = acc + counts[few].astype(np.uint64)        # '' and 'a' differ
        out[out_offs[few]] = acc
    return out, doc, pos
