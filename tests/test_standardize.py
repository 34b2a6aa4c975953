"""Trace standardisation on real rows from the bundled samples (../shared/data originals)."""

from __future__ import annotations

import json
import re

import pytest

from conftest import DATA


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


GSM8K = _jsonl(DATA / "gsm8k" / "train.head1000.jsonl")[:300]
SOCRATIC = _jsonl(DATA / "gsm8k" / "test_socratic.head50.jsonl")
AQUA = _jsonl(DATA / "aqua_rat" / "dev.json")
STRATEGYQA = json.loads((DATA / "strategyqa" / "dev.json").read_text(encoding="utf-8"))
MARCO = json.loads((DATA / "marco_o1_cot" / "CoT_demo.json").read_text(encoding="utf-8"))


def qa_recipe(path, fields, trace_format, extra=""):
    return f"""
        name: t
        sources:
          - name: s
            path: {path}
            fields: {fields}
            trace_format: {trace_format}
            {extra}
    """


@pytest.mark.parametrize("mode", ["action", "strip", "inline"])
def test_gsm8k_steps_calculator_and_answer(run_recipe, mode):
    _, rows, quarantined = run_recipe(qa_recipe(DATA / "gsm8k" / "train.head1000.jsonl", "{question: question, answer: answer}",
                                                "gsm8k", f"trace_options: {{calculator: {mode}}}\n            limit: 300"))
    assert not quarantined and len(rows) == len(GSM8K)
    for row, rec in zip(rows, GSM8K):
        body, _, final = rec["answer"].rpartition("####")
        assert row["answer"] == final.strip() == row["gold_answer"]
        expected_lines = [l.strip() for l in body.split("\n") if l.strip()]
        assert len(row["steps"]) == len(expected_lines) >= 2
        for step, line in zip(row["steps"], expected_lines):
            calls = re.findall(r"<<([^<>=]*)=([^<>]*)>>", line)
            if mode == "action":
                assert step["text"] == re.sub(r"<<[^<>]*>>", "", line)
                assert [(c["input"], c["output"]) for c in step["calls"]] == calls
                assert all(c["tool"] == "calculator" for c in step["calls"])
                assert step["tag"] == ("ACTION" if calls else "THOUGHT")
            elif mode == "strip":
                assert step["text"] == re.sub(r"<<[^<>]*>>", "", line) and not step["calls"] and "<<" not in step["text"]
            else:
                assert step["text"] == line and not step["calls"]
            assert step["depends_on"] == []


def test_gsm8k_socratic_subquestions(run_recipe):
    _, rows, _ = run_recipe(qa_recipe(DATA / "gsm8k" / "test_socratic.head50.jsonl", "{question: question, answer: answer}", "gsm8k"))
    assert len(rows) == len(SOCRATIC)
    for row, rec in zip(rows, SOCRATIC):
        lines = [l for l in rec["answer"].split("\n")[:-1] if l.strip()]
        assert [sq["question"] for sq in row["subquestions"]] == [l.split(" ** ")[0].strip() for l in lines]
        assert [s["text"] for s in row["steps"]] == [re.sub(r"<<[^<>]*>>", "", l.split(" ** ")[1]).strip() for l in lines]
        assert [sq["answer"] for sq in row["subquestions"]] == [s["text"] for s in row["steps"]]


def test_gsm8k_garbled_traces_are_quarantined(tmp_path, run_recipe):
    rows = [
        {"question": "q1?", "answer": "She has 3 apples.\nShe eats one."},             # no ####
        {"question": "q2?", "answer": "#### 5"},                                       # no steps
        {"question": "q3?", "answer": "2*3 = <<2*3=6\nthen 6\n#### 6"},                # unbalanced
        {"question": "q4?", "answer": "a\nb\n#### "},                                  # empty answer
        {"question": "q5?", "answer": GSM8K[0]["answer"]},                             # fine
    ]
    (tmp_path / "g.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    _, out, quarantined = run_recipe(qa_recipe("g.jsonl", "{question: question, answer: answer}", "gsm8k"))
    assert [r["question"] for r in out] == ["q5?"]
    assert {q["source_line"]: q["reason"] for q in quarantined} == {
        1: "gsm8k: no '#### <answer>' line",
        2: "gsm8k: no reasoning lines before '####'",
        3: "gsm8k: unbalanced calculator annotation (<< without >>)",
        4: "gsm8k: empty answer after '####'",
    }
    assert all(q["stage"] == "standardize" and json.loads(q["raw"])["question"] for q in quarantined)


def test_aqua_rationale_options_and_letter(run_recipe):
    _, rows, quarantined = run_recipe(qa_recipe(DATA / "aqua_rat" / "dev.json",
                                                "{question: question, trace: rationale, options: options, answer: correct}", "aqua"))
    assert not quarantined and len(rows) == len(AQUA)
    summaries = 0
    for row, rec in zip(rows, AQUA):
        correct = next(o for o in rec["options"] if o.startswith(rec["correct"] + ")"))
        assert row["answer"] == correct.split(")", 1)[1].strip() == row["gold_answer"]
        assert [o["label"] for o in row["options"]] == ["A", "B", "C", "D", "E"]
        assert [s["text"] for s in row["steps"]] == [l.strip() for l in rec["rationale"].split("\n") if l.strip()]
        summaries += row["steps"][-1]["tag"] == "SUMMARY"
        assert all(s["tag"] == "THOUGHT" for s in row["steps"][:-1])
    assert summaries > len(rows) // 2      # most rationales close with 'Answer: C'-style lines


def test_aqua_bad_letter_is_quarantined(tmp_path, run_recipe):
    rec = dict(AQUA[0], correct="Z")
    (tmp_path / "a.jsonl").write_text(json.dumps(rec) + "\n")
    _, out, quarantined = run_recipe(qa_recipe("a.jsonl", "{question: question, trace: rationale, options: options, answer: correct}", "aqua"))
    assert not out and quarantined[0]["reason"] == "aqua: correct letter not among the options"


def test_strategyqa_subquestions_refs_facts_and_boolean(run_recipe):
    _, rows, quarantined = run_recipe(qa_recipe(DATA / "strategyqa" / "dev.json",
                                                "{question: question, answer: answer, subquestions: decomposition, facts: facts}",
                                                "strategyqa", "id_field: qid"))
    assert not quarantined and len(rows) == len(STRATEGYQA)
    for row, rec in zip(rows, STRATEGYQA):
        assert [sq["question"] for sq in row["subquestions"]] == [d.strip() for d in rec["decomposition"]]
        for i, (sq, d) in enumerate(zip(row["subquestions"], rec["decomposition"])):
            assert sq["refs"] == [int(k) - 1 for k in re.findall(r"#(\d+)", d)]
            assert all(r < i for r in sq["refs"])
        assert row["answer"] == ("yes" if rec["answer"] else "no")
        assert row["facts"] == [f.strip() for f in rec["facts"] if f.strip()]
        assert [s["text"] for s in row["steps"]] == row["facts"]
    from factory.rows import make_id
    assert rows[0]["id"] == make_id("s", STRATEGYQA[0]["qid"])


def test_strategyqa_forward_reference_is_quarantined(tmp_path, run_recipe):
    rec = dict(STRATEGYQA[0], decomposition=["Is #2 true?", "What is x?"])
    (tmp_path / "s.json").write_text(json.dumps([rec]))
    _, out, quarantined = run_recipe(qa_recipe("s.json", "{question: question, answer: answer, subquestions: decomposition, facts: facts}", "strategyqa"))
    assert not out and quarantined[0]["reason"] == "strategyqa: a sub-question refers to itself or a later one (#k)"


def test_marco_thought_output(run_recipe):
    _, rows, quarantined = run_recipe(qa_recipe(DATA / "marco_o1_cot" / "CoT_demo.json", "{question: instruction, trace: response}",
                                                "thought", "unescape_newlines: true"))
    garbled = [i for i, r in enumerate(MARCO) if "\ufffd" in r["response"] or "\ufffd" in r["instruction"]]
    assert len(rows) == len(MARCO) - len(garbled)
    assert sorted(q["source_row"] for q in quarantined) == garbled
    assert all("U+FFFD" in q["reason"] for q in quarantined)
    for row in rows:
        rec = MARCO[row["source"]["row"]]
        output = re.search(r"<Output>\s*(.*?)\s*(?:</Output>|$)", rec["response"], re.S).group(1)
        assert row["answer"] == output
        thought = re.search(r"<Thought>\s*(.*?)\s*</Thought>", rec["response"], re.S).group(1)
        assert " ".join(s["text"] for s in row["steps"]).split() == thought.split()
        assert "\\n" not in row["question"]
        assert ("output_not_closed" in row["flags"]) == ("</Output>" not in rec["response"])


def test_think_format_on_real_traces(tmp_path, run_recipe):
    """No permissive R1 file exists in ../shared/data: real Marco traces re-wrapped as <think>."""
    recs = []
    for r in MARCO[:20]:
        thought = re.search(r"<Thought>\s*(.*?)\s*</Thought>", r["response"], re.S).group(1)
        output = re.search(r"<Output>\s*(.*?)\s*(?:</Output>|$)", r["response"], re.S).group(1)
        recs.append({"q": r["instruction"], "r": f"<think>\n{thought}\n</think>\n\n{output}"})
    recs.append({"q": "cut off?", "r": "<think>\nI start reasoning and then the tokens ran ou"})
    recs.append({"q": "tagged?", "r": "<think>First.\n\nSecond.</think><answer>42</answer>"})
    (tmp_path / "r1.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    _, rows, quarantined = run_recipe(qa_recipe("r1.jsonl", "{question: q, trace: r}", "think"))
    garbled = sum("\ufffd" in r["q"] + r["r"] for r in recs)
    assert len(rows) == 21 - garbled
    assert rows[-1]["answer"] == "42" and [s["text"] for s in rows[-1]["steps"]] == ["First.", "Second."]
    reasons = {q["source_line"]: q["reason"] for q in quarantined}
    assert reasons[21] == "think: <think> block never closed (truncated trace?)"
    for row in rows[:-1]:
        rec = recs[row["source"]["row"]]
        assert row["answer"] == rec["r"].split("</think>")[1].strip()


def test_plain_rationale_column(run_recipe):
    _, rows, quarantined = run_recipe(qa_recipe(DATA / "aqua_rat" / "dev.json", "{question: question, trace: rationale, answer: correct}", "rationale"))
    assert not quarantined
    for row, rec in zip(rows, AQUA):
        assert row["answer"] == rec["correct"]
        assert [s["text"] for s in row["steps"]] == [l.strip() for l in rec["rationale"].split("\n") if l.strip()]


def test_gsm8k_non_ascii_calculator_and_text(tmp_path, run_recipe):
    rec = {"question": "Café sells 5 cakes at €3 each. Total?",
           "answer": "The café earns 5×3 = <<5×3=15>>15 euros.\nThat’s €15 in total.\n#### 15"}
    (tmp_path / "u.jsonl").write_text(json.dumps(rec, ensure_ascii=False) + "\n", encoding="utf-8")
    _, rows, _ = run_recipe(qa_recipe("u.jsonl", "{question: question, answer: answer}", "gsm8k"))
    assert rows[0]["answer"] == "15"
    assert rows[0]["steps"][0]["calls"] == [{"tool": "calculator", "input": "5×3", "output": "15"}]
    assert rows[0]["steps"][0]["text"] == "The café earns 5×3 = 15 euros."
    assert rows[0]["steps"][1] == {"tag": "THOUGHT", "text": "That’s €15 in total.", "depends_on": [], "calls": []}
