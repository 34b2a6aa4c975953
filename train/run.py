"""Run a plan, stage by stage:

    base model (tiny / local dir / GGUF) ─► for each stage: rows (filters, mix or curriculum)
        ─► model (fresh adapter, or the previous stage's checkpoint) ─► TRL trainer ─► checkpoint
    ─► merged model (optional) ─► evaluation (optional)

Each stage directory holds the checkpoint (adapter or full model, tokenizer) and ``stage.json``
(steps, loss, tokens/s, digests of the parameters it started and ended with, the data files with
their sha256 from the run manifests, rows drawn per domain). ``plan.resolved.json`` at the top
holds the validated plan, the plan as written, and every stage's data hashes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from factory.errors import FactoryError
from train.data import as_dataset, load_rows, row_order
from train.models import DTYPES, build_tiny, gguf_base, load_for_training, load_reference, load_tokenizer, merge_and_save, params_digest
from train.plan import Plan

TRL_LOSSES = ("sigmoid", "ipo", "hinge")


def _texts_for_tokenizer(plan: Plan, cwd: Path) -> list[str]:
    texts: list[str] = []
    for st in plan.stages:
        table, _ = load_rows(st, cwd)
        for col in ("messages", "prompt", "completion", "chosen", "rejected"):
            if col in table.column_names:
                for turns in table[col].to_pylist():
                    texts += [m["content"] for m in turns] if isinstance(turns, list) else [str(turns)]
    return texts


def base_model(plan: Plan, out: Path, cwd: Path) -> Path:
    spec = plan.model
    if spec.tiny is not None:
        base = out / "base"
        if not (base / "config.json").exists():
            build_tiny(spec.tiny, _texts_for_tokenizer(plan, cwd), base, plan.seed)
        return base
    if spec.gguf is not None:
        return gguf_base(spec.gguf)
    path = Path(spec.path).expanduser()
    return path if path.is_absolute() else cwd / path


def _tokens_per_second(trainer, seconds: float) -> float | None:
    tokens = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]
    return round(float(tokens[-1]) / seconds, 1) if tokens and seconds > 0 else None


def train_stage(plan: Plan, index: int, base: Path, tokenizer, prev: Path | None, out: Path, cwd: Path) -> dict[str, Any]:
    from trl import DPOConfig, SFTConfig

    from train.trainers import OrderedSFTTrainer, PlanDPOTrainer

    st = plan.stages[index]
    stage_dir = out / f"{index + 1:02d}-{st.name}"
    seed = st.seed if st.seed is not None else plan.seed + index
    table, hashes = load_rows(st, cwd)
    order = row_order(st, table, seed)
    dataset = as_dataset(table, order)
    resume = prev if st.resume_from == "previous" else None
    torch.manual_seed(seed)
    model = load_for_training(base, plan.model, plan.adapter, resume)
    start = params_digest(model)
    steps = st.max_steps or math.ceil(len(order) / (st.batch_size * st.grad_accum))
    common = dict(output_dir=str(stage_dir / "trainer"), max_steps=steps, per_device_train_batch_size=st.batch_size,
                  gradient_accumulation_steps=st.grad_accum, learning_rate=st.learning_rate, use_cpu=not torch.cuda.is_available(),
                  bf16=False, report_to=[], max_length=st.max_length, gradient_checkpointing=False, save_strategy="no",
                  logging_steps=1, seed=seed, data_seed=seed, disable_tqdm=True)
    if st.method == "sft":
        if "generation" not in (tokenizer.chat_template or ""):
            # TRL trains on assistant turns only when the template marks them; it refuses otherwise.
            raise FactoryError(f"stage {st.name}: the model's chat template has no {{% generation %}} blocks around assistant "
                               "turns, which TRL needs to train on the answers only; set model.chat_template in the plan "
                               "(train/models.py chat_template() builds one)")
        args = SFTConfig(packing=st.packing, assistant_only_loss="messages" in dataset.column_names, **common)
        trainer = OrderedSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    else:
        ref = load_reference(base, plan.model, plan.adapter, resume)
        if ref is None and plan.adapter.kind == "full":
            ref = copy.deepcopy(model).eval()
        args = DPOConfig(beta=st.beta, loss_type=[st.loss if st.loss in TRL_LOSSES else "sigmoid"], **common)
        trainer = PlanDPOTrainer(model=model, ref_model=ref, args=args, train_dataset=dataset, processing_class=tokenizer,
                                 plan_loss=st.loss, beta_prime=st.beta_prime,
                                 beta_end=st.beta_end if st.beta_schedule == "linear" else None)
    if plan.adapter.kind == "qlora":
        # TRL casts QLoRA adapters to bf16 (the QLoRA paper's recipe); the plan's compute_dtype wins,
        # so that what is trained is what a reload of the saved adapter computes.
        for p in trainer.model.parameters():
            if p.requires_grad:
                p.data = p.data.to(DTYPES[plan.adapter.compute_dtype])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)        # the plan prints one line per stage instead
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    stage_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(stage_dir)
    tokenizer.save_pretrained(stage_dir)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    report = {
        "stage": st.name, "method": st.method, "loss_type": st.loss if st.method == "dpo" else "nll", "rows": table.num_rows,
        "draws": len(order), "steps": trainer.state.global_step, "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None, "train_loss": result.training_loss, "seconds": round(seconds, 2),
        "tokens_per_second": _tokens_per_second(trainer, seconds), "resumed_from": str(resume) if resume else None,
        "start_params_sha256": start, "end_params_sha256": params_digest(model),
        "draws_per_domain": dict(sorted(Counter(table["domain"].take(order[: steps * st.batch_size * st.grad_accum]).to_pylist()).items()))
        if "domain" in table.column_names else {},
        "data": hashes, "checkpoint": str(stage_dir),
    }
    (stage_dir / "stage.json").write_text(json.dumps(report, indent=2))
    return {"report": report, "model": model}


def run_plan(plan: Plan, as_written: dict, plan_text: str, out: Path | None = None, cwd: Path | None = None,
             on_stage=None) -> dict[str, Any]:
    cwd = cwd or Path.cwd()
    out = Path(out or plan.output or f"runs/{plan.name}")
    out = out if out.is_absolute() else cwd / out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(plan.seed)
    base = base_model(plan, out, cwd)
    tokenizer = load_tokenizer(base)
    if plan.model.chat_template:
        tokenizer.chat_template = plan.model.chat_template
    resolved: dict[str, Any] = {"plan": plan.model_dump(mode="json"), "as_written": as_written,
                                "plan_sha256": hashlib.sha256(plan_text.encode()).hexdigest(), "base_model": str(base),
                                "versions": _versions(), "stages": []}
    prev: Path | None = None
    model = None
    for i in range(len(plan.stages)):
        done = train_stage(plan, i, base, tokenizer, prev, out, cwd)
        model = done["model"]
        resolved["stages"].append(done["report"])
        prev = Path(done["report"]["checkpoint"])
        if on_stage:
            on_stage(done["report"])
        (out / "plan.resolved.json").write_text(json.dumps(resolved, indent=2))
    if plan.adapter.merge and plan.adapter.kind != "full" and model is not None:
        resolved["merged"] = str(merge_and_save(model, tokenizer, out / "merged"))
    if plan.eval is not None and model is not None:
        from train.data import export_files
        from train.evaluate import evaluate
        import pyarrow as pa
        import pyarrow.parquet as pq

        files, hashes = export_files(plan.eval.data, plan.eval.data.export or "sft", cwd)
        rows = pa.concat_tables(pq.read_table(f) for f in files).to_pylist()
        if plan.eval.data.domains:
            rows = [r for r in rows if r.get("domain") in plan.eval.data.domains]
        resolved["eval"] = {"data": hashes, **evaluate(model, tokenizer, rows[: plan.eval.rows], plan.eval.max_new_tokens,
                                                       plan.eval.ablations, plan.seed)}
        (out / "eval.json").write_text(json.dumps(resolved["eval"], indent=2))
    (out / "plan.resolved.json").write_text(json.dumps(resolved, indent=2))
    resolved["out"] = str(out)
    return resolved


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "cot-factory"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
