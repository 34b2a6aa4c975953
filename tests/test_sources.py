"""Sources: every format, plain and gzipped; bad records go to quarantine with line and reason."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import DATA

GSM8K_LINES = (DATA / "gsm8k" / "train.head1000.jsonl").read_bytes().splitlines(keepends=True)[:300]


def gsm8k_recipe(path: str, fmt: str = "auto", extra: str = "") -> str:
    return f"""
        name: t
        sources:
          - name: s
            path: {path}
            format: {fmt}
            fields: {{question: question, answer: answer}}
            trace_format: gsm8k
            domain: math
            {extra}
    """


def test_jsonl_with_1000_good_and_5_bad_lines(tmp_path, run_recipe):
    good = [GSM8K_LINES[i % len(GSM8K_LINES)] for i in range(1000)]
    bad = {
        101: b'{"question": "What is 2+2?", "answer": "2+2=4\\n#### 4"\n',            # invalid JSON
        202: b'{"question": ["not", "a", "string"], "answer": "1\\n2\\n#### 3"}\n',  # wrong type
        303: b'{"answer": "1+1=2\\nso 2\\n#### 2"}\n',                                 # missing field
        404: b'{"question": "caf\xe9 prices?", "answer": "x\\ny\\n#### 1"}\n',        # invalid UTF-8
        505: b"\n",                                                                    # empty: skipped
    }
    lines = list(good)
    for lineno in sorted(bad):          # insert so that each bad line sits at exactly that line number
        lines.insert(lineno - 1, bad[lineno])
    (tmp_path / "mixed.jsonl").write_bytes(b"".join(lines))

    result, rows, quarantined = run_recipe(gsm8k_recipe("mixed.jsonl"))
    assert len(rows) == 1000
    by_line = {q["source_line"]: q for q in quarantined}
    assert sorted(by_line) == [101, 202, 303, 404]
    assert by_line[101]["stage"] == "read" and by_line[101]["reason"].startswith("invalid JSON")
    assert by_line[202]["stage"] == "map" and by_line[202]["reason"] == "wrong type for 'question': expected string, got array"
    assert by_line[303]["stage"] == "map" and by_line[303]["reason"] == "missing field 'question'"
    assert by_line[404]["stage"] == "read" and by_line[404]["reason"] == "invalid UTF-8 byte 0xe9 at byte 17"
    assert "caf\\xe9" in by_line[404]["raw"]                # the raw bytes are kept, escaped
    assert all(q["source_name"] == "s" and q["source_path"] == "mixed.jsonl" for q in quarantined)
    source = result.manifest["sources"][0]
    assert source["records"] == 1004 and source["blank_lines"] == 1 and source["rows"] == 1000
    # good rows keep their own line numbers around the bad ones
    assert sorted(r["source"]["line"] for r in rows)[99:101] == [100, 102]
    for stage in result.manifest["stages"]:
        assert stage["rows_in"] == stage["rows_out"] + stage["quarantined"], stage


def _gz(src, dst):
    with open(dst, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as g:
        g.write(src.read_bytes())


@pytest.mark.parametrize("gzipped", [False, True])
def test_every_format_gives_the_same_rows(tmp_path, run_recipe, gzipped):
    records = [json.loads(line) for line in GSM8K_LINES[:40]]
    files = {
        "a.jsonl": b"".join(GSM8K_LINES[:40]),
        "a.json": json.dumps(records, indent=1).encode(),
        "keyed.json": json.dumps({"meta": {"v": 1}, "data": {"rows": records}}).encode(),
    }
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["question", "answer"])
    w.writeheader()
    w.writerows(records)        # answers span lines: quoted multi-line fields
    files["a.csv"] = buf.getvalue().encode()
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "a.parquet")
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    names = list(files) + ["a.parquet"]
    if gzipped:
        for name in names:
            _gz(tmp_path / name, tmp_path / f"{name}.gz")
        names = [f"{n}.gz" for n in names]

    seen = {}
    for name in names:
        extra = "json_key: data.rows" if name.startswith("keyed") else ""
        result, rows, quarantined = run_recipe(gsm8k_recipe(name, extra=extra))
        assert quarantined == []
        seen[name] = [(r["question"], r["answer"], [s["text"] for s in r["steps"]]) for r in rows]
        fmt = result.manifest["sources"][0]["format"]
        assert fmt == {"jsonl": "jsonl", "json": "json", "csv": "csv", "parquet": "parquet"}[name.split(".")[1]]
    first = seen[names[0]]
    assert len(first) == 40
    for name in names:
        assert seen[name] == first, name


def test_json_array_lines_and_a_broken_tail(tmp_path, run_recipe):
    records = [json.loads(line) for line in GSM8K_LINES[:5]]
    text = json.dumps(records, indent=2)
    cut = text.rindex("{")                      # break the last element
    (tmp_path / "broken.json").write_text(text[:cut] + '{"question": "x", "answer": ]')
    result, rows, quarantined = run_recipe(gsm8k_recipe("broken.json"))
    assert len(rows) == 4
    assert [r["source"]["line"] for r in rows] == [2, 6, 10, 14]   # each object starts on its own line
    assert len(quarantined) == 1
    q = quarantined[0]
    assert q["source_line"] == 18 and "rest of the file" in q["reason"] and q["raw"].startswith('{"question": "x"')


def test_csv_multiline_quotes_bad_utf8_and_short_rows(tmp_path, run_recipe):
    src = DATA / "counsel_chat" / "20200325_counsel_chat.head300.csv"
    raw = src.read_bytes()
    head, _, rest = raw.partition(b"\n")
    rows_text = rest.decode("utf-8")
    reader = csv.reader(io.StringIO(rows_text, newline=""))
    records = [r for _, r in zip(range(20), reader)]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    for i, rec in enumerate(records):
        if i == 7:
            rec = rec[:5]                      # too few fields
        w.writerow(rec)
    body = out.getvalue().encode()
    marker = records[3][8][:20].encode()         # corrupt one byte inside row 3's answer
    body = body.replace(marker, marker[:5] + b"\xff" + marker[6:], 1)
    (tmp_path / "chat.csv").write_bytes(head + b"\n" + body)
    text = """
        name: t
        sources:
          - name: chat
            kind: conversation
            path: chat.csv
            fields:
              turns:
                - {role: client, content: [questionTitle, questionText]}
                - {role: therapist, content: answerText}
            roles: {client: user, therapist: assistant}
            domain: mental-health
    """
    result, rows, quarantined = run_recipe(text)
    assert len(rows) == 18
    reasons = {q["source_row"]: q["reason"] for q in quarantined}
    assert reasons[3].startswith("invalid UTF-8 byte 0xff")
    assert reasons[7] == "expected 12 fields, got 5"
    for r in rows:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert r["question"] == r["messages"][0]["content"] and r["answer"] == r["messages"][1]["content"]
    # multi-line quoted fields: the line number is where the record starts
    lines = [r["source"]["line"] for r in rows]
    assert lines == sorted(lines) and lines[0] == 2 and lines[-1] > 21


def test_field_paths_with_list_indexing_and_keep(tmp_path, run_recipe):
    shutil.copy(DATA / "self_instruct_human" / "seed_tasks.jsonl", tmp_path / "seed.jsonl")
    result, rows, _ = run_recipe("""
        name: t
        sources:
          - name: seed
            path: seed.jsonl
            id_field: id
            keep: [name, "instances[0].input"]
            fields: {question: instruction, context: "instances[0].input", answer: "instances[0].output"}
            limit: 30
    """)
    assert len(rows) == 30
    src = [json.loads(line) for line in (DATA / "self_instruct_human" / "seed_tasks.jsonl").read_text().splitlines()[:30]]
    for row, rec in zip(rows, src):
        inst = rec["instances"][0]
        expect_q = rec["instruction"].strip() + (f"\n\n{inst['input'].strip()}" if inst["input"].strip() else "")
        assert row["question"] == expect_q
        assert row["answer"] == inst["output"]
        assert json.loads(row["meta"]) == {"name": rec["name"], "instances[0].input": inst["input"]}


def test_hf_datasets_local_directory(tmp_path, run_recipe):
    d = tmp_path / "hfdir"
    d.mkdir()
    records = [json.loads(line) for line in GSM8K_LINES[:25]]
    pq.write_table(pa.Table.from_pylist(records), d / "train-00000.parquet")
    result, rows, quarantined = run_recipe(gsm8k_recipe("hfdir", fmt="hf"))
    assert len(rows) == 25 and not quarantined
    assert result.manifest["sources"][0]["format"] == "hf"
    assert rows[0]["question"] == records[0]["question"]


def test_hf_hub_name_offline_is_a_clear_error(tmp_path):
    from conftest import write_recipe
    from factory.errors import InputError
    from factory.pipeline import run
    from factory.recipe import load_recipe

    path = write_recipe(tmp_path, gsm8k_recipe("openai/gsm8k-not-cached", fmt="hf", extra="hf: {config: main}"))
    with pytest.raises(InputError, match="load_dataset"):
        run(load_recipe(path), tmp_path / "out")


def test_limit_counts_records_in_file_order(tmp_path, run_recipe):
    (tmp_path / "d.jsonl").write_bytes(b"".join(GSM8K_LINES[:3]) + b"{broken\n" + b"".join(GSM8K_LINES[3:10]))
    result, rows, quarantined = run_recipe(gsm8k_recipe("d.jsonl", extra="limit: 5"))
    assert len(rows) == 4 and len(quarantined) == 1
    result, rows, quarantined = run_recipe(gsm8k_recipe("d.jsonl"), limit=2)
    assert len(rows) == 2 and not quarantined
