"""Fast paths agree with the careful paths; odd inputs; secrets never reach an output file."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import DATA
from factory.sources.csv_file import _fast_table
from factory.sources.json_document import _array_layout

GSM8K = [json.loads(line) for line in (DATA / "gsm8k" / "train.head1000.jsonl").read_text().splitlines()[:300]]


@pytest.mark.parametrize("data, expect", [
    (b"a,b,c\n1,2,3\n4,5,6\n", [2, 3]),
    (b'a,b,c\r\n1,"x\r\ny",3\r\n4,5,6\r\n', [2, 4]),
    (b'a,b,c\n1,"multi\nline\nvalue",3\n4,5,6', [2, 5]),
    (b"a,b,c\n1,2,3\n\n6,7,8\n", None),     # blank line: careful path
    (b"a,b,c\n1,2,3\n4,5\n", None),         # short row
    (b"a,b,c\n1,2,3,4\n", None),            # long row
    (b"a,a,c\n1,2,3\n", None),              # duplicate column names
    (b"a,b,c\n1,\xff,3\n", None),           # invalid UTF-8
])
def test_csv_fast_path_takes_only_what_it_can_number(data, expect):
    fast = _fast_table(data, ",")
    assert (fast[1].tolist() if fast else None) == expect


@pytest.mark.parametrize("doc, ok", [
    (b'[{"a": "}{", "b": [1, {"c": 2}]},\n {"d": "\\"{"}]', True),
    (b' [ {"a": 1} ] \n', True),
    (b'[{"a": "\\\\"}, {"b": 2}]', True),
    (b'[{"a": 1}, 5]', False),
    (b'[{"a": 1},, {"b": 2}]', False),
    (b'[{"a": 1}] x', False),
    (b'{"a": 1}', False),
    (b'[[{"a": 1}]]', False),
])
def test_json_array_layout(doc, ok):
    layout = _array_layout(doc)
    assert (layout is not None) == ok
    if ok:
        starts, ends, _, _ = layout
        assert [json.loads(doc[s:e + 1]) for s, e in zip(starts, ends)] == json.loads(doc)


def gsm_recipe(path):
    return f"""
        name: t
        sources:
          - name: s
            path: {path}
            fields: {{question: question, answer: answer}}
            trace_format: gsm8k
    """


def test_jsonl_type_change_after_the_sample_falls_back_and_agrees(tmp_path, run_recipe):
    recs = [dict(r) for r in GSM8K] * 2                # 600 rows: the type sample sees 256
    recs[500] = {"question": 12345, "answer": GSM8K[0]["answer"]}          # wrong type late
    recs[510] = {"question": "Numeric answer?", "answer": 42}             # int where text was sampled
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    _, rows, quarantined = run_recipe(gsm_recipe("d.jsonl"))
    assert len(rows) + len(quarantined) == 600
    reasons = {q["source_line"]: q["reason"] for q in quarantined}
    assert reasons[501] == "wrong type for 'question': expected string, got number"
    assert reasons[511] == "gsm8k: no '#### <answer>' line"       # 42 became text, then has no ####
    assert rows[0]["steps"] and rows[-1]["source"]["line"] == 600


def test_jsonl_record_bigger_than_a_parse_block(tmp_path, run_recipe):
    big = dict(GSM8K[0], question="x" * (3 << 20) + "?")   # 3 MiB: larger than pyarrow's block
    lines = [json.dumps(r) for r in GSM8K[:5]] + [json.dumps(big)] + [json.dumps(r) for r in GSM8K[5:10]]
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n")
    _, rows, quarantined = run_recipe(gsm_recipe("big.jsonl"))
    assert len(rows) == 11 and not quarantined
    assert len(rows[5]["question"]) == (3 << 20) + 1


def test_json_array_bad_bytes_reject_only_their_record(tmp_path, run_recipe):
    text = json.dumps(GSM8K[:6], indent=2).encode()
    marker = GSM8K[3]["question"][:12].encode()
    text = text.replace(marker, marker[:4] + b"\xfe" + marker[5:], 1)
    (tmp_path / "a.json").write_bytes(text)
    _, rows, quarantined = run_recipe(gsm_recipe("a.json"))
    assert len(rows) == 5
    assert [q["source_row"] for q in quarantined] == [3]
    assert quarantined[0]["reason"].startswith("invalid UTF-8 byte 0xfe")


def test_parquet_nested_paths(tmp_path, run_recipe):
    table = pa.Table.from_pylist([
        {"item": {"q": r["question"], "sol": {"text": r["answer"]}}, "tags": ["a", "b"]} for r in GSM8K[:12]
    ])
    pq.write_table(table, tmp_path / "n.parquet")
    _, rows, _ = run_recipe("""
        name: t
        sources:
          - name: s
            path: n.parquet
            fields: {question: item.q, answer: item.sol.text}
            trace_format: gsm8k
            keep: ["tags[1]"]
    """)
    assert [r["question"] for r in rows] == [r["question"] for r in GSM8K[:12]]
    assert json.loads(rows[0]["meta"]) == {"tags[1]": "b"}


def test_turns_with_system_prompt_and_unescape(tmp_path, run_recipe):
    (tmp_path / "c.csv").write_text('sys,q,a\n"Be kind.","Line one\\nline two","Yes."\n,"Only q","A"\n')
    _, rows, _ = run_recipe("""
        name: t
        sources:
          - name: c
            kind: conversation
            path: c.csv
            unescape_newlines: true
            fields:
              system: sys
              turns: [{role: client, content: q}, {role: counsellor, content: a}]
            roles: {client: user, counsellor: assistant}
    """)
    assert rows[0]["messages"] == [{"role": "system", "content": "Be kind."},
                                   {"role": "user", "content": "Line one\nline two"},
                                   {"role": "assistant", "content": "Yes."}]
    assert [m["role"] for m in rows[1]["messages"]] == ["user", "assistant"]
    assert rows[0]["question"] == "Line one\nline two" and rows[0]["answer"] == "Yes."


def test_turns_with_unmapped_role_is_a_clear_error(tmp_path):
    from conftest import write_recipe
    from factory.errors import InputError
    from factory.pipeline import run
    from factory.recipe import load_recipe

    (tmp_path / "c.csv").write_text("q,a\nx,y\n")
    path = write_recipe(tmp_path, """
        name: t
        sources:
          - name: c
            kind: conversation
            path: c.csv
            fields: {turns: [{role: client, content: q}, {role: therapist, content: a}]}
    """)
    with pytest.raises(InputError, match="turns need roles that map to a user and an assistant"):
        run(load_recipe(path), tmp_path / "out")


def test_secrets_never_reach_an_output_file(tmp_path, run_recipe, monkeypatch):
    secret = "sk-test-0123456789abcdefghijklmnop"
    monkeypatch.setenv("COT_TEST_TOKEN", secret)
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in GSM8K[:3]) + "\n")
    result, _, _ = run_recipe("""
        name: t
        description: "made with token ${COT_TEST_TOKEN}"
        sources:
          - name: s
            path: d.jsonl
            license: "${COT_TEST_TOKEN}"
            fields: {question: question, answer: answer}
            trace_format: gsm8k
    """)
    files = [p for p in result.out.rglob("*") if p.is_file()]
    assert any(p.name == "README.md" for p in files)
    for p in files:
        data = p.read_bytes()
        assert secret.encode() not in data, p
    assert b"${COT_TEST_TOKEN}" in (result.out / "manifest.json").read_bytes()


def test_row_ids_match_a_plain_python_splitmix64():
    import hashlib

    import numpy as np

    from factory.rows import make_row_ids

    seed = int.from_bytes(hashlib.blake2b(b"src\x1f#", digest_size=8).digest(), "big")
    mask = 2**64 - 1

    def splitmix64(x: int) -> int:
        z = (x + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    rows = np.array([0, 1, 2, 10**6, 2**40 + 3])
    assert make_row_ids("src", rows).to_pylist() == [format(splitmix64(seed ^ int(r)), "016x") for r in rows]
    many = make_row_ids("src", np.arange(200_000)).to_pylist()
    assert len(set(many)) == len(many)


@pytest.mark.parametrize("name, body", [
    ("bom.csv", "question,answer\n" + "\n".join(f'"{r["question"]}","{r["answer"]}"' for r in GSM8K[:4]) + "\n"),
    ("bom.jsonl", "\n".join(json.dumps(r) for r in GSM8K[:4]) + "\n"),
    ("bom.json", json.dumps(GSM8K[:4])),
])
def test_utf8_byte_order_mark_is_ignored(tmp_path, run_recipe, name, body):
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + body.encode())
    _, rows, quarantined = run_recipe(gsm_recipe(name))
    assert len(rows) == 4 and not quarantined
    assert rows[0]["question"] == GSM8K[0]["question"]
