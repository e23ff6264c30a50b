"""Per-token KL estimators and the KL coefficient controllers of RLHF-PPO.

With log-ratio d = log π(y_t|·) - log π_ref(y_t|·) at a sampled token (Schulman 2020, "Approximating
KL divergence"):

    k1 = d                     unbiased, can be negative per token
    k3 = (e^{-d} - 1) + d      unbiased, always >= 0, lower variance

Both estimate KL(π || π_ref) when y_t ~ π. The reward of PPO is `score - β · Σ_t kl_t`.

Adaptive coefficient (Ziegler et al. 2019, Sec. 2.2): after each batch with observed KL `kl`
(per sequence, summed over tokens),

    e = clip(kl / target - 1, -0.2, 0.2);   β ← β · (1 + e · n / horizon)

where n is the number of sequences in that batch. Worked example: β = 0.1, target 6, kl = 9,
n = 64, horizon 10000 → e = 0.2, β = 0.1 · (1 + 0.2 · 0.0064) = 0.100128.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return logp - ref_logp


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    d = logp - ref_logp
    return torch.expm1(-d) + d


KL_ESTIMATORS = {"k1": kl_k1, "k3": kl_k3}


def sequence_kl(
    logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, estimator: str = "k1"
) -> torch.Tensor:
    """[N] KL estimate summed over each row's real tokens (padding, even NaN there, adds 0)."""
    m = mask.bool()
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    kl = KL_ESTIMATORS[estimator](torch.where(m, logp, zero), torch.where(m, ref_logp, zero))
    return torch.where(m, kl, zero).sum(1)


@dataclass
class KLController:
    """β for the KL penalty: fixed (`target` None) or adaptive (Ziegler et al. 2019)."""

    value: float
    target: float | None = None
    horizon: int = 10000

    def update(self, kl: float, n: int) -> float:
        """Move β after a batch of `n` sequences whose mean summed KL was `kl`; returns β."""
        if self.target is not None:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n / self.horizon
        return self.value
