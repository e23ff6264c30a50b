"""bench/: the FLOPs formula against a hand computation, the peak table, TRL's pinned precision,
the per-peer table, the random-model shapes and the tokenizer view of a bare checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import dpo_vs_trl  # noqa: E402
from flops import Shape, Work, mfu, peak_tflops, step_flops  # noqa: E402
from peers import BenchConfig, trl_args  # noqa: E402
from random_model import SHAPES, has_tokenizer, shape_config, with_tokenizer  # noqa: E402

SMOLLM2_135M = Shape(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, head_dim=64, vocab=49152)


def test_flops_of_one_pair_on_the_135m_shape_by_hand():
    # per layer: q 576*576 + k, v 576*192 each + o 576*576 + gate, up, down 576*1536 each = 3,538,944
    assert SMOLLM2_135M.decoder_params() == 30 * 3_538_944 == 106_168_320
    # r=16: q, o 16*(576+576); k, v 16*(576+192); gate, up, down 16*(576+1536) -> 162,816 per layer
    assert SMOLLM2_135M.lora_params(16) == 30 * 162_816
    # one pair: prompt 10, chosen 5, rejected 3 -> sequences of 15 and 13 tokens, 8 scored
    work = Work.of([15, 13], scored=8)
    assert work == Work(tokens=28, attn_pairs=15 * 16 + 13 * 14, scored=8)
    got = step_flops(SMOLLM2_135M, SMOLLM2_135M.lora_params(16), work)
    assert got["dense"] == 6 * 106_168_320 * 28 == 17_836_277_760
    assert got["lora"] == 6 * 4_884_480 * 28 == 820_592_640
    assert got["lm_head"] == 6 * 576 * 49152 * 8 == 1_358_954_496
    assert got["attention"] == 8 * 30 * 9 * 64 * 422 == 58_337_280
    assert got["total"] == 20_074_162_176


def test_shape_reads_a_transformers_config_and_counts_what_peft_trains():
    from align.models.load import add_lora, tiny_config, tiny_model
    from align.recipe import LoraConfig

    shape = Shape.from_config(tiny_config())
    assert (shape.hidden, shape.kv_heads, shape.head_dim) == (64, 2, 16)
    peft = add_lora(tiny_model(), LoraConfig(r=4, target_modules="all-linear"))
    assert shape.lora_params(4) == sum(p.numel() for p in peft.parameters() if p.requires_grad)


def test_the_17b_shape_has_17b_parameters():
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(**shape_config("1.7b"))
    with torch.device("meta"):
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    shape = Shape.from_config(cfg)
    norms = shape.hidden * (2 * shape.layers + 1)
    assert n == shape.decoder_params() + shape.vocab * shape.hidden + norms  # tied head: one embedding
    assert 1.70e9 < n < 1.72e9 and cfg.tie_word_embeddings and shape.head_dim == 64
    assert SHAPES["135m"] == {} and Shape.from_config(LlamaConfig(**shape_config("135m"))) == SMOLLM2_135M


@pytest.mark.parametrize(
    "name, precision, peak",
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.0),
        ("NVIDIA H100 80GB HBM3", "fp32", 67.0),
        ("NVIDIA H100 PCIe", "bf16", 756.0),
        ("NVIDIA H200", "bf16", 989.0),
        ("NVIDIA H200 NVL", "fp32", 60.0),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
        ("Tesla T4", "bf16", None),
    ],
)
def test_peak_table(name, precision, peak):
    assert peak_tflops(name, precision) == peak


def test_mfu():
    assert mfu(989e12 * 0.25, 1.0, 989.0) == pytest.approx(0.25)
    assert mfu(1e12, 1.0, None) is None


def test_trl_precision_is_pinned_both_ways():
    from trl import DPOConfig

    fp32 = DPOConfig(**trl_args(BenchConfig(workdir="/tmp/x")))
    assert (fp32.bf16, fp32.fp16, fp32.use_liger_kernel) == (False, False, False)  # TRL's default is bf16
    bf16 = DPOConfig(**trl_args(BenchConfig(workdir="/tmp/x", precision="bf16"), liger=True))
    assert (bf16.bf16, bf16.fp16, bf16.use_liger_kernel) == (True, False, True)
    assert bf16.use_cpu and not bf16.gradient_checkpointing  # TRL's default is on


def _summary(pairs: float, mem: float) -> dict:
    keys = ("tokens_per_s", "median_step_s", "model_tflops_per_s", "mean_loss", "peak_rss_gib")
    return {"pairs_per_s": pairs, "peak_gpu_gib": mem, "mfu": 0.5, **dict.fromkeys(keys, 1.0)}


def test_table_has_a_row_per_peer_with_ratios():
    summaries = {"ours": _summary(4.0, 10.0), "trl": _summary(1.0, 20.0)}
    text = dpo_vs_trl.table(summaries, {"trl_liger": "RuntimeError: boom"}, cuda=True)
    rows = text.splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == ["| align", "| TRL DPOTrainer", "| TRL DPOTrainer + Liger"]
    assert rows[1].endswith("| 4.00x | 0.50x |")
    assert "failed: RuntimeError: boom" in rows[2] and "peak GPU mem" in text.splitlines()[0]


def test_loss_check_tolerance_follows_the_precision():
    ours, peer = [0.69, 0.60], [0.69, 0.61]
    assert not dpo_vs_trl.loss_check(ours, peer, "fp32")["ok"]
    assert dpo_vs_trl.loss_check(ours, peer, "bf16")["ok"]


def test_failure_reason_is_the_exception_line():
    err = "Traceback (most recent call last):\n  File x\nValueError: Your setup doesn't support bf16/gpu.\n"
    assert dpo_vs_trl.failure_reason(err) == "ValueError: Your setup doesn't support bf16/gpu."


def test_bare_checkpoint_gets_the_smollm2_tokenizer(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text("{}")
    view = Path(with_tokenizer(str(bare), tmp_path / "work"))
    assert view != bare and has_tokenizer(view) and (view / "config.json").resolve() == bare / "config.json"
    assert not has_tokenizer(bare)  # the checkpoint itself is untouched
    assert with_tokenizer(str(view), tmp_path / "other") == str(view)  # has one: used as is
    assert with_tokenizer("tiny-smollm2", tmp_path) == "tiny-smollm2"
