"""DPO-family losses on sequence log-probabilities (summed over completion tokens).

With h_c = log π(y_c|x) − log π_ref(y_c|x) and h_r likewise for the rejected answer:

- DPO (sigmoid):  ℓ = −log σ(β (h_c − h_r))
- Cal-DPO (Xiao et al., NeurIPS 2024): the DPO term plus squared calibration terms that pull the
  implicit rewards to fixed targets, so the chosen reward cannot drift down with the rejected one:
      ℓ = −log σ(β (h_c − h_r)) + (h_c − 1/(2β))² + (h_r + 1/(2β))²
- Dr-DPO (Wu et al., 2024, distributionally robust DPO): over a batch of per-pair DPO losses ℓ_i,
      L = −β′ · log( (1/n) Σ_i exp(−ℓ_i / β′) )
  which down-weights pairs with a large loss (likely mislabelled); as β′ → ∞ it tends to the mean
  DPO loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_losses(h_c: torch.Tensor, h_r: torch.Tensor, beta: float) -> torch.Tensor:
    return -F.logsigmoid(beta * (h_c - h_r))


def cal_dpo_losses(h_c: torch.Tensor, h_r: torch.Tensor, beta: float) -> torch.Tensor:
    target = 1.0 / (2.0 * beta)
    return dpo_losses(h_c, h_r, beta) + (h_c - target) ** 2 + (h_r + target) ** 2


def dr_dpo_loss(h_c: torch.Tensor, h_r: torch.Tensor, beta: float, beta_prime: float) -> torch.Tensor:
    per_pair = dpo_losses(h_c, h_r, beta)
    n = torch.tensor(float(per_pair.numel()), dtype=per_pair.dtype, device=per_pair.device)
    return -beta_prime * (torch.logsumexp(-per_pair / beta_prime, dim=0) - torch.log(n))


def batch_loss(kind: str, h_c: torch.Tensor, h_r: torch.Tensor, beta: float, beta_prime: float = 1.0) -> torch.Tensor:
    if kind == "cal_dpo":
        return cal_dpo_losses(h_c, h_r, beta).mean()
    if kind == "dr_dpo":
        return dr_dpo_loss(h_c, h_r, beta, beta_prime)
    if kind == "sigmoid":
        return dpo_losses(h_c, h_r, beta).mean()
    raise ValueError(f"unknown loss {kind!r}")
