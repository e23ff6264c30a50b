"""Recipe checks for the loss variants: each is one `method:` line, its own key applies to it only,
ranges hold, and reference-free methods refuse `reference: precompute`; all before a model loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from align.methods import build_method, load_recipe
from align.util.errors import RecipeError

TINY = Path(__file__).resolve().parent / "tiny.yaml"


@pytest.mark.parametrize(
    ("method", "kwargs", "needs_reference"),
    [
        ("dpo_norm", {}, True),
        ("rpo", {"alpha": 1.0}, True),  # Pang et al.'s α when rpo_alpha is unset
        ("apo_zero", {}, True),
        ("simpo", {"gamma": 0.5}, False),  # TRL's simpo_gamma default when unset
        ("orpo", {}, False),
    ],
)
def test_one_line_methods_build_with_defaults(method, kwargs, needs_reference):
    m = build_method(load_recipe(TINY, [f"method={method}"]))
    assert m.spec.name == method and m.kwargs == kwargs
    assert m.needs_reference is needs_reference
    assert m.manifest()["objective"] == method and m.manifest()["paper"]


def test_method_keys_set_the_objective_arguments():
    assert build_method(load_recipe(TINY, ["method=rpo", "rpo_alpha=0.25"])).kwargs == {"alpha": 0.25}
    assert build_method(load_recipe(TINY, ["method=simpo", "simpo_gamma=0"])).kwargs == {"gamma": 0.0}


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["rpo_alpha=0.5"], "rpo_alpha: applies to method 'rpo' only, not 'dpo'"),
        (["method=simpo", "rpo_alpha=0.5"], "rpo_alpha: applies to method 'rpo' only, not 'simpo'"),
        (["method=orpo", "simpo_gamma=1"], "simpo_gamma: applies to method 'simpo' only, not 'orpo'"),
        (["method=kto", "simpo_gamma=1"], "simpo_gamma: applies to method 'simpo' only, not 'kto'"),
        (["method=reward", "rpo_alpha=1"], "rpo_alpha: applies to method 'rpo' only, not 'reward'"),
        (["method=rpo", "rpo_alpha=0"], r"rpo_alpha: 0.0 is out of range \(0, 1000\]"),
        (["method=simpo", "simpo_gamma=-0.5"], r"simpo_gamma: -0.5 is out of range \[0, 100\]"),
        (["method=simpo", "beta=0"], "beta: must be > 0 for 'simpo'"),
        (["method=simpo", "label_smoothing=0.1"], "label_smoothing applies to dpo/cdpo only, not 'simpo'"),
        (["method=dpo_norm", "ipo_normalization=sum"], "ipo_normalization applies to ipo only"),
        (["method=simpo", "reference=precompute"], "reference: method 'simpo' is reference-free"),
        (["method=orpo", "reference=precompute"], "reference: method 'orpo' is reference-free"),
        (["method=orpo", "data.format=unpaired"], "method 'orpo' needs pairwise data"),
    ],
)
def test_bad_variant_recipes_fail_early(overrides, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe(TINY, overrides)


def test_reference_methods_still_take_precompute():
    for method in ("dpo_norm", "rpo", "apo_zero"):
        assert load_recipe(TINY, [f"method={method}", "reference=precompute"]).reference == "precompute"
