"""LoRA / QLoRA SFT on Gemma 3 270M (the PyPI GGUF) for 20 steps on the quickstart's GSM8K SFT
rows; prints held-out NLL on 50 other GSM8K rows before and after, s/step and tokens/s.
Needs the [train] and [local] extras and `factory run recipes/quickstart.yaml` first.

    OMP_NUM_THREADS=1 python bench/train_gemma.py lora [qlora]
"""
import json, sys, tempfile, time
from pathlib import Path
import pyarrow.parquet as pq, yaml
from train.evaluate import heldout_loss
from train.models import load_for_training, load_tokenizer
from train.plan import load_plan
from train.run import base_model, train_stage
shards = Path(__file__).resolve().parents[1] / "shards" / "quickstart"
rows = [r for r in pq.read_table(shards/"exports"/"sft"/"train-00000-of-00001.parquet").to_pylist() if r["source"] == "gsm8k"]
heldout = rows[-50:]
tmp = Path(tempfile.mkdtemp(prefix="train-gemma-")); tmp.mkdir(parents=True, exist_ok=True)
for kind in sys.argv[1:]:
    doc = {"name": "gemma", "output": str(tmp/kind), "model": {"gguf": "gemma3-270m"}, "adapter": {"kind": kind, "r": 8, "alpha": 16, "dropout": 0.05},
           "stages": [{"name": "gsm8k", "method": "sft", "data": [{"path": str(shards), "export": "sft", "domains": ["math"], "limit": 150}],
                       "max_steps": 20, "batch_size": 1, "learning_rate": 2e-4, "max_length": 256}]}
    (tmp/"p.yaml").write_text(yaml.safe_dump(doc)); plan, _ = load_plan(tmp/"p.yaml")
    t0 = time.perf_counter(); base = base_model(plan, tmp/kind, Path.cwd()); tok = load_tokenizer(base); t_base = time.perf_counter() - t0
    before = heldout_loss(load_for_training(base, plan.model, plan.adapter, None), tok, heldout)
    done = train_stage(plan, 0, base, tok, None, tmp/kind, Path.cwd())
    after = heldout_loss(done["model"], tok, heldout)
    r = done["report"]
    print(json.dumps({"adapter": kind, "base_load_s": round(t_base, 1), "heldout_before": round(before, 4), "heldout_after": round(after, 4),
                      "steps": r["steps"], "train_s": r["seconds"], "s_per_step": round(r["seconds"] / r["steps"], 2), "tokens_per_s": r["tokens_per_second"],
                      "first_loss": r["first_loss"], "last_loss": r["last_loss"]}))
