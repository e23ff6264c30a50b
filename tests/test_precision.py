"""Precision: the recipe key, its reconciliation with `accelerate launch`, and a real bf16 run on CPU."""

from __future__ import annotations

import json

import pytest
import torch

from align.engine.precision import ENV, resolve
from align.models.logprobs import _logits_logps
from align.util.errors import RecipeError
from tests.run_helpers import TINY, run_tiny


@pytest.mark.parametrize(
    "recipe, cuda, bf16, launcher, want, source",
    [
        ("auto", False, False, None, "fp32", "auto (CPU)"),
        ("auto", True, True, None, "bf16", "auto (CUDA GPU with bf16)"),
        ("auto", True, False, "no", "fp32", "auto (GPU without bf16)"),
        ("auto", True, True, "fp16", "fp16", "launcher (--mixed_precision fp16)"),
        ("auto", False, False, "bf16", "bf16", "launcher (--mixed_precision bf16)"),
        ("fp32", True, True, "no", "fp32", "recipe"),  # "no" is the launcher's default: no opinion
        ("bf16", False, False, None, "bf16", "recipe"),  # CPU autocast bf16 exists
        ("bf16", True, True, "bf16", "bf16", "recipe"),
    ],
)
def test_resolution(recipe, cuda, bf16, launcher, want, source):
    p = resolve(recipe, "auto", cuda, bf16, launcher)
    assert (p.name, p.source) == (want, source)
    assert p.base_dtype == {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[want]
    assert p.mixed_precision == {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[want]


def test_explicit_model_dtype_wins_over_precision():
    assert resolve("bf16", "float32", True, True).base_dtype == "float32"
    assert resolve("fp32", "bfloat16", False, False).base_dtype == "bfloat16"


@pytest.mark.parametrize(
    "recipe, cuda, bf16, launcher, needle",
    [
        (
            "fp32",
            True,
            True,
            "bf16",
            "the recipe says fp32 but accelerate launch says --mixed_precision bf16",
        ),
        ("bf16", True, True, "fp16", "make them agree, or set precision: auto"),
        ("fp16", False, False, None, "fp16 needs a CUDA GPU"),
        ("auto", False, False, "fp16", "fp16 needs a CUDA GPU"),
        ("bf16", True, False, None, "does not support bf16"),
        ("auto", True, True, "fp8", "--mixed_precision fp8, which align does not support"),
    ],
)
def test_conflicts_are_errors(recipe, cuda, bf16, launcher, needle):
    with pytest.raises(RecipeError, match="precision: ") as e:
        resolve(recipe, "auto", cuda, bf16, launcher)
    assert needle in str(e.value)


def test_launcher_conflict_fails_before_anything_loads(tmp_path, capsys, monkeypatch):
    import align.models.load
    from align.cli import main

    def refuse(*a, **k):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(align.models.load, "load_model", refuse)
    monkeypatch.setenv(ENV, "bf16")
    code = main(["train", str(TINY), f"output_dir={tmp_path / 'run'}", "precision=fp32"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert "precision: the recipe says fp32 but accelerate launch says --mixed_precision bf16" in err


def test_logsoftmax_of_low_precision_logits_runs_in_fp32():
    torch.manual_seed(0)
    logits = (torch.randn(6, 49152) * 8).bfloat16()
    targets = torch.randint(0, 49152, (6,))
    got = _logits_logps(logits, targets)
    assert got.dtype == torch.float32
    want = torch.log_softmax(logits.float(), -1).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # what a bf16 log-softmax would have given is measurably worse
    crude = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1).float()
    assert (crude - want).abs().max() > 1e-3


def test_bf16_run_on_cpu(tmp_path):
    """precision: bf16 autocasts, stores the frozen base in bf16, keeps LoRA (and its saved adapter)
    in fp32, records all of it in the manifest, and trains to finite, changing losses."""
    torch.set_num_threads(1)
    out = tmp_path / "bf16"
    summary = run_tiny(out, "precision=bf16", "train.max_steps=3")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == {
        "precision": "bf16",
        "source": "recipe",
        "autocast": "bfloat16",
        "base_weights": "bfloat16",
        "adapter_weights": "float32",
        "logsoftmax": "float32",
    }
    model = summary["peft_model"]
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if "lora_" not in n} == {torch.bfloat16}
    assert summary["accelerator"].mixed_precision == "bf16"
    assert summary["steps"] == 3 and summary["skipped_steps"] == 0
    assert summary["after"]["eval/loss"] != summary["before"]["eval/loss"]
    from safetensors.torch import load_file

    saved = load_file(out / "adapter" / "adapter_model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.float32}


def test_auto_is_resolved_for_this_machine_and_recorded(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "auto"
    args = ("precision=auto", "train.max_steps=1", "report.eval_before=false", "data.max_eval_examples=0")
    summary = run_tiny(out, *args)
    manifest = json.loads((out / "manifest.json").read_text())
    gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    want = ("bf16", "auto (CUDA GPU with bf16)") if gpu_bf16 else ("fp32", "auto (CPU)")
    assert (manifest["precision"]["precision"], manifest["precision"]["source"]) == want
    base = {p.dtype for n, p in summary["peft_model"].named_parameters() if "lora_" not in n}
    assert base == {torch.bfloat16 if gpu_bf16 else torch.float32}
