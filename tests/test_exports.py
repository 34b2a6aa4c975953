"""Exports: SFT / DPO / selector views of a run that TRL, `datasets` and LLaMA-Factory read as
they are; the student pair builder against the loopback provider; streaming selector windows."""

from __future__ import annotations

import importlib.util
import json
import re
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import DATA, QUICKSTART, REPO


@pytest.fixture(scope="module")
def quickstart_exports(tmp_path_factory):
    """The quickstart recipe with all three exports, run once for the module."""
    from factory.pipeline import run
    from factory.recipe import load_recipe

    tmp = tmp_path_factory.mktemp("qsx")
    doc = yaml.safe_load(QUICKSTART.read_text())
    for s in doc["sources"]:
        s["path"] = str((QUICKSTART.parent / s["path"]).resolve())
    for e in doc.get("dedup", {}).get("decontaminate", []):
        e["path"] = str((QUICKSTART.parent / e["path"]).resolve())
    doc["exports"] = ["sft", "dpo", {"kind": "selector", "context": 8, "candidates": 16}]
    path = tmp / "qs.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return run(load_recipe(path), tmp / "out")


def test_sft_export_loads_and_renders_reasoning_and_answer(quickstart_exports):
    import datasets

    out = quickstart_exports.out
    sft = datasets.load_dataset(str(out), "sft", split="train")
    report = quickstart_exports.manifest["reports"]["exports"]["sft"]
    assert sft.num_rows == report["rows"]["train"] > 1000
    by_source = {}
    for r in sft:
        by_source.setdefault(r["source"], []).append(r)
    gsm = by_source["gsm8k"][0]["messages"]
    assert [m["role"] for m in gsm] == ["user", "assistant"]
    assert re.fullmatch(r"<reasoning>.+</reasoning>\n<answer>.+</answer>", gsm[1]["content"], re.S)
    assert "preference" not in {r["source"] for r in sft} and "hh-rlhf" not in by_source
    counsel = by_source["counsel-chat"][0]["messages"]                # conversations keep their turns
    assert [m["role"] for m in counsel] == ["user", "assistant"]
    assert report["skipped"]["kind"] == 299                             # the preference rows go to DPO


def test_dpo_export_pairs_and_noisy_filter(quickstart_exports):
    import datasets

    out = quickstart_exports.out
    dpo = datasets.load_dataset(str(out), "dpo", split="train")
    rep = quickstart_exports.manifest["reports"]["exports"]["dpo"]["builders"]["preference"]
    assert rep["dropped_noisy"] == round(0.15 * rep["pairs"]) and dpo.num_rows == rep["kept"]
    row = dpo[0]
    assert row["prompt"][-1]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    q = pq.read_table(out / "quarantine" / "export_dpo.parquet").to_pylist()
    assert len(q) == rep["dropped_noisy"]
    kept_max = max(dpo["score"])
    assert all(json.loads(r["detail"])["score"] >= kept_max for r in q)  # the dropped ones scored highest
    assert all("noisy preference pair" in r["reason"] for r in q)


def test_selector_export_windows(quickstart_exports):
    out = quickstart_exports.out
    t = pq.read_table(out / "exports" / "selector" / "train-00000-of-00001.parquet")
    cand = np.array(t["candidate_ids"].to_pylist(), dtype=np.int64)
    target = t["target_id"].to_numpy()
    assert ((cand == target[:, None]).sum(axis=1) == 1).all()
    assert (cand[np.arange(len(target)), t["target_index"].to_numpy()] == target).all()
    assert {len(x) for x in t["input_ids"].to_pylist()[:1000]} == {8}
    assert (out / "exports" / "selector" / "tokenizer.json").exists()
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    names = {c["config_name"] for c in header["configs"]}
    assert {"sft", "dpo", "selector", "default", "math"} <= names
    assert "## Training exports" in card and "field_messages: messages" in card


def test_llamafactory_dataset_info_matches_its_documented_format(quickstart_exports):
    """LLaMA-Factory's sharegpt format (data/README.md of the project): `messages` alternating
    user/assistant after an optional system turn; ranking: `conversations` ending with a user turn,
    `chosen` / `rejected` single assistant messages."""
    exports = quickstart_exports.out / "exports"
    info = json.loads((exports / "dataset_info.json").read_text())
    assert set(info) == {"quickstart_sft", "quickstart_dpo"}
    for name, entry in info.items():
        assert entry["formatting"] == "sharegpt" and entry["tags"]["role_tag"] == "role"
        t = pq.read_table(exports / entry["file_name"])
        assert set(entry["columns"].values()) <= set(t.column_names)
        for row in t.to_pylist()[:300]:
            turns = row[entry["columns"]["messages"]]
            turns = turns[1:] if turns and turns[0]["role"] == "system" else turns
            want = ["user", "assistant"] * len(turns)
            if entry.get("ranking"):
                assert [m["role"] for m in turns] == want[: len(turns)] and len(turns) % 2 == 1
                assert row["chosen"]["role"] == row["rejected"]["role"] == "assistant"
            else:
                assert [m["role"] for m in turns] == want[: len(turns)] and len(turns) % 2 == 0


@pytest.mark.skipif(not importlib.util.find_spec("trl"), reason="needs the [train] extra (torch, transformers, trl)")
def test_trl_trainers_accept_the_exports_without_mapping(quickstart_exports, tmp_path):
    import copy
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import datasets
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    torch.set_num_threads(1)
    out = str(quickstart_exports.out)
    sft = datasets.load_dataset(out, "sft", split="train")
    dpo = datasets.load_dataset(out, "dpo", split="train")
    texts = [m["content"] for r in sft.select(range(200)) for m in r["messages"]]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<unk>", "<s>", "</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}{% generation %}"
                         "{{ m['content'] }}</s>{% endgeneration %}{% else %}{{ m['content'] }}</s>{% endif %}\n{% endfor %}"
                         "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    common = dict(max_steps=2, per_device_train_batch_size=2, use_cpu=True, bf16=False, report_to=[], max_length=256,
                  gradient_checkpointing=False, save_strategy="no", logging_steps=1)
    sft_run = SFTTrainer(model=model, args=SFTConfig(output_dir=str(tmp_path / "sft"), assistant_only_loss=True, **common),
                         train_dataset=sft, processing_class=tok).train()
    assert sft_run.global_step == 2 and np.isfinite(sft_run.training_loss)
    dpo_run = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=DPOConfig(output_dir=str(tmp_path / "dpo"), **common),
                         train_dataset=dpo, processing_class=tok).train()
    assert dpo_run.global_step == 2 and abs(dpo_run.training_loss - 0.6931) < 0.01      # log(2) at the start: a real DPO loss


def test_student_pairs_on_strategyqa_chosen_side_is_always_correct(server, tmp_path):
    """Builder (c): the stand-in plays a student that answers 'yes' to everything, so its drafts are
    wrong wherever the gold answer is 'no'. Kept pairs: the chosen side is right; filter ratio holds."""
    server.reset(default_answer="yes")
    doc = {"name": "student", "sources": [{
        "name": "strategyqa", "kind": "qa", "path": str(DATA / "strategyqa" / "dev.json"), "split": "dev", "id_field": "qid",
        "limit": 120, "fields": {"question": "question", "answer": "answer", "subquestions": "decomposition", "facts": "facts"},
        "trace_format": "strategyqa", "domain": "commonsense"}],
        "exports": [{"kind": "dpo", "builders": ["student"], "noisy_filter": 0.2, "format": "messages",
                     "student": {"backend": "openai", "model": "student-model", "base_url": server.url + "/v1",
                                 "cache": str(tmp_path / "c.sqlite"), "few_shot": 0, "max_tokens": 200}}]}
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    from factory.answers import answers_match
    from factory.pipeline import run
    from factory.recipe import load_recipe

    result = run(load_recipe(path), tmp_path / "out")
    rows = {r["id"]: r for s in result.manifest["shards"] for r in pq.read_table(result.out / s["path"]).to_pylist()}
    pairs = [p for f in result.manifest["exports"] for p in pq.read_table(result.out / f["path"]).to_pylist()]
    rep = result.manifest["reports"]["exports"]["dpo"]["builders"]["student"]
    golds = {r["gold_answer"] for r in rows.values()}
    assert golds == {"yes", "no"} and rep["pairs"] == 120
    assert rep["dropped_noisy"] == round(0.2 * rep["pairs"]) and len(pairs) == rep["kept"]
    for p in pairs:
        gold = rows[p["row_id"]]["gold_answer"]
        chosen = p["chosen"][0]["content"]
        m = re.search(r"<answer>(.*?)</answer>", chosen, re.S)
        answer = m.group(1) if m else re.search(r"Final answer:\s*(.+)", chosen).group(1)
        assert answers_match(answer, gold) is True
        assert " Student draft: " in p["prompt"][0]["content"]
    wrong_drafts = sum(r["gold_answer"] == "no" for r in rows.values())
    assert wrong_drafts > 10                                      # the student really is wrong on some rows
    assert all(not p["flipped"] for p in pairs)                   # the teacher (gold) is never wrong here
    dropped = pq.read_table(result.out / "quarantine" / "export_dpo.parquet").to_pylist()
    assert len(dropped) == rep["dropped_noisy"] and all("disagreement score" in d["reason"] for d in dropped)
    # the both-right pairs (label noise 0.5) are the ones the filter drops first
    assert all(rows[json.loads(d["raw"])["row_id"]]["gold_answer"] == "yes" for d in dropped)


def test_selector_windows_stream_10k_and_100k_rows(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    import selector as bench
    from factory.exports.selector import trace_texts, train_bpe

    base = bench.rows_with_traces(DATA / "gsm8k" / "train.head1000.jsonl")
    tok = train_bpe(trace_texts(base)["text"].to_list(), 2048)
    tok.save(str(tmp_path / "tokenizer.json"))
    small = bench.measure(base, 10_000, tmp_path / "tokenizer.json", tmp_path)
    big = bench.measure(base, 100_000, tmp_path / "tokenizer.json", tmp_path)
    assert big["windows"] > 9 * small["windows"]
    assert big["peak_rss_mb"] / small["peak_rss_mb"] < 1.3
    t = pq.read_table(tmp_path / "out-10000" / "train-00000-of-00001.parquet", columns=["target_id", "candidate_ids"])
    cand = t["candidate_ids"].combine_chunks().flatten().to_numpy().reshape(t.num_rows, -1)
    target = t["target_id"].to_numpy()
    assert ((cand == target[:, None]).sum(axis=1) == 1).all()


def test_publish_to_a_loopback_hub(quickstart_exports, tmp_path):
    import base64
    import os
    import subprocess

    import httpx

    from factory.publish import plan

    out = quickstart_exports.out
    token = "leak-canary-" + os.urandom(12).hex()       # fresh each run: no file can hold it by chance
    hub = subprocess.Popen([sys.executable, "-m", "factory.testing.hub", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        url = hub.stdout.readline().strip()
        env = {**os.environ, "HF_ENDPOINT": url, "HF_TOKEN": token, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
        cmd = [sys.executable, "-m", "factory", "publish", str(out), "--repo-id", "cot-org/quickstart"]
        dry = subprocess.run(cmd + ["--dry-run"], capture_output=True, text=True, cwd=REPO, env={**env, "COLUMNS": "200"})
        assert dry.returncode == 0, dry.stderr
        listed = [p for p, _ in plan(out, "cot-org/quickstart").files]
        assert all(p in dry.stdout for p in listed) and "configs:" in dry.stdout
        assert httpx.get(url + "/_received").json() == {"_token_hashes": []}          # the dry run sent nothing
        real = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
        assert real.returncode == 0, real.stderr
        got = httpx.get(url + "/_received").json()
    finally:
        hub.terminate()
    repo = got["cot-org/quickstart"]
    assert repo["private"] is True and repo["type"] == "dataset"
    files = {p: base64.b64decode(b) for p, b in repo["files"].items()}
    assert sorted(files) == sorted(listed) and "run.json" not in files
    assert {"manifest.json", "recipe.yaml", "README.md", "exports/dataset_info.json"} <= set(files)
    header = yaml.safe_load(files["README.md"].decode().split("---")[1])
    names = {c["config_name"] for c in header["configs"]}
    assert names == {"default", *quickstart_exports.manifest["domains"], "sft", "dpo", "selector"}
    for data in files.values():
        assert token.encode() not in data
    for p in out.rglob("*"):
        assert not p.is_file() or token.encode() not in p.read_bytes()
    assert token not in real.stdout + real.stderr + dry.stdout + dry.stderr


def test_samples_builder_pairs_correct_with_incorrect_teacher_samples(server, tmp_path):
    """Builder (b): teacher samples with keep: first_correct — the wrong first sample is quarantined
    by the teacher and still becomes the rejected side of a pair."""
    rows = [json.loads(x) for x in (DATA / "gsm8k" / "train.head1000.jsonl").read_text().splitlines()[:4]]
    gold = [r["answer"].split("####")[-1].strip() for r in rows]
    server.reset(answers={rows[0]["question"]: ["1", gold[0]], rows[1]["question"]: gold[1],
                          rows[2]["question"]: ["6", gold[2]], rows[3]["question"]: ["9", "8"]})
    doc = {"name": "samples", "sources": [{"name": "gsm8k", "kind": "qa", "path": str(DATA / "gsm8k" / "train.head1000.jsonl"),
                                           "limit": 4, "fields": {"question": "question", "answer": "answer"},
                                           "trace_format": "gsm8k", "domain": "math"}],
           "teacher": {"backend": "openai", "model": "m", "base_url": server.url + "/v1", "rows": "all", "samples": 2,
                       "temperature": 0.7, "keep": "first_correct", "cache": str(tmp_path / "c.sqlite")},
           "exports": [{"kind": "dpo", "builders": ["samples"], "noisy_filter": 0, "format": "strings"},
                       {"kind": "sft", "format": "prompt_completion", "template": "sft_reasoning_path"}]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    from factory.pipeline import run
    from factory.recipe import load_recipe

    result = run(load_recipe(path), tmp_path / "out")
    pairs = pq.read_table(result.out / "exports" / "dpo" / "train-00000-of-00001.parquet").to_pylist()
    assert len(pairs) == 2                                        # rows 0 and 2: right at the second sample
    for p in pairs:
        assert isinstance(p["prompt"], str) and p["builder"] == "samples"
        assert "<answer>1</answer>" in p["rejected"] or "<answer>6</answer>" in p["rejected"]
        assert any(f"<answer>{g}</answer>" in p["chosen"] for g in (gold[0], gold[2]))
    sft = pq.read_table(result.out / "exports" / "sft" / "train-00000-of-00001.parquet").to_pylist()
    assert len(sft) == 3 and {len(r["completion"]) for r in sft} == {1}   # row 3 never right: quarantined, not trained on
    first = sft[0]["completion"][0]["content"]
    assert first.startswith("<reasoning>\nSub-questions:\n1. ") and "[ACTION]" in first and first.endswith("</answer>")
