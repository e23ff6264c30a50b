"""Builders for tiny float64 PairLogps so hand-computed expectations compare exactly."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from align.objectives import PairLogps, SeqLogps


def _seq(sums: Sequence[float], n_tokens: Sequence[float] | None, grad: bool) -> SeqLogps:
    s = torch.tensor(sums, dtype=torch.float64, requires_grad=grad)
    n = torch.tensor(n_tokens if n_tokens is not None else [1.0] * len(sums), dtype=torch.float64)
    return SeqLogps(sum=s, n_tokens=n)


def make_pairs(
    pi_c: Sequence[float],
    ref_c: Sequence[float],
    pi_r: Sequence[float],
    ref_r: Sequence[float],
    n_c: Sequence[float] | None = None,
    n_r: Sequence[float] | None = None,
    grad: bool = False,
) -> tuple[PairLogps, PairLogps]:
    """(policy, reference) for B pairs; reference never requires grad (it is frozen in training)."""
    policy = PairLogps(_seq(pi_c, n_c, grad), _seq(pi_r, n_r, grad))
    reference = PairLogps(_seq(ref_c, n_c, False), _seq(ref_r, n_r, False))
    return policy, reference


@pytest.fixture
def pairs():
    return make_pairs
