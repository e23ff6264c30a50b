"""A diverging run: non-finite steps are skipped, counted and located; too many in a row stop the
run with a clear error; NaN/inf never reaches a checkpoint, the adapter or a metrics file."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from run_helpers import TINY, run_tiny

import align.methods
from align.cli import main
from align.engine.checkpoint import NonFiniteError, list_checkpoints, save_adapter, save_checkpoint
from align.util.errors import TrainingError


@pytest.fixture
def poison(monkeypatch):
    """Make the training loss NaN at chosen optimizer steps (training calls run with grad enabled)."""

    class Poison:
        steps: set[int] = set()
        calls = 0

        def at(self, *steps: int) -> None:
            self.steps, self.calls = set(steps), 0

    poison = Poison()
    real = align.methods.PairwiseMethod.loss

    def loss(self, policy, reference, batch):
        out = real(self, policy, reference, batch)
        if torch.is_grad_enabled():
            poison.calls += 1
            if poison.calls in poison.steps:
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(align.methods.PairwiseMethod, "loss", loss)
    return poison


def _strict_rows(path) -> list[dict]:
    def no_constants(name):
        raise AssertionError(f"bare {name} in {path}")

    return [json.loads(ln, parse_constant=no_constants) for ln in path.read_text().splitlines()]


def test_isolated_bad_steps_are_skipped_counted_and_located(tmp_path, poison, caplog):
    poison.at(2, 4)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="align.engine.loop"):
        summary = run_tiny(out, "train.max_steps=6", "train.save_every=1", "optim.lr=1e-2")
    assert summary["steps"] == 6 and summary["skipped_steps"] == 2
    warnings = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(warnings) == 2 and warnings[0].startswith(
        "step 2: non-finite loss or gradient; update skipped"
    )
    assert "align_prefs_v1.jsonl:line " in warnings[0]  # the batch's record locations
    rows = _strict_rows(out / "metrics.jsonl")
    assert [r["train/skipped_steps"] for r in rows if "train/lr" in r] == [0, 1, 1, 2, 2, 2]
    assert all("train/loss" not in r for r in rows if r["step"] in (2, 4) and "train/lr" in r)
    for ckpt in list_checkpoints(out):
        from safetensors.torch import load_file

        assert all(torch.isfinite(v).all() for v in load_file(ckpt / "adapter_model.safetensors").values())
    assert json.loads((out / "summary.json").read_text())["skipped_steps"] == 2


def test_consecutive_bad_steps_stop_the_run(tmp_path, poison, capsys):
    poison.at(3, 4, 5, 6)
    out = tmp_path / "run"
    args = ["train.max_steps=8", "train.save_every=1", "train.keep_checkpoints=2", "optim.lr=1e-2"]
    with pytest.raises(TrainingError, match="3 consecutive steps had a non-finite loss"):
        run_tiny(out, *args)
    # the third bad step in a row (5) stops before its checkpoint; 3 and 4 (= step 2 weights) stay
    assert [c.name for c in list_checkpoints(out)] == ["step-0000003", "step-0000004"]
    assert not (out / "adapter").exists() and not (out / "summary.json").exists()
    _strict_rows(out / "metrics.jsonl")
    poison.at(1, 2, 3)
    code = main(["train", str(TINY), f"output_dir={tmp_path / 'cli'}", *args])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "align: error: stopped at step 3: 3 consecutive steps" in err and "max_bad_steps=3" in err


def test_non_finite_weights_are_never_written(tmp_path):
    from accelerate import Accelerator

    from align.models.load import add_lora, tiny_model
    from align.recipe import LoraConfig

    model = add_lora(tiny_model(), LoraConfig(r=4, alpha=8))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    acc = Accelerator(cpu=True)
    from align.engine.checkpoint import TrainState

    good = save_checkpoint(tmp_path, TrainState(step=1), acc, model, opt, sched, keep=1)
    kept = (good / "adapter_model.safetensors").read_bytes()
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(float("inf"))
    with pytest.raises(NonFiniteError, match="NaN/inf"):
        save_checkpoint(tmp_path, TrainState(step=2), acc, model, opt, sched, keep=1)
    with pytest.raises(NonFiniteError):
        save_adapter(tmp_path, model, acc)
    assert list_checkpoints(tmp_path) == [good]  # rotation never ran: the good one stays
    assert (good / "adapter_model.safetensors").read_bytes() == kept
    assert not (tmp_path / "adapter").exists()
