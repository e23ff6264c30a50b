"""FSDP2 on CPU (gloo): per-layer wrapping, gathered checkpoints, resume; launcher configs refused.

Accelerate itself enters FSDP only on accelerators (on CPU it runs plain data parallel), so the
whole `align train` path under an FSDP config is a GPU check (../shared/gpu). What runs here is
torch's FSDP2 as Accelerate applies it, on our scorer, with our state gathering and restoring.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from align.errors import RecipeError
from align.logprobs import SequenceScorer
from align.models import add_lora, tiny_model
from align.recipe import LoraConfig
from align.sharding import check_launcher
from tests.run_helpers import ROOT, align_env, free_port, multi_process_overrides


def test_sharded_training_checkpoint_and_resume_equal_one_process(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(ROOT / "tests" / "fsdp_worker.py"),
        str(tmp_path),
    ]
    done = subprocess.run(cmd, env=align_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["world"] == 2
    assert report["units"] == 2 and report["layers_are_fsdp_units"]  # one unit per decoder layer
    assert report["sharded_params"] and report["local_shard_smaller"]  # really sharded
    assert report["keys_equal"]
    assert report["reload_diff"] == 0.0  # the gathered adapter scatters back exactly
    assert report["optimizer_entries"] > 0  # the gathered optimizer state is the whole state
    assert report["max_abs_value"] > 1e-2  # the adapters compared have moved
    assert report["max_abs_diff"] <= 1e-5  # 2 ranks, sharded, checkpointed and resumed == 1 process


def test_multi_process_comparisons_use_gloo_below_two_gpus():
    assert multi_process_overrides(gpus=0) == multi_process_overrides(gpus=1) == ("cpu=true",)
    assert multi_process_overrides(gpus=2) == ()


def test_scorer_names_the_decoder_layer_for_fsdp_wrapping():
    scorer = SequenceScorer(add_lora(tiny_model(), LoraConfig(r=4)))
    assert scorer._no_split_modules == ["LlamaDecoderLayer"]


@pytest.mark.parametrize(
    "env, on_cuda, needle",
    [
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, True, "DeepSpeed is not supported"),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, False, "FSDP needs CUDA GPUs"),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, True, "FSDP2 only"),
    ],
)
def test_launcher_configs_align_cannot_honour(env, on_cuda, needle):
    with pytest.raises(RecipeError, match=needle):
        check_launcher(on_cuda, env)


def test_launcher_configs_align_runs():
    check_launcher(True, {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"})
    check_launcher(False, {"ACCELERATE_USE_FSDP": "false"})
    check_launcher(False, {})


def test_fsdp_config_on_cpu_fails_fast_with_the_reason(tmp_path):
    """The shipped FSDP config, launched here: one clear line per rank, exit 2, nothing trained."""
    cmd = [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--config_file",
        str(ROOT / "recipes" / "accelerate" / "fsdp.yaml"),
        "--num_processes",
        "2",
        "--main_process_port",
        str(free_port()),
        "-m",
        "align",
        "train",
        str(ROOT / "tests" / "tiny.yaml"),
        f"output_dir={tmp_path / 'run'}",
        "cpu=true",  # what this test is about, also on a machine with GPUs
    ]
    done = subprocess.run(cmd, env=align_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "FSDP needs CUDA GPUs" in done.stderr
    assert done.stderr.count("align: error: accelerate launch: FSDP needs CUDA GPUs") == 2  # each rank
    assert "/align/" not in done.stderr  # no traceback through our code (the launcher prints its own)
    assert not (tmp_path / "run" / "adapter").exists()
