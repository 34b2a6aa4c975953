"""Selector windows (the user's second document): for every token of a trace, the last ``k``
tokens (left-padded), the target, and ``K`` candidates — the target plus ``K − 1`` distractors
drawn from unrelated contexts (other rows of the batch), seeded, the target exactly once at a
random position (``target_index``).

The tokenizer is a ``tokenizer.json`` / local HF tokenizer directory, or a byte-level BPE
trained with ``tokenizers`` on the recipe's own traces and saved beside the export. Rows are
tokenised and written ``batch_rows`` at a time through a Parquet writer, so memory depends on the
batch, not on the corpus (``write_windows`` takes any iterator of record batches).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from factory.exports.base import ExportFile, Exporter, register_export
from factory.output import sha256_file
from factory.recipe.model import SelectorExport

PAD = "<pad>"
SCHEMA = pa.schema([
    pa.field("input_ids", pa.list_(pa.int32())),
    pa.field("target_id", pa.int32()),
    pa.field("candidate_ids", pa.list_(pa.int32())),
    pa.field("target_index", pa.int16()),
    pa.field("position", pa.int32()),
    pa.field("row_id", pa.string()),
    pa.field("domain", pa.string()),
])


def trace_texts(batch: pa.RecordBatch | pa.Table) -> pl.DataFrame:
    """id, domain, split and the trace text (steps, then the answer) of rows that have steps."""
    df = pl.from_arrow(batch)
    assert isinstance(df, pl.DataFrame)
    text = pl.col("steps").list.eval(pl.element().struct.field("text")).list.join("\n")
    df = df.filter(pl.col("steps").list.len().fill_null(0) > 0)
    return df.select("id", "domain", "split", text=pl.concat_str([text, pl.col("answer").fill_null("")], separator="\n"))


def train_bpe(texts: Iterable[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def load_tokenizer(spec: str, base_dir: Path):
    from tokenizers import Tokenizer

    path = Path(spec).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if path.is_dir():
        path = path / "tokenizer.json"
    return Tokenizer.from_file(str(path))


def _pad_id(tok) -> int:
    for name in (PAD, "[PAD]", "<|endoftext|>", "</s>", "<eos>"):
        i = tok.token_to_id(name)
        if i is not None:
            return i
    return 0


def windows(ids: list[list[int]], row_ids: list[str], domains: list[str], *, k: int, n_candidates: int, vocab: int,
            pad: int, rng: np.random.Generator) -> pa.Table:
    """All windows of one batch of tokenised rows, vectorised."""
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    n = int(lengths.sum())
    if n == 0:
        return SCHEMA.empty_table()
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=n)
    row_of = np.repeat(np.arange(len(ids)), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    position = np.arange(n) - starts[row_of]
    # context: k pads before every row, then a sliding window over the padded stream
    padded_starts = starts + k * np.arange(len(ids))
    stream = np.full(n + k * len(ids), pad, dtype=np.int32)
    at = padded_starts[row_of] + k + position
    stream[at] = flat
    context = np.lib.stride_tricks.sliding_window_view(stream, k)[at - k]
    # distractors: tokens of other rows of the batch (unrelated contexts), never the target
    m = n_candidates - 1
    draw = rng.integers(0, n, size=(n, m))
    for _ in range(8):
        bad = (row_of[draw] == row_of[:, None]) | (flat[draw] == flat[:, None])
        if not bad.any():
            break
        draw[bad] = rng.integers(0, n, size=int(bad.sum()))
    distract = flat[draw]
    clash = (row_of[draw] == row_of[:, None]) | (distract == flat[:, None])
    if clash.any():                       # one row, or a tiny vocabulary: any other token id
        other = (flat[:, None] + 1 + rng.integers(0, vocab - 1, size=(n, m))) % vocab
        distract = np.where(clash, other, distract).astype(np.int32)
    where = rng.integers(0, n_candidates, size=n)
    candidates = np.empty((n, n_candidates), dtype=np.int32)
    slots = np.ones((n, n_candidates), dtype=bool)
    slots[np.arange(n), where] = False
    candidates[slots] = distract.reshape(-1)        # row-major: each row's m distractors around its target
    candidates[np.arange(n), where] = flat
    row_ids_arr = pa.array(row_ids, pa.string()).take(pa.array(row_of))
    domains_arr = pa.array(domains, pa.string()).take(pa.array(row_of))
    return pa.Table.from_arrays([
        pa.FixedSizeListArray.from_arrays(pa.array(context.reshape(-1), pa.int32()), k).cast(pa.list_(pa.int32())),
        pa.array(flat, pa.int32()),
        pa.FixedSizeListArray.from_arrays(pa.array(candidates.reshape(-1), pa.int32()), n_candidates).cast(pa.list_(pa.int32())),
        pa.array(where.astype(np.int16)), pa.array(position.astype(np.int32)), row_ids_arr, domains_arr,
    ], schema=SCHEMA)


def write_windows(batches: Callable[[], Iterator[pa.RecordBatch]], out_dir: Path, opts: SelectorExport, tokenizer: Any,
                  on_batch: Callable[[int], None] | None = None) -> dict[str, tuple[Path, int]]:
    """Stream batches → windows → one Parquet file per split. Returns split → (file, rows)."""
    rng = np.random.default_rng(opts.seed)
    pad, vocab = _pad_id(tokenizer), tokenizer.get_vocab_size()
    writers: dict[str, pq.ParquetWriter] = {}
    counts: dict[str, int] = {}
    files: dict[str, Path] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for batch in batches():
            rows = trace_texts(batch)
            for (split,), part in rows.group_by(["split"], maintain_order=True):
                enc = tokenizer.encode_batch(part["text"].to_list())
                table = windows([e.ids for e in enc], part["id"].to_list(), part["domain"].to_list(), k=opts.context,
                                n_candidates=opts.candidates, vocab=vocab, pad=pad, rng=rng)
                if split not in writers:
                    files[split] = out_dir / f"{split}-00000-of-00001.parquet"
                    writers[split] = pq.ParquetWriter(files[split], SCHEMA, compression="zstd")
                writers[split].write_table(table, row_group_size=256_000)
                counts[split] = counts.get(split, 0) + table.num_rows
            if on_batch:
                on_batch(batch.num_rows)
    finally:
        for w in writers.values():
            w.close()
    return {split: (files[split], counts[split]) for split in files}


@register_export("selector")
class Selector(Exporter):
    opts: SelectorExport

    def write(self, table: pa.Table) -> dict[str, Any]:
        out_dir = self.ctx.out / "exports" / "selector"
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.opts.tokenizer:
            tokenizer = load_tokenizer(self.opts.tokenizer, self.ctx.loaded.base_dir)
            source = self.opts.tokenizer
        else:
            def texts() -> Iterator[str]:
                for b in table.to_batches(self.opts.batch_rows):
                    yield from trace_texts(b)["text"].to_list()
            tokenizer = train_bpe(texts(), self.opts.vocab_size)
            tokenizer.save(str(out_dir / "tokenizer.json"))
            source = "exports/selector/tokenizer.json (BPE trained on this run's traces)"
        written = write_windows(lambda: iter(table.to_batches(self.opts.batch_rows)), out_dir, self.opts, tokenizer)
        counts = {}
        for split, (path, n) in sorted(written.items()):
            rel = str(path.relative_to(self.ctx.out)).replace("\\", "/")
            self.ctx.files.append(ExportFile("selector", split, rel, n, sha256_file(path)))
            counts[split] = n
        return {"tokenizer": source, "vocab_size": tokenizer.get_vocab_size(), "context": self.opts.context,
                "candidates": self.opts.candidates, "seed": self.opts.seed, "rows": counts}
