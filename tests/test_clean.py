"""Dedup (exact + MinHash), decontamination and Great Expectations validation."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pyarrow as pa
import pytest

from conftest import DATA, QUICKSTART

TRAIN = [json.loads(l) for l in (DATA / "gsm8k" / "train.head1000.jsonl").read_text().splitlines()]
TEST = [json.loads(l) for l in (DATA / "gsm8k" / "test.head200.jsonl").read_text().splitlines()]


def _write(tmp_path, name, rows):
    (tmp_path / name).write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def _swap(text: str, rng: random.Random) -> str:
    """Swap two neighbouring, different, purely alphabetic words."""
    words = text.split(" ")
    spots = [i for i in range(len(words) - 1)
             if words[i].isalpha() and words[i + 1].isalpha() and words[i].lower() != words[i + 1].lower()]
    i = rng.choice(spots)
    words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def test_text_tokens_match_a_plain_python_tokeniser():
    from factory.clean.text import Normalization, normalize, tokenize, words

    texts = ["Natalia sold 48/2 = 24 clips!", "  ÉCOLE  café—naïve x2 ", "", "###", "ａｂｃ１２３ Full-width"]
    norm = normalize(pa.array(texts), Normalization())
    tok = tokenize(norm)
    expected = [words(t) for t in norm.to_pylist()]
    assert tok.counts.tolist() == [len(w) for w in expected]
    assert expected[4][:1] == ["abc123"]                       # NFKC folds full-width forms
    # equal tokens hash equal wherever they are
    flat = [w for ws in expected for w in ws]
    by_word: dict[str, set[int]] = {}
    for w, h in zip(flat, tok.hashes.tolist()):
        by_word.setdefault(w, set()).add(h)
    assert all(len(v) == 1 for v in by_word.values())
    assert len({next(iter(v)) for v in by_word.values()}) == len(by_word)


def test_minhash_estimates_jaccard():
    from factory.clean.minhash import signatures

    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 400, dtype=np.uint64)
    other = base.copy()
    other[:100] = rng.integers(0, 2**63, 100, dtype=np.uint64)      # J = 300 / 500 = 0.6
    sigs = signatures(np.concatenate((base, other)), np.array([400, 400]), 128, seed=1)
    est = float(np.mean(sigs[0] == sigs[1]))
    assert abs(est - 0.6) < 0.12


def dedup_recipe(extra_sources: str = "", dedup: str = "{}") -> str:
    return f"""
        name: t
        sources:
          - name: a
            path: a.jsonl
            fields: {{question: question, answer: answer}}
            domain: math
          {extra_sources}
        dedup: {dedup}
    """


def _true_jaccard(a: str, b: str, n: int = 5) -> float:
    """Reference Jaccard of word 5-gram sets, in plain Python (independent of the numpy path)."""
    import unicodedata

    def grams(t: str) -> set[tuple[str, ...]]:
        w = re.findall(r"[0-9a-z\u0080-\U0010FFFF]+", unicodedata.normalize("NFKC", t).lower())
        return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)} if len(w) >= n else {tuple(w)}

    x, y = grams(a), grams(b)
    return len(x & y) / len(x | y)


def test_exact_near_and_number_variants(tmp_path, run_recipe):
    rng = random.Random(3)
    base = TRAIN[:120]
    rows = [dict(r) for r in base]
    planted = {}
    for k, r in enumerate(base[:40]):                 # exact after normalisation: case + spaces + punctuation
        planted[len(rows)] = ("exact", k)
        rows.append({"question": "  " + r["question"].upper().replace(" ", "  ") + " !!", "answer": r["answer"]})
    for k, r in enumerate(base[40:80], start=40):     # near: one adjacent word swap in the answer
        planted[len(rows)] = ("near", k)
        rows.append({"question": r["question"], "answer": _swap(r["answer"], rng)})
    for k, r in enumerate(base[80:120], start=80):    # numbers: the first number changed
        if not re.search(r"\d+", r["question"]):
            continue
        planted[len(rows)] = ("numbers", k)
        rows.append({"question": re.sub(r"\d+", lambda m: str(int(m.group()) + 7), r["question"], count=1), "answer": r["answer"]})
    _write(tmp_path, "a.jsonl", rows)
    result, out, quarantined = run_recipe(dedup_recipe())
    by_row = {q["source_row"]: q for q in quarantined if q["stage"] == "dedup"}
    kept = {r["source"]["row"]: r for r in out}
    near_found = near_below = 0
    for row, (kind, origin) in planted.items():
        if kind == "exact":
            assert by_row[row]["reason"].startswith("exact duplicate of ") and origin in kept
            assert json.loads(by_row[row]["detail"])["kept_id"] == kept[origin]["id"]
        elif kind == "near":
            truth = _true_jaccard(base[origin]["question"] + "\n" + base[origin]["answer"], rows[row]["question"] + "\n" + rows[row]["answer"])
            if truth >= 0.8:
                near_found += 1
                assert by_row[row]["reason"].startswith(f"near-duplicate of {kept[origin]['id']} (jaccard 0.")
                assert json.loads(by_row[row]["detail"])["jaccard"] == pytest.approx(truth, abs=1e-3)
            else:
                assert row in kept          # below the threshold: a different row
                near_below += 1
        else:
            assert row in kept and origin in kept, "rows differing only in numbers were merged"
    for r in out:
        assert r["kept"] is True and r["cluster_id"] is not None and r["cluster_size"] >= 1
    assert kept[0]["cluster_size"] == 2 and kept[0]["cluster_id"] == kept[0]["id"]
    report = result.manifest["reports"]["dedup"]
    assert near_found >= 30 and near_found + near_below == 40
    assert report["exact_removed"] == 40 and report["near_removed"] == near_found
    raw = json.loads(by_row[120]["raw"])
    assert raw["kept"] is False and raw["cluster_id"] == kept[0]["id"]


def test_kept_row_by_priority_steps_then_source_order(tmp_path, run_recipe):
    rows = [{"question": r["question"], "answer": r["answer"]} for r in TRAIN[:5]]
    _write(tmp_path, "a.jsonl", rows)   # plain answers (no trace): first source
    _write(tmp_path, "b.jsonl", rows)   # same rows parsed as GSM8K traces: second source, has steps
    _write(tmp_path, "c.jsonl", rows)   # same as a, later source
    extra = """- {name: b, path: b.jsonl, fields: {question: question, answer: answer}, trace_format: gsm8k, domain: math}
          - {name: c, path: c.jsonl, fields: {question: question, answer: answer}, domain: math}"""
    _, out, quarantined = run_recipe(dedup_recipe(extra, "{fields: [question]}"))
    assert {r["source"]["name"] for r in out} == {"b"}              # rows with reasoning steps win
    assert len(quarantined) == 10 and all(q["source_name"] in ("a", "c") for q in quarantined)
    extra = """- {name: c, path: c.jsonl, fields: {question: question, answer: answer}, domain: math}"""
    _, out, _ = run_recipe(dedup_recipe(extra, "{fields: [question]}"))
    assert {r["source"]["name"] for r in out} == {"a"}              # then the earlier source


def test_short_texts_are_one_shingle(tmp_path, run_recipe):
    rows = [{"question": q, "answer": "4"} for q in ["What is 2+2?", "what is 2 + 2", "What is 2+3?", "Name a colour.", "Name a color."]]
    _write(tmp_path, "a.jsonl", rows)
    _, out, quarantined = run_recipe(dedup_recipe())
    assert sorted(r["question"] for r in out) == sorted(["Name a colour.", "Name a color.", "What is 2+2?", "What is 2+3?"])
    assert [q["reason"].split(" of ")[0] for q in quarantined] == ["exact duplicate"]


def test_decontamination_catches_planted_test_questions(tmp_path, run_recipe):
    rng = random.Random(11)

    def disguise(q: str) -> str:
        q = "".join(c.upper() if rng.random() < 0.15 else c for c in q)
        q = q.replace(" ", "   ", 3).replace(",", " ;").replace("?", " ?!")
        return "\t" + q + "  "

    planted = [{"question": disguise(r["question"]), "answer": "#### 0"} for r in TEST]
    rows = planted + [{"question": r["question"], "answer": r["answer"]} for r in TRAIN]
    rng.shuffle(rows)
    _write(tmp_path, "a.jsonl", rows)
    result, out, quarantined = run_recipe(dedup_recipe(dedup=f"""
          exact: false
          minhash: null
          decontaminate:
            - {{name: gsm8k-test, path: {DATA / 'gsm8k' / 'test.head200.jsonl'}, field: question}}"""))
    contaminated = [q for q in quarantined if q["stage"] == "decontaminate"]
    assert len(contaminated) == 200
    assert all(json.loads(q["raw"])["answer"] == "#### 0" for q in contaminated)
    assert len(out) == 1000
    first = contaminated[0]
    assert first["reason"].startswith("contaminated: shares a 13-gram with gsm8k-test: '")
    assert json.loads(first["detail"])["benchmark"] == "gsm8k-test"
    table = result.manifest["reports"]["decontaminate"]["benchmarks"][0]
    assert table["rows_contaminated"] == 200 and table["items"] == 200 and table["rows_checked"] == 1200


def test_validation_quarantines_exactly_the_planted_violations(tmp_path):
    import pyarrow.parquet as pq

    from factory.clean.validate import Validate
    from factory.recipe import load_recipe
    from factory.recipe.model import ValidateOptions
    from factory.pipeline import run
    from factory.stages import StageContext

    loaded = load_recipe(QUICKSTART)
    result = run(loaded, tmp_path / "qs", limit=20)
    table = pa.concat_tables([pq.read_table(tmp_path / "qs" / s["path"]) for s in result.manifest["shards"]])
    rows = table.to_pylist()
    qa = [i for i, r in enumerate(rows) if r["kind"] == "qa" and r["trace_format"] == "gsm8k"]
    pref = [i for i, r in enumerate(rows) if r["kind"] == "preference"]
    planted = {}
    rows[qa[0]]["answer"] = ""
    planted[qa[0]] = "answer non-empty and within bounds"
    rows[qa[1]]["domain"] = "astrology"
    planted[qa[1]] = "domain in the recipe's set"
    rows[qa[2]]["steps"] = []
    planted[qa[2]] = "steps non-empty for CoT rows"
    rows[pref[0]]["rejected"] = rows[pref[0]]["chosen"]
    planted[pref[0]] = "chosen != rejected"
    dup = dict(rows[qa[3]])
    rows.append(dup)
    planted[len(rows) - 1] = "id unique"
    bad = pa.Table.from_pylist(rows, schema=table.schema)
    stage = Validate(StageContext.of(loaded), ValidateOptions())
    out = stage.run(bad)
    rejected = out.rejected.to_dicts()
    # rejected rows come back in table order: exactly the planted ones, each naming its expectation
    assert [r["reason"].split(" (")[0] for r in rejected] == [f"failed expectation: {planted[i]}" for i in sorted(planted)]
    assert all(json.loads(r["detail"])["name"] == planted[i] for r, i in zip(rejected, sorted(planted)))
    assert out.kept.num_rows == bad.num_rows - len(planted)
    assert set(out.files) == {"validation/qa.json", "validation/conversation.json", "validation/preference.json"}
    qa_report = json.loads(out.files["validation/qa.json"])
    failed = {e["name"]: e["unexpected_count"] for e in qa_report["results"] if not e["success"]}
    assert failed == {"id unique": 1, "domain in the recipe's set": 1, "answer non-empty and within bounds": 1,
                      "steps non-empty for CoT rows": 1}


def test_full_cleaning_recipe_books_and_rerun_identity(tmp_path, run_recipe):
    text = QUICKSTART.read_text().replace("path: data/", f"path: {DATA}/")   # steps + dedup + decontaminate + validate
    result, out, quarantined = run_recipe(text)
    m = result.manifest
    names = [s["stage"] for s in m["stages"]]
    assert names == ["read", "map", "standardize", "unique_ids", "dedup", "steps", "decontaminate", "validate", "shards"]
    for s in m["stages"]:
        assert s["rows_in"] + s["added"] == s["rows_out"] + s["quarantined"], s
    assert (result.out / "validation" / "qa.json").exists()
    assert set(m["reports"]) == {"dedup", "steps", "decontaminate", "validate", "lengths", "exports"}
    first = {p.relative_to(result.out): p.read_bytes() for p in result.out.rglob("*") if p.is_file() and p.name != "run.json"}
    result2, _, _ = run_recipe(text)
    second = {p.relative_to(result2.out): p.read_bytes() for p in result2.out.rglob("*") if p.is_file() and p.name != "run.json"}
    assert first == second
