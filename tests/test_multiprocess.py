"""A real 2-process run (accelerate launch --multi_gpu: gloo on CPU, NCCL with two GPUs) equals a
1-process run on the same device."""

from __future__ import annotations

import json

import torch
from accelerate.state import PartialState
from accelerate.utils import DistributedType
from run_helpers import TINY, adapter, launch_two, max_abs_diff, multi_process_overrides, run_tiny

from align.engine import precision
from align.methods import load_recipe


def test_two_processes_equal_one(tmp_path):
    common = ("train.max_steps=3", "optim.lr=1e-2", "lora.dropout=0.0")
    run_tiny(tmp_path / "one", "train.per_device_batch_size=4", *common, *multi_process_overrides())
    proc = launch_two(tmp_path / "two", "train.per_device_batch_size=2", *common)
    assert proc.wait(timeout=300) == 0, (tmp_path / "two.log").read_text()[-3000:]
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    # a real process group, not two lone processes: gloo on CPU, NCCL with a GPU per rank
    assert manifest["distributed_type"].endswith("MULTI_CPU" if multi_process_overrides() else "MULTI_GPU")
    # fp32 reduction noise: 1.6e-5 seen on one host (the same code under 1e-5 on another)
    assert max_abs_diff(adapter(tmp_path / "one"), adapter(tmp_path / "two")) < 5e-5


def test_multi_process_comparisons_use_gloo_below_two_gpus():
    """On a one-GPU machine two ranks cannot each have a GPU: compared runs go to CPU (gloo)."""
    assert multi_process_overrides(gpus=0) == multi_process_overrides(gpus=1) == ("cpu=true",)
    assert multi_process_overrides(gpus=2) == ()


def test_below_two_gpus_the_ranks_form_a_gloo_group_on_cpu_in_fp32(monkeypatch):
    """What each rank's Accelerator decides (accelerate/state.py `_prepare_backend`) under `accelerate
    launch --multi_gpu` (LOCAL_RANK set) with a GPU present: NCCL unless cpu=True, then gloo. Without
    cpu=True both ranks of a one-GPU machine would take cuda:0 (`set_device`: local rank % device
    count), which NCCL refuses. The overrides also resolve precision to fp32 on every machine."""
    r = load_recipe(TINY, list(multi_process_overrides(gpus=1)))
    assert r.cpu is True
    assert precision.resolve(r.precision, r.model.dtype, on_cuda=False, bf16_supported=False).name == "fp32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert PartialState._prepare_backend(None, cpu=False) == ("nccl", DistributedType.MULTI_GPU)
    backend, kind = PartialState._prepare_backend(None, cpu=r.cpu)
    assert kind == DistributedType.MULTI_CPU
    assert backend == ("mpi" if torch.distributed.is_mpi_available() else "gloo")


def test_sft_two_processes_equal_one(tmp_path):
    """SFT normalises by the loss tokens of the whole step over both ranks (one all-reduce of the
    count): the ranks' token counts differ, so a per-rank mean would not equal one process."""
    common = ("method=sft", "train.max_steps=2", "optim.lr=1e-2", "report.eval_before=false")
    run_tiny(tmp_path / "one", "train.per_device_batch_size=4", *common, *multi_process_overrides())
    proc = launch_two(tmp_path / "two", "train.per_device_batch_size=2", *common)
    assert proc.wait(timeout=300) == 0, (tmp_path / "two.log").read_text()[-3000:]
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["world_size"] == 2
    assert max_abs_diff(adapter(tmp_path / "one"), adapter(tmp_path / "two")) < 1e-5
