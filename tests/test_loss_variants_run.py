"""The new pairwise methods train end to end on the tiny model, and the reference-free ones (SimPO,
ORPO) never switch the adapter off: no reference forward, in training or evaluation.

Counted on the real run: every `align.models.reference.adapter_off` (the only way a reference is
scored here: AdapterOffReference and precompute both go through it) and every
`SequenceScorer.forward`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
from run_helpers import adapter, run_tiny

import align.models.reference as reference
from align.models.logprobs import SequenceScorer


@dataclass
class Counted:
    run_dir: Path
    summary: dict
    disables: int
    forwards: int

    @property
    def rows(self) -> list[dict]:
        return [json.loads(ln) for ln in (self.run_dir / "metrics.jsonl").read_text().splitlines()]


RUNS = {
    "simpo": ("beta=2.0", "simpo_gamma=0.3"),
    "orpo": ("beta=0.1",),
    "rpo": ("rpo_alpha=0.5",),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Counted]:
    out: dict[str, Counted] = {}
    for method, overrides in RUNS.items():
        counts = {"disables": 0, "forwards": 0}
        disable, forward = reference.adapter_off, SequenceScorer.forward

        def counting_disable(model, _orig=disable, _c=counts):
            _c["disables"] += 1
            return _orig(model)

        def counting_forward(self, *a, _orig=forward, _c=counts, **kw):
            _c["forwards"] += 1
            return _orig(self, *a, **kw)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(reference, "adapter_off", counting_disable)
            mp.setattr(SequenceScorer, "forward", counting_forward)
            run_dir = tmp_path_factory.mktemp(method)
            summary = run_tiny(run_dir, f"method={method}", *overrides)
        out[method] = Counted(run_dir, summary, counts["disables"], counts["forwards"])
    return out


@pytest.mark.parametrize("method", ["simpo", "orpo"])
def test_reference_free_methods_run_no_reference_forward(runs, method):
    """0 adapter-off passes. And the forward count says the same: the reference run (rpo, same
    steps and data) makes one forward per disable on top of its policy forwards, and skips one policy
    forward (the before-training evaluation, where a fresh adapter's policy *is* the reference), so
    forwards(reference-free) = forwards(rpo) - disables(rpo) + 1."""
    free, ref = runs[method], runs["rpo"]
    assert free.disables == 0
    assert ref.disables >= 5  # 4 training micro-batches + the held-out batch (memoised), at least
    assert free.forwards == ref.forwards - ref.disables + 1


@pytest.mark.parametrize("method", sorted(RUNS))
def test_new_methods_train_end_to_end(runs, method):
    """Four steps without a skipped one, the adapter moved, the manifest names the objective."""
    r = runs[method]
    assert r.summary["steps"] == 4 and r.summary["skipped_steps"] == 0
    assert max(float(v.abs().max()) for k, v in adapter(r.run_dir).items() if "lora_B" in k) > 1e-5
    manifest = json.loads((r.run_dir / "manifest.json").read_text())
    assert manifest["objective"]["objective"] == method
    free = method in ("simpo", "orpo")
    assert manifest["reference"] == ("none" if free else "adapter_off")
    train = [row for row in r.rows if "train/loss" in row]
    assert len(train) == 4


def _first_train_row(r: Counted) -> dict:
    return next(row for row in r.rows if "train/loss" in row)


def test_method_keys_reach_the_objective(runs):
    """The recipe's simpo_gamma and rpo_alpha are the values the objective ran with (manifest and
    loss). At step 1 the fresh adapter makes policy == reference, so RPO's DPO term is exactly log 2
    per pair: train/loss = log 2 + α·train/nll with α = 0.5. ORPO's loss is its NLL plus a positive
    odds-ratio term."""
    simpo = json.loads((runs["simpo"].run_dir / "manifest.json").read_text())["objective"]
    rpo = json.loads((runs["rpo"].run_dir / "manifest.json").read_text())["objective"]
    assert (simpo["beta"], simpo["gamma"]) == (2.0, 0.3)
    assert rpo["alpha"] == 0.5
    row = _first_train_row(runs["rpo"])
    assert row["train/nll"] > 1.0  # a random tiny model: ~10 nats per token
    assert row["train/loss"] == pytest.approx(math.log(2) + 0.5 * row["train/nll"], abs=1e-4)
    row = _first_train_row(runs["orpo"])
    assert 0 < row["train/nll"] < row["train/loss"]
