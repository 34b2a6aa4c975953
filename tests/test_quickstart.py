"""The quickstart end to end: what a new user gets from one command, offline."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from conftest import QUICKSTART, REPO
from factory.pipeline import run
from factory.recipe import load_recipe
from factory.rows import ROW_SCHEMA


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "quickstart"
    result = run(load_recipe(QUICKSTART), out)
    return result


def _rows(result, domain=None, source=None):
    rows = []
    for shard in result.manifest["shards"]:
        if domain is None or shard["domain"] == domain:
            rows.extend(pq.read_table(result.out / shard["path"]).to_pylist())
    return [r for r in rows if source is None or r["source"]["name"] == source]


def test_layout_domains_and_load_dataset(quickstart):
    import datasets

    m = quickstart.manifest
    assert len(m["domains"]) >= 5
    for domain, splits in m["domains"].items():
        ds = datasets.load_dataset(str(quickstart.out), domain, split="train")
        assert len(ds) == splits["train"]
        assert set(ds.unique("domain")) == {domain}
    everything = datasets.load_dataset(str(quickstart.out), split="train")
    assert len(everything) == m["rows"]
    for shard in m["shards"]:
        path = quickstart.out / shard["path"]
        assert path.name.startswith("train-") and f"/data/{shard['domain']}/" in path.as_posix()
        meta = pq.ParquetFile(path).metadata
        assert meta.num_rows == shard["rows"] <= 200                     # max_rows in the quickstart
        assert meta.row_group(0).column(0).compression == "ZSTD"
        assert pq.read_schema(path).remove_metadata() == ROW_SCHEMA.remove_metadata()


def test_books_balance_for_every_stage_and_source(quickstart):
    m = quickstart.manifest
    for stage in m["stages"]:
        assert stage["rows_in"] == stage["rows_out"] + stage["quarantined"], stage
    for src in m["sources"]:
        for stage in src["stages"]:
            assert stage["rows_in"] == stage["rows_out"] + stage["quarantined"], (src["name"], stage)
    q = sum(x["rows"] for x in m["quarantine"] if not x["stage"].startswith("export_"))   # exports quarantine pairs, not rows
    assert sum(s["records"] for s in m["sources"]) == m["rows"] + q
    dpo = m["reports"]["exports"]["dpo"]["builders"]["preference"]
    assert sum(x["rows"] for x in m["quarantine"] if x["stage"] == "export_dpo") == dpo["dropped_noisy"]
    quarantined = pq.read_table(quickstart.out / "quarantine" / "standardize.parquet").to_pylist()
    assert all(r["source_line"] and r["reason"] and r["raw"] for r in quarantined)


def test_gsm8k_strategyqa_counsel_acceptance(quickstart):
    gsm = [json.loads(l) for l in (REPO / "recipes/data/gsm8k/train.head1000.jsonl").read_text().splitlines()]
    rows = _rows(quickstart, source="gsm8k")
    assert len(rows) == 300
    for row in rows:
        assert len(row["steps"]) >= 2
    for row in _rows(quickstart, source="gsm8k"):
        assert row["answer"] == gsm[row["source"]["row"]]["answer"].split("####")[-1].strip()
    sqa = _rows(quickstart, source="strategyqa")
    assert len(sqa) == 229
    for row in sqa:
        assert row["subquestions"] and row["answer"] in ("yes", "no")
    chat = _rows(quickstart, source="counsel-chat")
    assert len(chat) == 300
    for row in chat:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["kind"] == "conversation"


def test_rows_match_the_committed_row_json_schema(quickstart):
    import jsonschema

    schema = json.loads((REPO / "schemas" / "row.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for domain in quickstart.manifest["domains"]:
        for row in _rows(quickstart, domain)[:25]:
            validator.validate(row)


def test_ids_are_unique_and_stable(quickstart):
    from factory.rows import make_id, make_row_id

    rows = _rows(quickstart)
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    first = _rows(quickstart, source="gsm8k")[0]
    assert first["id"] == make_row_id("gsm8k", 0) == "a9487e798dc1e86f"    # same on every machine
    sqa = _rows(quickstart, source="strategyqa")[0]
    assert sqa["id"] == make_id("strategyqa", "e0044a7b4d146d611e73") == "b0cf67c48783a1d1"


def test_two_runs_are_byte_identical(quickstart, tmp_path):
    again = run(load_recipe(QUICKSTART), tmp_path / "again")
    a, b = quickstart.out, again.out
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    assert (a / "README.md").read_bytes() == (b / "README.md").read_bytes()
    files = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.parquet"))
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_rerun_replaces_output_whole_and_refuses_foreign_dirs(tmp_path):
    from factory.errors import InputError

    out = tmp_path / "out"
    loaded = load_recipe(QUICKSTART)
    run(loaded, out)
    stale = out / "data" / "math" / "train-00009-of-00010.parquet"
    stale.write_bytes(b"stale")
    small = run(loaded, out, limit=5)
    assert not stale.exists()                         # no shard of an older run survives
    assert small.manifest["rows"] <= 5 * len(loaded.recipe.sources)
    assert not list(tmp_path.glob(".out.*"))          # no staging leftovers
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="refusing to replace"):
        run(loaded, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_card_configs_and_manifest_contents(quickstart):
    import yaml

    card = (quickstart.out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    names = [c["config_name"] for c in header["configs"]]
    assert names[0] == "default" and sorted(names[1:]) == sorted([*quickstart.manifest["domains"], "sft", "dpo"])
    m = quickstart.manifest
    assert m["recipe"]["sha256"] == load_recipe(QUICKSTART).sha256
    assert m["recipe"]["resolved"]["name"] == "quickstart"
    assert {"python", "pyarrow", "polars", "cot-factory"} <= set(m["versions"])
    for shard in m["shards"]:
        from factory.output import sha256_file
        assert sha256_file(quickstart.out / shard["path"]) == shard["sha256"]
    for src in m["sources"]:
        assert len(src["sha256"]) == 64
    run_info = json.loads((quickstart.out / "run.json").read_text())
    assert run_info["seconds"]["total"] > 0


def test_cli_run_inspect_and_exit_codes(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "factory", "run", str(QUICKSTART), "--out", str(out), "--limit", "20"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "rows in" in proc.stdout and "quarantined" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "factory", "inspect", str(out), "--domain", "math"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "sample row" in proc.stdout and "calculator" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "factory", "inspect", str(out), "--domain", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and "no domain 'nope'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "factory", "run", str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert proc.returncode == 2 and "no such recipe file" in proc.stderr


def test_load_dataset_sees_a_rerun_into_the_same_directory(tmp_path):
    """datasets caches a local directory by its card: the card must change with the content,
    even when the row count does not."""
    import datasets

    from conftest import DATA, write_recipe

    out = tmp_path / "out"
    for mode in ("action", "strip"):
        path = write_recipe(tmp_path, f"""
            name: t
            sources:
              - name: g
                path: {DATA / 'gsm8k' / 'train.head1000.jsonl'}
                fields: {{question: question, answer: answer}}
                trace_format: gsm8k
                trace_options: {{calculator: {mode}}}
                domain: math
                limit: 20
        """)
        run(load_recipe(path), out)
        ds = datasets.load_dataset(str(out), "math", split="train")
        calls = sum(len(s["calls"]) for row in ds for s in row["steps"])
        assert len(ds) == 20
        assert (calls > 0) == (mode == "action"), mode
