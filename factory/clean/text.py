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
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory.recipe.model import Normalization

# Chat-template and role markers that say nothing about content.
_TEMPLATE = (r"(?im)<\|[^|>\n]{1,40}\|>|</?s>|\[/?inst\]|<</?sys>>|<start_of_turn>|<end_of_turn>"
             r"|^\s*#{2,4}\s*(?:instruction|response|input|output|system|user|assistant)\s*:?"
             r"|^\s*(?:human|assistant|user|system|gpt)\s*:")
_TEMPLATE_HINTS = ("<|", "</s>", "<s>", "[inst]", "<<sys>>", "_of_turn>", "##", ":")

_P = np.uint64(0x100000001B3)                     # odd, so invertible mod 2^64
_P_INV = np.uint64(pow(int(_P), -1, 2**64))
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_NGRAM = np.uint64(0x9E3779B97F4A7C15)
_NUMBER = np.uint64(0x6A09E667F3BCC908)           # stands for any all-digit token in masked keys

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
    """Normalised copies of ``texts`` (null → empty)."""
    out = pc.fill_null(texts.cast(pa.string()), "")
    if opts.nfkc:
        ascii_ = pc.string_is_ascii(out)
        if not pc.all(ascii_).as_py():
            rest = pc.invert(ascii_)
            out = pc.replace_with_mask(out, rest, pc.utf8_normalize(out.filter(rest), "NFKC"))
    if opts.lowercase:
        out = pc.utf8_lower(out)
    if opts.strip_templates:
        hit = None
        for hint in _TEMPLATE_HINTS:
            m = pc.match_substring(out, hint, ignore_case=True)
            hit = m if hit is None else pc.or_(hit, m)
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
    digit_prefix = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(_DIGIT_BYTE[data], out=digit_prefix[1:])
    numeric = (digit_prefix[ends] - digit_prefix[starts]) > 0
    doc = np.searchsorted(offsets, starts, side="right") - 1
    return Tokens(hashes, np.bincount(doc, minlength=n_docs).astype(np.int64), numeric)


def tokenize_batched(texts: pa.Array, docs_per_batch: int = 2000) -> Tokens:
    """``tokenize`` in cache-sized slices (3× faster than one pass over a large array)."""
    parts = [tokenize(texts.slice(i, docs_per_batch)) for i in range(0, len(texts), docs_per_batch)]
    if not parts:
        return Tokens(np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, bool))
    return Tokens(np.concatenate([p.hashes for p in parts]), np.concatenate([p.counts for p in parts]),
                  np.concatenate([p.numeric for p in parts]))


def doc_keys(tok: Tokens) -> tuple[np.ndarray, np.ndarray]:
    """Per document: a key of its exact token sequence, and the same key with every token that
    holds a digit replaced by one symbol (equal masked keys + different keys = differ only in numbers)."""
    offs = tok.offsets
    pos = np.arange(len(tok.hashes), dtype=np.uint64) - np.repeat(offs[:-1], tok.counts).astype(np.uint64)
    with np.errstate(over="ignore"):
        full = mix64(tok.hashes + pos * _NGRAM)
        masked = mix64(np.where(tok.numeric, _NUMBER, tok.hashes) + pos * _NGRAM)
    nonempty = tok.counts > 0
    starts = offs[:-1][nonempty]
    out_full = np.full(len(tok.counts), mix64(np.zeros(1, np.uint64))[0], dtype=np.uint64)   # empty text
    out_masked = out_full.copy()
    if len(tok.hashes):
        with np.errstate(over="ignore"):
            out_full[nonempty] = np.add.reduceat(full, starts) + tok.counts[nonempty].astype(np.uint64)
            out_masked[nonempty] = np.add.reduceat(masked, starts) + tok.counts[nonempty].astype(np.uint64)
    return out_full, out_masked


def number_keys(tok: Tokens) -> np.ndarray:
    """Per document: a key of the ordered sequence of its tokens that hold digits ("24", "10ml").
    Two rows may only be duplicates when these are equal: a math question with other numbers is
    another question."""
    offs = tok.offsets
    numeric = tok.numeric
    before = np.concatenate(([0], np.cumsum(numeric)))            # all-digit tokens before token i
    rank = before[:-1] - np.repeat(before[offs[:-1]], tok.counts)   # index among its document's numbers
    with np.errstate(over="ignore"):
        part = np.where(numeric, mix64(tok.hashes + rank.astype(np.uint64) * _NGRAM), np.uint64(0))
    out = np.zeros(len(tok.counts), dtype=np.uint64)
    nonempty = tok.counts > 0
    if len(tok.hashes):
        with np.errstate(over="ignore"):
            out[nonempty] = np.add.reduceat(part, offs[:-1][nonempty])
    return out


def ngrams(tok: Tokens, n: int, short: str = "whole") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Word n-gram hashes: (hashes, document of each, token position of each). A document with
    fewer than n tokens gives one hash of all its tokens (``short='whole'``) or none ('skip')."""
    h, counts = tok.hashes, tok.counts
    offs = tok.offsets
    total = len(h)
    windows = max(total - n + 1, 0)
    with np.errstate(over="ignore"):
        grams = h[:windows].copy()
        for k in range(1, n):
            grams = grams * _NGRAM + h[k: windows + k]
    doc = np.repeat(np.arange(len(counts)), counts)[:windows]
    start = np.arange(windows)
    ok = start + n <= offs[doc + 1]
    grams, doc, start = grams[ok], doc[ok], start[ok]
    if short == "whole":
        few = np.flatnonzero(counts < n)
        if few.size:
            whole = np.zeros(few.size, np.uint64)
            with np.errstate(over="ignore"):
                for k in range(n - 1):
                    has = counts[few] > k
                    idx = np.minimum(offs[few] + k, max(total - 1, 0))
                    if total:
                        whole = np.where(has, whole * _NGRAM + h[idx], whole)
                whole = whole + counts[few].astype(np.uint64)   # '' and 'a' differ from each other
            grams = np.concatenate((grams, whole))
            doc = np.concatenate((doc, few))
            start = np.concatenate((start, offs[few]))
            order = np.argsort(doc, kind="stable")
            grams, doc, start = grams[order], doc[order], start[order]
    return grams, doc, start - offs[doc]
