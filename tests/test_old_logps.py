"""`ppo.old_logps` / `online.old_logps`: "sampler" takes the sampling-time log-probs from the
sampling loop instead of a forward. Same samples, an adapter within fp32 noise of the forward's,
and first-epoch ratios that are 1 up to that noise (exactly 1 with the forward)."""

from __future__ import annotations

import pytest
from run_helpers import ROOT, adapter, max_abs_diff, metric_values

from align.methods import load_recipe
from align.train import run
from align.util.errors import RecipeError

CASES = {
    "ppo": (ROOT / "tests" / "ppo_tiny.yaml", "ppo", ("ppo.epochs=1",), "train/policy/approx_kl"),
    "rloo": (
        ROOT / "tests" / "online_tiny.yaml",
        "online",
        ("method=rloo", "online.epochs=1"),
        "train/kl_ref",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sampler_log_probs_train_like_the_forward(tmp_path, case):
    recipe, section, extra, key = CASES[case]
    runs = {}
    for how in ("forward", "sampler"):
        out = tmp_path / how
        over = [f"output_dir={out}", f"{section}.old_logps={how}", "train.layout=padded", *extra]
        run(load_recipe(recipe, over))
        runs[how] = out
    fwd, smp = runs["forward"], runs["sampler"]
    assert metric_values(fwd, "train/score") == metric_values(smp, "train/score")  # the same samples
    assert max_abs_diff(adapter(fwd), adapter(smp)) < 1e-4
    if case == "ppo":  # one epoch: the update's ratio against the old log-probs
        assert metric_values(fwd, key)[0] == 0.0  # the same forward twice: exactly 1
        assert 0 < abs(metric_values(smp, key)[0]) < 1e-6  # another code path: fp32 noise
    else:  # RLOO's KL in the reward: old log-probs against the reference, at a fresh adapter
        assert metric_values(fwd, key)[0] == 0.0
        assert 0 < abs(metric_values(smp, key)[0]) < 1e-3


@pytest.mark.parametrize("section,recipe", [("ppo", "ppo_tiny.yaml"), ("online", "online_tiny.yaml")])
def test_vllm_cannot_hand_over_sampler_log_probs(section, recipe):
    over = [f"{section}.old_logps=sampler", f"{section}.backend=vllm"]
    with pytest.raises(RecipeError, match=f"{section}.old_logps: 'sampler'"):
        load_recipe(ROOT / "tests" / recipe, over)
