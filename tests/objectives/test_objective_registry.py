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
    assert set(PAIRWISE_OBJECTIVES) == {"dpo", "ipo", "hinge"}


@pytest.mark.parametrize("name", sorted(PAIRWISE_OBJECTIVES))
def test_spec_is_consistent(name):
    spec = get_objective(name)
    assert spec.name == name and spec.kind == "pairwise"
    assert spec.normalisation and spec.reference
    params = inspect.signature(spec.fn).parameters
    assert {"policy", "reference", "beta"} <= set(params)
    assert set(spec.kwargs) <= set(params), "declared kwargs must be accepted by fn"


@pytest.mark.parametrize("name", sorted(PAIRWISE_OBJECTIVES))
def test_all_pairwise_objectives_share_metrics(pairs, name):
    """Every pairwise objective reports the same keys and values (one shared helper), each [B], detached."""
    policy, reference = pairs(
        pi_c=[-10.0, -3.0], ref_c=[-12.0, -2.0], pi_r=[-15.0, -1.0], ref_r=[-14.0, -2.0], grad=True
    )
    out = get_objective(name).fn(policy, reference, beta=0.1)
    assert set(out.metrics) == METRIC_KEYS
    assert out.loss.shape == (2,)
    torch.testing.assert_close(out.metrics["rewards/margins"], torch.tensor([0.3, -0.2], dtype=torch.float64))
    assert all(v.shape == (2,) and not v.requires_grad for v in out.metrics.values())


def test_unknown_name_suggests_close_match():
    with pytest.raises(ValueError, match=r"Did you mean 'dpo'\?.*dpo, hinge, ipo"):
        get_objective("dpp")


def test_unknown_name_without_close_match_lists_known():
    with pytest.raises(ValueError) as info:
        get_objective("zzzzzz")
    assert "Did you mean" not in str(info.value)
    assert "dpo, hinge, ipo" in str(info.value)


def test_spec_is_frozen():
    with pytest.raises(AttributeError):
        get_objective("dpo").name = "x"  # type: ignore[misc]
