"""Selector windows: streaming memory and throughput. GSM8K rows (their standardised traces)
replicated to 10k and 100k rows, written as Parquet, then streamed through the selector export in
a fresh process each; prints windows/s and peak RSS, and the RSS ratio 100k / 10k (target: < 1.3).

    python bench/selector.py [--sizes 10000 100000] [--source recipes/data/gsm8k/train.head1000.jsonl]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
import pyarrow.parquet as pq
from pathlib import Path
from tokenizers import Tokenizer
from factory.exports.selector import write_windows
from factory.recipe.model import SelectorExport
src, tok, out, batch = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
opts = SelectorExport(batch_rows=batch)
t0 = time.perf_counter()
written = write_windows(lambda: pq.ParquetFile(src).iter_batches(batch_size=batch), out, opts, Tokenizer.from_file(tok))
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "windows": sum(n for _, n in written.values()),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def rows_with_traces(source: Path) -> pa.Table:
    """The source's rows after standardisation (GSM8K: calculator steps + '####' answer)."""
    from factory.pipeline import run
    from factory.recipe import load_recipe

    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "r.yaml"
        recipe.write_text(json.dumps({"name": "sel", "sources": [{"name": "gsm8k", "kind": "qa", "path": str(source.resolve()),
                                      "fields": {"question": "question", "answer": "answer"}, "trace_format": "gsm8k",
                                      "domain": "math"}]}))
        result = run(load_recipe(recipe), Path(tmp) / "out")
        return pa.concat_tables(pq.read_table(result.out / s["path"]) for s in result.manifest["shards"]).select(
            ["id", "domain", "split", "steps", "answer"])


def replicate(base: pa.Table, n: int, path: Path) -> None:
    with pq.ParquetWriter(path, base.schema) as w:
        done = 0
        while done < n:
            part = base.slice(0, min(base.num_rows, n - done))
            ids = pa.array([f"{i}-{done // base.num_rows}" for i in part["id"].to_pylist()])
            w.write_table(part.set_column(0, base.schema.field("id"), ids))
            done += part.num_rows


def measure(base: pa.Table, n: int, tokenizer: Path, tmp: Path, batch: int = 2000) -> dict:
    src = tmp / f"rows-{n}.parquet"
    replicate(base, n, src)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(src), str(tokenizer), str(tmp / f"out-{n}"), str(batch)],
                          capture_output=True, text=True, cwd=REPO, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return {"rows": n, **json.loads(proc.stdout.strip().splitlines()[-1]), "files": str(tmp / f"out-{n}")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--source", type=Path, default=REPO / "recipes" / "data" / "gsm8k" / "train.head1000.jsonl")
    args = ap.parse_args()
    from factory.exports.selector import trace_texts, train_bpe

    base = rows_with_traces(args.source)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        tok = train_bpe(trace_texts(base)["text"].to_list(), 4096)
        tok.save(str(tmp / "tokenizer.json"))
        results = [measure(base, n, tmp / "tokenizer.json", tmp) for n in args.sizes]
    for r in results:
        print(f"{r['rows']:>8,} rows: {r['windows']:>11,} windows in {r['seconds']:6.1f} s "
              f"({r['windows'] / r['seconds']:,.0f} windows/s), peak RSS {r['peak_rss_mb']:.0f} MB")
    if len(results) > 1:
        print(f"peak RSS {results[-1]['rows']:,} / {results[0]['rows']:,} rows: {results[-1]['peak_rss_mb'] / results[0]['peak_rss_mb']:.2f} (target < 1.30)")


if __name__ == "__main__":
    main()
