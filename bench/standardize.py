"""Benchmark: sources → standardise → shards against a plain read+write ceiling, in one run.

Corpus: the whole of GSM8K train+test, AQuA-RAT dev+test, StrategyQA train+dev and counsel-chat
from ../shared/data, each replicated ×10 (~137k rows). Both sides read the same files and write
zstd Parquet; each side runs in its own process (so peak RSS is its own), three times, medians
reported. The ceiling is what pyarrow.json / polars do with no mapping, no standardisation,
no ids, no quarantine, no manifest.

    python bench/standardize.py [--data ../shared/data] [--times 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def build_corpus(data: Path, out: Path, times: int) -> dict[str, int]:
    """Replicate the datasets ``times`` over, in their original formats."""
    import csv
    import io

    counts = {}
    gsm = b"".join((data / "gsm8k" / f).read_bytes() for f in ("train.jsonl", "test.jsonl"))
    (out / "gsm8k.jsonl").write_bytes(gsm * times)
    counts["gsm8k"] = gsm.count(b"\n") * times
    aqua = b"".join((data / "aqua_rat" / f).read_bytes() for f in ("dev.json", "test.json"))
    (out / "aqua.jsonl").write_bytes(aqua * times)
    counts["aqua"] = aqua.count(b"\n") * times
    sqa = json.loads((data / "strategyqa" / "train.json").read_text()) + json.loads((data / "strategyqa" / "dev.json").read_text())
    (out / "strategyqa.json").write_text(json.dumps(sqa * times, indent=1))
    counts["strategyqa"] = len(sqa) * times
    text = (data / "counsel_chat" / "20200325_counsel_chat.csv").read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(rows[0])
    for _ in range(times):
        w.writerows(rows[1:])
    (out / "counsel.csv").write_text(buf.getvalue(), encoding="utf-8")
    counts["counsel"] = (len(rows) - 1) * times
    return counts


RECIPE = """
name: bench
sources:
  - {name: gsm8k, path: gsm8k.jsonl, fields: {question: question, answer: answer}, trace_format: gsm8k, domain: math}
  - {name: aqua, path: aqua.jsonl, fields: {question: question, trace: rationale, options: options, answer: correct}, trace_format: aqua, domain: math}
  - {name: strategyqa, path: strategyqa.json, fields: {question: question, answer: answer, subquestions: decomposition, facts: facts}, trace_format: strategyqa, domain: commonsense}
  - name: counsel
    kind: conversation
    path: counsel.csv
    fields: {turns: [{role: client, content: [questionTitle, questionText]}, {role: therapist, content: answerText}]}
    roles: {client: user, therapist: assistant}
    domain: mental-health
shards: {max_rows: 50000}
"""

FACTORY = """
import time, sys
from pathlib import Path
from factory.pipeline import run
from factory.recipe import load_recipe
corpus = Path(sys.argv[1])
t = time.perf_counter()
result = run(load_recipe(corpus / "bench.yaml"), corpus / "out-factory")
print(time.perf_counter() - t, result.manifest["rows"])
"""

CEILING = """
import time, sys
from pathlib import Path
import polars as pl, pyarrow.json as pj, pyarrow.parquet as pq
corpus = Path(sys.argv[1]); out = corpus / "out-plain"; out.mkdir(exist_ok=True)
t = time.perf_counter()
rows = 0
for name in ("gsm8k.jsonl", "aqua.jsonl"):
    table = pj.read_json(corpus / name)
    pq.write_table(table, out / (name + ".parquet"), compression="zstd"); rows += table.num_rows
df = pl.read_json(corpus / "strategyqa.json"); df.write_parquet(out / "strategyqa.parquet", compression="zstd"); rows += df.height
df = pl.read_csv(corpus / "counsel.csv"); df.write_parquet(out / "counsel.parquet", compression="zstd"); rows += df.height
print(time.perf_counter() - t, rows)
"""


def measure(code: str, corpus: Path) -> tuple[float, int, float]:
    """(seconds, rows, peak RSS MiB) of ``code`` in a fresh process."""
    import os

    # Both sides get the machine as it is (OMP_NUM_THREADS would cap pyarrow's thread pool).
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "POLARS_MAX_THREADS")}
    proc = subprocess.run([sys.executable, "-c", code, str(corpus)], capture_output=True, text=True, check=True, env=env)
    # ru_maxrss of children is the max over every child so far: each run is made from its own
    # wrapper process (measure_isolated) so that the figure is that run's alone.
    seconds, rows = proc.stdout.split()
    return float(seconds), int(rows), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def measure_isolated(which: str, corpus: Path) -> tuple[float, int, float]:
    proc = subprocess.run([sys.executable, __file__, "--one", which, "--corpus", str(corpus)],
                          capture_output=True, text=True, check=True)
    seconds, rows, rss = proc.stdout.split()
    return float(seconds), int(rows), float(rss)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--times", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one", choices=["factory", "ceiling"])
    ap.add_argument("--corpus", type=Path)
    args = ap.parse_args()
    if args.one:
        seconds, rows, rss = measure(FACTORY if args.one == "factory" else CEILING, args.corpus)
        print(seconds, rows, rss)
        return

    with tempfile.TemporaryDirectory(prefix="cot-bench-") as tmp:
        corpus = Path(tmp)
        counts = build_corpus(args.data, corpus, args.times)
        (corpus / "bench.yaml").write_text(textwrap.dedent(RECIPE))
        total = sum(counts.values())
        print(f"corpus: {total:,} rows ({', '.join(f'{k} {v:,}' for k, v in counts.items())}), "
              f"{sum(p.stat().st_size for p in corpus.iterdir() if p.is_file()) / 2**20:.0f} MiB")
        results: dict[str, list[tuple[float, int, float]]] = {"factory": [], "ceiling": []}
        for _ in range(args.repeats):
            for which in ("ceiling", "factory"):     # interleaved: machine noise hits both alike
                results[which].append(measure_isolated(which, corpus))
        summary = {}
        for which, runs in results.items():
            secs = statistics.median(r[0] for r in runs)
            rows = runs[0][1]
            rss = statistics.median(r[2] for r in runs)
            summary[which] = (secs, rows, rss)
            print(f"{which:>8}: {rows:,} rows in {secs:.2f} s = {rows / secs:,.0f} rows/s, peak RSS {rss:,.0f} MiB "
                  f"(runs: {', '.join(f'{r[0]:.2f}s' for r in runs)})")
        f, c = summary["factory"], summary["ceiling"]
        # Each repeat times both sides back to back, so a busy moment on the shared machine hits
        # both: the median of the paired ratios is the steadier figure.
        paired = sorted(cr[0] / fr[0] for fr, cr in zip(results["factory"], results["ceiling"]))
        print(f"ratio (medians):        factory rows/s = {100 * (f[1] / f[0]) / (c[1] / c[0]):.0f} % of the plain read+write ceiling")
        print(f"ratio (paired, median): factory rows/s = {100 * statistics.median(paired):.0f} % "
              f"(per repeat: {', '.join(f'{100 * p:.0f}' for p in paired)})")


if __name__ == "__main__":
    main()
