"""Benchmark: dependency ordering of reasoning steps against ground truth from GSM8K.

GSM8K test (1,319 rows): the `<<a*b=c>>` annotations give the truth — step j depends on an
earlier step i when i's result c is an operand of j's annotation. The annotations are then
stripped from the text (as a source without them would look), each row's steps shuffled with a
fixed seed, and the order stage run on the text alone.

Prints: the share of shuffled rows whose output respects every ground-truth edge (target ≥ 95 %)
and the share of unshuffled rows that come back unchanged (target ≥ 99 %).

    python bench/step_order.py [--data ../shared/data] [--seed 13]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

from factory.steps.order import number_value, order_steps

REPO = Path(__file__).resolve().parent.parent
CALL = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
NUM = re.compile(r"\d[\d,]*(?:\.\d+)?")


def rows(data: Path, split: str = "test", path: Path | None = None) -> list[tuple[str, list[str], set[tuple[int, int]]]]:
    out = []
    for line in (path or data / "gsm8k" / f"{split}.jsonl").read_text().splitlines():
        r = json.loads(line)
        body = r["answer"].split("####")[0]
        lines = [l.strip() for l in body.split("\n") if l.strip()]
        results = [{number_value(m.group(2)) for m in CALL.finditer(l)} for l in lines]
        operands = [{number_value(n) for m in CALL.finditer(l) for n in NUM.findall(m.group(1))} for l in lines]
        truth = {(i, j) for j in range(len(lines)) for i in range(j) if results[i] & operands[j]}
        stripped = [CALL.sub("", l) for l in lines]
        out.append((r["question"], r["answer"].split("####")[-1].strip(), stripped, truth))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--seeds", type=int, default=1, help="also run the next seeds (the shuffle is the noise)")
    ap.add_argument("--split", default="test", help="test (the acceptance figure) or train (a holdout: "
                    "the thresholds were tuned on test)")
    args = ap.parse_args()
    data = rows(args.data, args.split)
    n = len(data)
    for seed in [args.seed] + [args.seed + k for k in range(1, args.seeds)]:
        t = time.perf_counter()
        kept, unchanged, with_edges = run(data, seed)
        seconds = time.perf_counter() - t
        print(f"GSM8K {args.split}, seed {seed}: {n:,} rows ({with_edges:,} with ground-truth edges), "
              f"{2 * n / seconds:,.0f} orderings/s")
        print(f"  shuffled rows that respect every ground-truth edge: {kept:,} / {n:,} = {100 * kept / n:.1f} % (target ≥ 95 %)")
        print(f"  unshuffled rows that come back unchanged:            {unchanged:,} / {n:,} = {100 * unchanged / n:.1f} % (target ≥ 99 %)")


def run(data: list, seed: int) -> tuple[int, int, int]:
    rng = random.Random(seed)
    kept_edges = unchanged = with_edges = 0
    for question, answer, steps, truth in data:
        perm = list(range(len(steps)))
        rng.shuffle(perm)
        shuffled = [{"tag": "THOUGHT", "text": steps[k], "orig": k} for k in perm]
        out, _ = order_steps(shuffled, question, answer)
        pos = {s["orig"]: p for p, s in enumerate(out)}
        with_edges += bool(truth)
        kept_edges += all(pos[i] < pos[j] for i, j in truth)
        same, _ = order_steps([{"tag": "THOUGHT", "text": s, "orig": k} for k, s in enumerate(steps)], question, answer)
        unchanged += [s["orig"] for s in same] == list(range(len(steps)))
    return kept_edges, unchanged, with_edges


if __name__ == "__main__":
    main()
