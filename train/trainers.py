"""TRL trainers as the plan uses them: the row order comes from train/data.py (sequential
sampler), DPO gets Cal-DPO / Dr-DPO, and β can follow a schedule."""

from __future__ import annotations

import torch
from torch.utils.data import SequentialSampler
from trl import DPOTrainer, SFTTrainer

from train.losses import batch_loss


class OrderedSFTTrainer(SFTTrainer):
    def _get_train_sampler(self, train_dataset=None):
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)


def sequence_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Σ log p(token) over the completion tokens of each sequence."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    targets = input_ids[:, 1:]
    per_token = torch.gather(logits.float().log_softmax(-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    return (per_token * completion_mask[:, 1:].to(per_token.dtype)).sum(dim=1)


class PlanDPOTrainer(DPOTrainer):
    """DPOTrainer with a sequential sampler, a β schedule and two extra losses. TRL's own losses
    (sigmoid, ipo, hinge, …) run TRL's code; cal_dpo and dr_dpo compute the sequence
    log-probabilities here and apply train/losses.py."""

    def __init__(self, *args, plan_loss: str = "sigmoid", beta_prime: float = 1.0, beta_end: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.plan_loss = plan_loss
        self.beta_prime = beta_prime
        self.beta_start = self.beta
        self.beta_end = beta_end

    def _get_train_sampler(self, train_dataset=None):
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    def _scheduled_beta(self) -> float:
        if self.beta_end is None or not self.state.max_steps:
            return self.beta_start
        frac = min(1.0, self.state.global_step / max(1, self.state.max_steps - 1))
        return self.beta_start + frac * (self.beta_end - self.beta_start)

    def _compute_loss(self, model, inputs, return_outputs):
        self.beta = self._scheduled_beta()
        if self.plan_loss not in ("cal_dpo", "dr_dpo"):
            return super()._compute_loss(model, inputs, return_outputs)
        ids, mask, comp = inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"]
        logps = sequence_logps(model, ids, mask, comp)
        with torch.no_grad():
            if "ref_chosen_logps" in inputs:
                ref = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]])
            elif self.ref_model is not None:
                ref = sequence_logps(self.ref_model, ids, mask, comp)
            else:                                   # PEFT: the reference is the model without its adapter
                with self.accelerator.unwrap_model(model).disable_adapter():
                    ref = sequence_logps(model, ids, mask, comp)
        chosen, rejected = logps.chunk(2)
        ref_c, ref_r = ref.chunk(2)
        h_c, h_r = chosen - ref_c, rejected - ref_r
        loss = batch_loss(self.plan_loss, h_c, h_r, self.beta, self.beta_prime)
        mode = "train" if model.training else "eval"
        self._metrics[mode]["rewards/margins"].append((self.beta * (h_c - h_r)).mean().item())
        self._metrics[mode]["rewards/accuracies"].append((h_c > h_r).float().mean().item())
        return (loss, {}) if return_outputs else loss
