"""Benchmark: near-duplicate detection — ours vs datasketch's per-document loop vs rensa.

Corpus (≥ 200k rows): every question/answer pair of GSM8K, AQuA-RAT, StrategyQA, counsel-chat,
HH-RLHF, Self-Instruct and Marco-o1 in ../shared/data, plus 12 edited copies of each, the edits
recorded (seeded): `exact` (case, whitespace, punctuation), `light` (one or two neighbouring-word
swaps or dropped words, numbers untouched), `heavy` (a quarter of the words replaced), `numbers`
(one number changed: must never be merged). Ground truth is computed by a plain-Python reference (NFKC,
lowercase, word 5-grams as tuples): a planted pair is a near-duplicate when its Jaccard ≥ 0.8.

Each method runs in its own process (peak RSS is its own) and sees the same rows:
- ours: the `dedup` stage (normalise → numpy tokens/shingles/signatures → datasketch LSH →
  verified Jaccard → components), from raw text;
- datasketch: per document `MinHash.update` over the 5-gram strings + `MinHashLSH` (16 × 8),
  insert and query (on a slice of the corpus: it is slow), shingling in Python;
- rensa: `RMinHash` + `RMinHashLSH` (16 bands), same shingling in Python, whole corpus.
Recall: planted pairs with J ≥ 0.8 that end up together; precision: removed/matched pairs whose
reference Jaccard is ≥ 0.8 (a sample for the baselines' pair lists).

Then the whole no-teacher pipeline runs on the corpus (JSONL source → dedup → validation) and
the bench prints the Great Expectations stage's share of the wall time.

    python bench/dedup.py [--data ../shared/data] [--copies 12] [--datasketch-docs 10000]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
THRESHOLD = 0.8
_WORD = re.compile(r"[0-9a-z\u0080-\U0010FFFF]+")


# ---- corpus ------------------------------------------------------------------------------

def originals(data: Path) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in ("train.jsonl", "test.jsonl"):
        out += [(r["question"], r["answer"]) for r in map(json.loads, (data / "gsm8k" / name).read_text().splitlines())]
    for name in ("dev.json", "test.json"):
        out += [(r["question"], r["rationale"]) for r in map(json.loads, (data / "aqua_rat" / name).read_text().splitlines())]
    for name in ("train.json", "dev.json"):
        out += [(r["question"], " ".join(r["facts"])) for r in json.loads((data / "strategyqa" / name).read_text())]
    rows = csv.DictReader(io.StringIO((data / "counsel_chat" / "20200325_counsel_chat.csv").read_text(encoding="utf-8"), newline=""))
    out += [(r["questionText"], r["answerText"]) for r in rows]
    with gzip.open(data / "hh_rlhf" / "helpful-base" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        for r in map(json.loads, f):
            first = r["chosen"].split("\n\nAssistant:")[0].replace("\n\nHuman:", "").strip()
            out.append((first, r["chosen"]))
    out += [(r["instruction"], r["instances"][0]["output"])
            for r in map(json.loads, (data / "self_instruct_human" / "seed_tasks.jsonl").read_text().splitlines())]
    out += [(r["instruction"], r["response"]) for r in json.loads((data / "marco_o1_cot" / "CoT_demo.json").read_text())]
    return [(q, a) for q, a in out if (q + a).strip()]


def _case_ws(text: str, rng: random.Random) -> str:
    text = "".join(c.upper() if rng.random() < 0.1 else c for c in text)
    text = re.sub(r" ", lambda m: "  " if rng.random() < 0.1 else " ", text)
    return text.replace(",", " ,").replace(".", " .") + rng.choice(["", " !", "  ", "\n"])


def _light(text: str, rng: random.Random) -> str:
    """One or two edits that leave every number alone (a number edit is its own category)."""
    words = text.split(" ")
    plain = [i for i, w in enumerate(words) if not any(c.isdigit() for c in w)]
    if len(plain) < 3:
        return text + " indeed"
    for _ in range(rng.choice([1, 1, 2])):
        plain = [i for i, w in enumerate(words) if not any(c.isdigit() for c in w)]
        pairs = [i for i in plain if i + 1 < len(words) and not any(c.isdigit() for c in words[i + 1])]
        if rng.random() < 0.7 and pairs:
            i = rng.choice(pairs)
            words[i], words[i + 1] = words[i + 1], words[i]
        else:
            del words[rng.choice(plain)]
    return " ".join(words)


def _heavy(text: str, rng: random.Random, vocab: list[str]) -> str:
    words = text.split(" ")
    for i in rng.sample(range(len(words)), max(1, len(words) // 4)):
        words[i] = rng.choice(vocab)
    return " ".join(words)


def _numbers(q: str, a: str, rng: random.Random) -> tuple[str, str] | None:
    for which in (0, 1):
        text = (q, a)[which]
        nums = list(re.finditer(r"\d+", text))
        if nums:
            m = rng.choice(nums)
            new = text[: m.start()] + str(int(m.group()) + rng.randint(1, 9)) + text[m.end():]
            return (new, a) if which == 0 else (q, new)
    return None


def build(data: Path, copies: int, seed: int = 7) -> tuple[list[dict], list[dict]]:
    """Rows (id, question, answer) and the planted truth (variant row, origin row, edit)."""
    rng = random.Random(seed)
    base = originals(data)
    vocab = sorted({w for q, a in base[:2000] for w in (q + " " + a).split() if w.isalpha()})
    rows = [{"id": f"o{i}", "question": q, "answer": a} for i, (q, a) in enumerate(base)]
    truth: list[dict] = []
    edits = ["exact", "light", "light", "light", "light", "light", "heavy", "heavy", "numbers", "numbers", "exact", "light"]
    for i, (q, a) in enumerate(base):
        for c in range(copies):
            edit = edits[c % len(edits)]
            if edit == "exact":
                nq, na = _case_ws(q, rng), _case_ws(a, rng)
            elif edit == "light":
                nq, na = (q, _light(a, rng)) if len(a.split()) > 8 else (_light(q, rng), a)
            elif edit == "heavy":
                nq, na = _heavy(q, rng, vocab), _heavy(a, rng, vocab)
            else:
                changed = _numbers(q, a, rng)
                if changed is None:
                    continue
                nq, na = changed
            truth.append({"row": len(rows), "origin": i, "edit": edit})
            rows.append({"id": f"v{len(rows)}", "question": nq, "answer": na})
    order = list(range(len(rows)))
    rng.shuffle(order)                       # interleave, so no method benefits from locality
    position = {old: new for new, old in enumerate(order)}
    rows = [rows[k] for k in order]
    for t in truth:
        t["row"], t["origin"] = position[t["row"]], position[t["origin"]]
    return rows, truth


# ---- reference Jaccard -------------------------------------------------------------------

def ref_tokens(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def ref_shingles(text: str, n: int = 5) -> frozenset:
    w = ref_tokens(text)
    return frozenset(tuple(w[i:i + n]) for i in range(len(w) - n + 1)) if len(w) >= n else frozenset([tuple(w)])


class Reference:
    def __init__(self, rows: list[dict]):
        self.rows = rows
        self.cache: dict[int, frozenset] = {}

    def sets(self, i: int) -> frozenset:
        s = self.cache.get(i)
        if s is None:
            r = self.rows[i]
            s = self.cache[i] = ref_shingles(f"{r['question']}\n{r['answer'] or ''}")
        return s

    def jaccard(self, i: int, j: int) -> float:
        a, b = self.sets(i), self.sets(j)
        return len(a & b) / len(a | b) if a | b else 1.0

    def numbers(self, i: int) -> tuple:
        r = self.rows[i]
        return tuple(t for t in ref_tokens(f"{r['question']}\n{r['answer'] or ''}") if any(c.isdigit() for c in t))


# ---- methods (each in its own process) ---------------------------------------------------

def _components(n: int, pairs) -> list[int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(n)]


def run_ours(rows: list[dict]) -> dict:
    import polars as pl

    from factory.clean.dedup import Dedup
    from factory.recipe.model import DedupOptions
    from factory.rows import conform

    n = len(rows)
    df = pl.DataFrame({
        "id": [r["id"] for r in rows], "question": [r["question"] for r in rows], "answer": [r["answer"] for r in rows],
        "domain": ["bench"] * n, "kind": ["qa"] * n, "split": ["train"] * n, "trace_format": ["none"] * n,
    }).with_columns(source=pl.struct(name=pl.lit("bench"), path=pl.lit("bench"), split=pl.lit("train"),
                                     row=pl.int_range(pl.len(), dtype=pl.Int64), line=pl.lit(None, dtype=pl.Int64),
                                     license=pl.lit(None, dtype=pl.String)),
                    recipe=pl.struct(name=pl.lit("bench"), sha=pl.lit("0")))
    table = conform(df)

    class _Ctx:
        source_order = {"bench": 0}

    import gc

    import datasketch  # noqa: F401  (imported before the clock, as for the other two methods)

    from factory.pipeline import _arrow_memory_pool

    gc.disable()                      # as in a pipeline run (factory.pipeline.run)
    with _arrow_memory_pool():
        t = time.perf_counter()
        result = Dedup(_Ctx(), DedupOptions(), threads=2).run(table)   # type: ignore[arg-type]
        seconds = time.perf_counter() - t
    gc.enable()
    index = {r["id"]: k for k, r in enumerate(rows)}
    kept = result.kept.column("id").to_pylist()
    cluster = result.kept.column("cluster_id").to_pylist()
    root = list(range(n))
    for rid, cid in zip(kept, cluster):
        root[index[rid]] = index[cid]
    removed = [(index[r["id"]], index[r["cluster_id"]]) for r in result.rejected.select("id", "cluster_id").to_dicts()]
    for i, k in removed:
        root[i] = k
    return {"seconds": seconds, "root": root, "pairs": removed, "report": result.report}


def _py_shingles(rows: list[dict]) -> list[list[str]]:
    out = []
    for r in rows:
        w = ref_tokens(f"{r['question']}\n{r['answer'] or ''}")
        out.append([" ".join(w[i:i + 5]) for i in range(len(w) - 4)] if len(w) >= 5 else [" ".join(w)])
    return out


def run_datasketch(rows: list[dict]) -> dict:
    from datasketch import MinHash, MinHashLSH

    t = time.perf_counter()
    shingles = _py_shingles(rows)
    lsh = MinHashLSH(num_perm=128, params=(16, 8))
    sketches = []
    for i, sh in enumerate(shingles):
        m = MinHash(num_perm=128, seed=1)
        for s in sh:
            m.update(s.encode())
        sketches.append(m)
        lsh.insert(i, m, check_duplication=False)
    pairs = [(i, j) for i, m in enumerate(sketches) for j in lsh.query(m) if j > i]
    return {"seconds": time.perf_counter() - t, "root": _components(len(rows), pairs), "pairs": pairs}


def run_rensa(rows: list[dict]) -> dict:
    from rensa import RMinHash, RMinHashLSH

    t = time.perf_counter()
    shingles = _py_shingles(rows)
    lsh = RMinHashLSH(threshold=THRESHOLD, num_perm=128, num_bands=16)
    sketches = []
    for i, sh in enumerate(shingles):
        m = RMinHash(num_perm=128, seed=1)
        m.update(sh)
        sketches.append(m)
        lsh.insert(i, m)
    pairs = [(i, j) for i, m in enumerate(sketches) for j in lsh.query(m) if j > i]
    return {"seconds": time.perf_counter() - t, "root": _components(len(rows), pairs), "pairs": pairs}


METHODS = {"ours": run_ours, "datasketch": run_datasketch, "rensa": run_rensa}


def child(method: str, corpus: Path, limit: int | None, out: Path) -> None:
    rows = json.loads(corpus.read_text())
    if limit:
        rows = rows[:limit]
    result = METHODS[method](rows)
    result["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["docs"] = len(rows)
    out.write_text(json.dumps(result))


# ---- scoring -----------------------------------------------------------------------------

def score(result: dict, truth: list[dict], ref: Reference, rng: random.Random, sample: int = 20000) -> dict:
    n = result["docs"]
    root = result["root"]
    pos = [t for t in truth if t["row"] < n and t["origin"] < n and t["edit"] != "numbers"
           and ref.jaccard(t["row"], t["origin"]) >= THRESHOLD]
    found = sum(root[t["row"]] == root[t["origin"]] for t in pos)
    nums = [t for t in truth if t["row"] < n and t["origin"] < n and t["edit"] == "numbers"]
    merged_numbers = sum(root[t["row"]] == root[t["origin"]] for t in nums)
    pairs = result["pairs"]
    checked = rng.sample(pairs, min(sample, len(pairs))) if pairs else []
    good = sum(ref.jaccard(i, j) >= THRESHOLD and ref.numbers(i) == ref.numbers(j) for i, j in checked)
    return {"positives": len(pos), "recall": found / len(pos) if pos else 1.0,
            "precision": good / len(checked) if checked else 1.0, "pairs_checked": len(checked),
            "number_pairs": len(nums), "number_pairs_merged": merged_numbers}


def pipeline_share(rows: list[dict], tmp: Path, repeats: int = 2) -> dict:
    """The whole no-teacher pipeline on the corpus, with and without validation (interleaved
    repeats; the fastest of each kept, as the machine's noise only ever adds time)."""
    src = tmp / "corpus.jsonl"
    src.write_text("\n".join(json.dumps({"question": r["question"], "answer": r["answer"]}) for r in rows) + "\n")
    out: dict[str, dict] = {}
    for name, validate in [v for _ in range(repeats) for v in (("with_validation", "validate: {}"), ("without_validation", ""))]:
        recipe = tmp / f"{name}.yaml"
        recipe.write_text(textwrap.dedent(f"""
            name: bench-{name.replace('_', '-')}
            sources:
              - {{name: corpus, path: corpus.jsonl, fields: {{question: question, answer: answer}}, domain: bench}}
            dedup: {{}}
            {validate}
        """))
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "factory", "run", str(recipe), "-q", "-o", str(tmp / name)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode:
            raise SystemExit(proc.stderr)
        run_json = json.loads((tmp / name / "run.json").read_text())
        if name not in out or run_json["seconds"]["total"] < out[name]["seconds"]["total"]:
            out[name] = {"wall": wall, "seconds": run_json["seconds"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--copies", type=int, default=12)
    ap.add_argument("--datasketch-docs", type=int, default=10000)
    ap.add_argument("--child", nargs=4, metavar=("METHOD", "CORPUS", "LIMIT", "OUT"))
    args = ap.parse_args()
    if args.child:
        method, corpus, limit, out = args.child
        child(method, Path(corpus), int(limit) or None, Path(out))
        return

    with tempfile.TemporaryDirectory(prefix="cot-dedup-bench-") as tmpdir:
        tmp = Path(tmpdir)
        t = time.perf_counter()
        rows, truth = build(args.data, args.copies)
        corpus = tmp / "rows.json"
        corpus.write_text(json.dumps(rows))
        counts: dict[str, int] = {}
        for tr in truth:
            counts[tr["edit"]] = counts.get(tr["edit"], 0) + 1
        print(f"corpus: {len(rows):,} rows ({len(rows) - len(truth):,} originals; planted {counts}), built in {time.perf_counter() - t:.1f} s")
        ref = Reference(rows)
        results = {}
        for method, limit in (("ours", 0), ("rensa", 0), ("datasketch", args.datasketch_docs)):
            out = tmp / f"{method}.json"
            subprocess.run([sys.executable, __file__, "--child", method, str(corpus), str(limit), str(out)], check=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
            res = json.loads(out.read_text())
            res["score"] = score(res, truth, ref, random.Random(1))
            results[method] = res
        print(f"\n{'method':<12}{'docs':>9}{'seconds':>9}{'docs/s':>10}{'RSS MiB':>9}{'recall':>8}{'precision':>10}{'number pairs merged':>21}")
        for method, res in results.items():
            s = res["score"]
            print(f"{method:<12}{res['docs']:>9,}{res['seconds']:>9.2f}{res['docs'] / res['seconds']:>10,.0f}{res['rss_mib']:>9,.0f}"
                  f"{s['recall']:>8.3f}{s['precision']:>10.3f}{s['number_pairs_merged']:>12,} / {s['number_pairs']:,}")
        speed = {m: r["docs"] / r["seconds"] for m, r in results.items()}
        print(f"\nours / datasketch loop: {speed['ours'] / speed['datasketch']:.1f}×   ours / rensa: {speed['ours'] / speed['rensa']:.2f}×")
        print("ours, by phase (s):", results["ours"]["report"]["seconds"])
        share = pipeline_share(rows, tmp)
        w, wo = share["with_validation"], share["without_validation"]
        v = w["seconds"].get("validate", 0.0)
        print(f"\npipeline on the corpus: {w['seconds']['total']:.2f} s with validation (validate stage {v:.2f} s = "
              f"{100 * v / w['seconds']['total']:.1f} %), {wo['seconds']['total']:.2f} s without "
              f"(difference {100 * (w['seconds']['total'] - wo['seconds']['total']) / w['seconds']['total']:.1f} % of the run)")


if __name__ == "__main__":
    main()
