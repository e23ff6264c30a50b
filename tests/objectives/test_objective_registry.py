"""Registry: names, spec consistency, did-you-mean errors, and one metrics schema for all objectives."""

from __future__ import annotations

import inspect

import pytest
import torch

from align.objectives import PAIRWISE_OBJECTIVES, get_objective

METRIC_KEYS = {
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
}


def test_registered_names():
    assert set(PAIRWISE_OBJECTIVES) == {"dpo", "ipo", "hinge", "dpo_norm", "rpo", "apo_zero", "simpo", "orpo"}
    assert {n for n, s in PAIRWISE_OBJECTIVES.items() if not s.needs_reference} == {"simpo", "orpo"}


@pytest.mark.parametrize("name", sorted(PAIRWISE_OBJECTIVES))
def test_spec_is_consistent(name):
    spec = get_objective(name)
    assert spec.name == name and spec.kind == "pairwise"
    assert spec.normalisation and spec.reference
    params = inspect.signature(spec.fn).parameters
    assert {"policy", "reference", "beta"} <= set(params)
    assert set(spec.kwargs) <= set(params), "declared kwargs must be accepted by fn"


EXTRA_KEYS = {"rpo": {"nll"}, "orpo": {"nll", "orpo/log_odds"}}


@pytest.mark.parametrize("name", sorted(PAIRWISE_OBJECTIVES))
def test_all_pairwise_objectives_share_metrics(pairs, name):
    """Every pairwise objective reports the same keys and values (one shared helper per kind), each
    [B], detached. With a reference: margins = β·(summed log-ratio margin) = 0.1·[3, -2]. Without:
    β·(mean π_c - mean π_r) with n_c = [2, 1], n_r = [5, 1]: 0.1·[-5 + 3, -3 + 1] = [-0.2, -0.2]."""
    spec = get_objective(name)
    policy, reference = pairs(
        pi_c=[-10.0, -3.0],
        ref_c=[-12.0, -2.0],
        pi_r=[-15.0, -1.0],
        ref_r=[-14.0, -2.0],
        n_c=[2.0, 1.0],
        n_r=[5.0, 1.0],
        grad=True,
    )
    out = spec.fn(policy, reference if spec.needs_reference else None, beta=0.1)
    assert set(out.metrics) == METRIC_KEYS | EXTRA_KEYS.get(name, set())
    assert out.loss.shape == (2,) and out.loss.requires_grad
    margins = [0.3, -0.2] if spec.needs_reference else [-0.2, -0.2]
    torch.testing.assert_close(out.metrics["rewards/margins"], torch.tensor(margins, dtype=torch.float64))
    torch.testing.assert_close(out.metrics["logps/chosen"], torch.tensor([-10.0, -3.0], dtype=torch.float64))
    assert all(v.shape == (2,) and not v.requires_grad for v in out.metrics.values())


@pytest.mark.parametrize("name", ["simpo", "orpo"])
def test_reference_free_objectives_refuse_a_reference(pairs, name):
    with pytest.raises(ValueError, match="reference-free"):
        get_objective(name).fn(*pairs(pi_c=[-1.0], ref_c=[-1.0], pi_r=[-2.0], ref_r=[-2.0]), beta=0.1)


def test_unknown_name_suggests_close_match():
    with pytest.raises(ValueError, match=r"Did you mean 'dpo'\?.*apo_zero, dpo, dpo_norm, hinge, ipo, orpo"):
        get_objective("dpp")


def test_unknown_name_without_close_match_lists_known():
    with pytest.raises(ValueError) as info:
        get_objective("zzzzzz")
    assert "Did you mean" not in str(info.value)
    assert "apo_zero, dpo, dpo_norm, hinge, ipo, orpo, rpo, sft, simpo." in str(info.value)


def test_spec_is_frozen():
    with pytest.raises(AttributeError):
        get_objective("dpo").name = "x"  # type: ignore[misc]
