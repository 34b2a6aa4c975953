"""Evaluation: greedy generation on a dev split, exact match after the factory's own answer
normalisation (factory/answers.py), and the draft ablations of the user's third document —
the same rows prompted with their student draft (full), without it (no-draft) and with another
row's draft (shuffled-draft). A model that really uses its draft scores lower without it."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from factory.answers import answers_match
from factory.exports.dpo import STUDENT_GLUE
from factory.teacher.parse import parse_reply

_ANSWER = re.compile(r"<answer>\s*(.*?)\s*(?:</answer>|$)", re.S)


def extract_answer(text: str) -> str | None:
    """The SFT format's <answer>…</answer>; otherwise what the teacher's parser reads as the final
    answer (Final answer:, ####, \\boxed{}, "the answer is"); otherwise the last line."""
    m = _ANSWER.search(text)
    if m:
        return m.group(1).strip()
    parsed = parse_reply(text).answer
    return parsed if parsed is not None else (text.strip().splitlines()[-1] if text.strip() else None)


def eval_items(rows: list[dict]) -> list[dict]:
    """(prompt turns, gold answer, draft) from SFT rows (messages / prompt+completion) or DPO rows."""
    items = []
    for r in rows:
        if "messages" in r and r["messages"]:
            prompt, reference = r["messages"][:-1], r["messages"][-1]["content"]
        elif "completion" in r:
            prompt, reference = r["prompt"], r["completion"][-1]["content"]
        else:
            prompt, reference = r["prompt"], r["chosen"][-1]["content"]
        gold = extract_answer(reference)
        if not prompt or gold is None:
            continue
        user = prompt[-1]["content"]
        question, _, draft = user.partition(STUDENT_GLUE)
        items.append({"prompt": prompt, "gold": gold, "question": question, "draft": draft or None})
    return items


def _with_draft(item: dict, draft: str | None) -> list[dict]:
    content = item["question"] + (STUDENT_GLUE + draft if draft else "")
    return item["prompt"][:-1] + [{"role": "user", "content": content}]


@torch.no_grad()
def generate(model, tokenizer, prompt: list[dict], max_new_tokens: int) -> str:
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids = {k: v.to(model.device) for k, v in ids.items()}
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def evaluate(model, tokenizer, rows: list[dict], max_new_tokens: int, ablations: bool, seed: int = 0) -> dict[str, Any]:
    model.eval()
    items = eval_items(rows)
    with_draft = [it for it in items if it["draft"]]
    variants: dict[str, list[tuple[dict, list[dict]]]] = {"full": [(it, it["prompt"]) for it in items]}
    if ablations and len(with_draft) >= 2:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(with_draft))
        perm = np.where(perm == np.arange(len(perm)), (perm + 1) % len(perm), perm)     # never its own draft
        variants["full"] = [(it, it["prompt"]) for it in with_draft]
        variants["no_draft"] = [(it, _with_draft(it, None)) for it in with_draft]
        variants["shuffled_draft"] = [(it, _with_draft(it, with_draft[j]["draft"])) for it, j in zip(with_draft, perm)]
    results: dict[str, Any] = {"rows": len(items), "rows_with_draft": len(with_draft), "variants": {}}
    for name, pairs in variants.items():
        right = 0
        for it, prompt in pairs:
            answer = extract_answer(generate(model, tokenizer, prompt, max_new_tokens))
            right += answers_match(answer, it["gold"]) is True
        results["variants"][name] = {"rows": len(pairs), "correct": right, "accuracy": right / len(pairs) if pairs else None}
    return results


@torch.no_grad()
def heldout_loss(model, tokenizer, rows: list[dict], max_length: int = 256, batch_size: int = 8) -> float:
    """Mean negative log-likelihood of the assistant turn of SFT rows (token-weighted), batched
    with right padding (padding and prompt tokens carry no loss)."""
    model.eval()
    seqs = []
    for r in rows:
        msgs = r["messages"]
        prompt = tokenizer.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"][:max_length]
        if len(full) > len(prompt):
            seqs.append((full, len(prompt)))
    total, count = 0.0, 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for i in range(0, len(seqs), batch_size):
        part = seqs[i:i + batch_size]
        width = max(len(f) for f, _ in part)
        ids = torch.full((len(part), width), pad, dtype=torch.long)
        mask = torch.zeros((len(part), width), dtype=torch.long)
        labels = torch.full((len(part), width), -100, dtype=torch.long)
        for j, (full, n_prompt) in enumerate(part):
            ids[j, : len(full)] = torch.tensor(full)
            mask[j, : len(full)] = 1
            labels[j, n_prompt: len(full)] = torch.tensor(full[n_prompt:])
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits[:, :-1].float()
        target = labels[:, 1:].to(model.device)
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100, reduction="sum")
        total += nll.item()
        count += int((target != -100).sum())
    return total / max(count, 1)
