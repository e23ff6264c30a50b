"""Sharded and multi-node launches on CPU (gloo), each checked against one process.

FSDP2 (recipes/accelerate/fsdp_cpu_2proc.yaml) makes each decoder layer its own unit, trains to
the adapter one process trains, writes full (gathered) adapter and optimizer state, and resumes;
its adapter-off reference, precomputed or live, runs the same forwards on every rank (uneven
splits included, or a rank would wait forever in an all-gather). Two "nodes" rendezvous on
loopback. FSDP1 and DeepSpeed's stage 0 are refused before anything loads (ZeRO: tests/test_zero.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from run_helpers import (
    ROOT,
    TINY,
    adapter,
    align_env,
    free_port,
    launch_accelerate,
    launch_two,
    max_abs_diff,
    metric_values,
    multi_process_overrides,
    run_tiny,
)

from align.engine.checkpoint import list_checkpoints
from align.engine.sharding import LaunchError, check_launch
from align.models.embedded import embedded_model_dir
from align.models.reference import MemoReference
from align.util.files import cache_dir

FSDP_CPU = ["--config_file", str(ROOT / "recipes" / "accelerate" / "fsdp_cpu_2proc.yaml")]
# 31 training and 5 held-out pairs split unevenly over two ranks; eval batches of 2 leave rank 1
# a last batch of repeats only.
COMMON = (
    *multi_process_overrides(),  # gloo on CPU below two GPUs, for every run compared
    "train.max_steps=3",
    "optim.lr=1e-2",
    "lora.dropout=0.0",
    "data.max_train_examples=31",
    "data.max_eval_examples=5",
    "train.eval_batch_size=2",
    "train.eval_every=1",
    "train.save_every=1",
    "train.keep_checkpoints=5",
)
LAYERS = ["model.base_model.model.model.layers.0", "model.base_model.model.model.layers.1"]


@pytest.fixture(scope="module")
def one(tmp_path_factory) -> Path:
    """The same run in one process (4 pairs per step, as 2 ranks x 2)."""
    out = tmp_path_factory.mktemp("one") / "run"
    run_tiny(out, "train.per_device_batch_size=4", *COMMON)
    return out


def _finish(proc, log: Path, timeout: float = 180) -> None:
    """Wait for a launch; one that hangs (a rank stuck in a collective) is stopped and fails."""
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # accelerate/torchrun pass SIGTERM on to the workers
        proc.wait(timeout=60)
        pytest.fail(f"launch still running after {timeout} s (hung?): {log.read_text()[-2000:]}")
    assert rc == 0, log.read_text()[-3000:]


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def test_fsdp_equals_one_process_and_resumes(one, tmp_path):
    from peft import PeftModel

    from align.models.load import tiny_model

    run = tmp_path / "fsdp"
    # 1 pair x 2 micro-batches x 2 ranks: gradients stay unsynchronised (no_sync) until the last one
    args = ("train.per_device_batch_size=1", "train.gradient_accumulation_steps=2", *COMMON)
    _finish(
        launch_accelerate(run, [*FSDP_CPU, "--main_process_port", str(free_port())], *args),
        tmp_path / "fsdp.log",
    )
    manifest = _manifest(run)
    assert manifest["distributed_type"].endswith(".FSDP") and manifest["world_size"] == 2
    assert manifest["fsdp_units"] == ["", *LAYERS]  # the root plus one unit per decoder layer
    assert max_abs_diff(adapter(one), adapter(run)) < 1e-5

    # the checkpoint holds full tensors: the 1-process optimizer state, not rank 0's half of it
    ours = torch.load(run / "checkpoints" / "step-0000002" / "optimizer.pt", weights_only=True)
    theirs = torch.load(one / "checkpoints" / "step-0000002" / "optimizer.pt", weights_only=True)
    assert ours["state"].keys() == theirs["state"].keys()
    for i, state in theirs["state"].items():
        for k, v in state.items():
            torch.testing.assert_close(ours["state"][i][k], v, rtol=1e-3, atol=1e-6)

    # stock PEFT loads the final adapter
    loaded = PeftModel.from_pretrained(tiny_model(), run / "adapter")
    q = loaded.base_model.model.model.layers[1].self_attn.q_proj.lora_B["default"].weight
    assert torch.equal(q, adapter(run)["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"])

    uninterrupted = adapter(run)
    shutil.rmtree(list_checkpoints(run)[-1])
    shutil.rmtree(run / "adapter")
    cross = tmp_path / "cross"  # the same checkpoint, resumed by one process
    shutil.copytree(run, cross)
    launch = [*FSDP_CPU, "--main_process_port", str(free_port())]
    _finish(
        launch_accelerate(run, launch, *args, "--resume", log=tmp_path / "resume.log"),
        tmp_path / "resume.log",
    )
    assert "resumed from" in (tmp_path / "resume.log").read_text()  # not a fresh start
    assert max_abs_diff(adapter(run), uninterrupted) < 1e-6
    run_tiny(cross, "train.per_device_batch_size=4", *COMMON, resume=True)
    assert max_abs_diff(adapter(cross), adapter(one)) < 1e-5


def _head(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "adapter" / "score_head.safetensors")


def _grad_norms(run: Path) -> list[float]:
    return metric_values(run, "train/grad_norm")


def _one_and_sharded(tmp_path: Path, *args: str) -> tuple[Path, Path]:
    """The same tiny run in one process (4 per step) and under FSDP2 (2 ranks x 2), one unit per layer."""
    one = tmp_path / "one"
    run_tiny(one, "train.per_device_batch_size=4", *args)
    run = tmp_path / "fsdp"
    launch = [*FSDP_CPU, "--main_process_port", str(free_port())]
    _finish(launch_accelerate(run, launch, "train.per_device_batch_size=2", *args), tmp_path / "f.log")
    assert _manifest(run)["fsdp_units"] == ["", *LAYERS]
    return one, run


def _resume_sharded(run: Path, tmp_path: Path, *args: str, recipe: Path = TINY) -> None:
    """Drop the run's last checkpoint and final adapter, then resume it under FSDP2."""
    shutil.rmtree(list_checkpoints(run)[-1])
    shutil.rmtree(run / "adapter")
    launch = [*FSDP_CPU, "--main_process_port", str(free_port())]
    log = tmp_path / "resume.log"
    _finish(launch_accelerate(run, launch, *args, "--resume", recipe=recipe, log=log), log)
    assert "resumed from" in log.read_text()  # not a fresh start


def test_fsdp_reward_model_equals_one_process_and_resumes(tmp_path):
    """The reward head sits in FSDP2's root unit, which stays unsharded between a forward and the
    next backward: the loop must clip the sharded parameters (the norm once lost the head's part).
    The head's bias gets no gradient from a pairwise loss (it cancels in r_c - r_r), so Adam turns
    rounding noise into steps of up to lr: it is compared only for staying near its start."""
    args = ("method=reward", "beta=0.1", *COMMON)
    one, run = _one_and_sharded(tmp_path, *args)
    assert max_abs_diff(adapter(one), adapter(run)) < 1e-5
    assert float((_head(one)["linear.weight"] - _head(run)["linear.weight"]).abs().max()) < 1e-5
    assert abs(float(_head(run)["linear.bias"])) < 3 * 1e-2  # three steps of at most lr
    assert _grad_norms(run) == pytest.approx(_grad_norms(one), rel=1e-5)

    uninterrupted = {**adapter(run), **_head(run)}
    _resume_sharded(run, tmp_path, "train.per_device_batch_size=2", *args)
    assert max_abs_diff({**adapter(run), **_head(run)}, uninterrupted) < 1e-6


def test_fsdp_sft_equals_one_process(tmp_path):
    """SFT normalises by the step's loss tokens over all ranks; sharded it trains what one process does."""
    one, run = _one_and_sharded(tmp_path, "method=sft", *COMMON)
    assert max_abs_diff(adapter(one), adapter(run)) < 2e-5


def test_fsdp_grpo_equals_ddp(tmp_path):
    """GRPO (with its KL term, so the reference forward runs) under FSDP2 trains the adapter DDP
    trains: each rank samples its own prompts from full weights gathered for the rollout (no
    collective inside sampling), and scores, evaluates and updates through the sharded model.
    Compared with DDP, not one process: each rank draws its own samples."""
    online = ROOT / "tests" / "online_tiny.yaml"
    args = ("method=grpo", "cpu=true", "train.per_device_batch_size=1")
    ddp = tmp_path / "ddp"
    _finish(launch_two(ddp, *args, recipe=online), tmp_path / "ddp.log")
    run = tmp_path / "fsdp"
    launch = [*FSDP_CPU, "--main_process_port", str(free_port())]
    _finish(launch_accelerate(run, launch, *args, recipe=online), tmp_path / "fsdp.log")
    assert _manifest(run)["fsdp_units"] == ["", *LAYERS]
    assert max_abs_diff(adapter(ddp), adapter(run)) < 1e-6
    assert max_abs_diff(adapter(run), {k: v * 0 for k, v in adapter(run).items()}) > 1e-4  # it trained
    scores = [json.loads(x).get("eval/score") for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [v for v in scores if v is not None] == pytest.approx(
        [
            json.loads(x)["eval/score"]
            for x in (ddp / "metrics.jsonl").read_text().splitlines()
            if "eval/score" in x
        ]
    )


def ppo_weights(run: Path) -> dict[str, torch.Tensor]:
    """A PPO run's policy adapter, value adapter and value head, keyed by file."""
    from safetensors.torch import load_file

    files = ("adapter_model.safetensors", "value/adapter_model.safetensors", "value/value_head.safetensors")
    return {f"{f}:{k}": v for f in files for k, v in load_file(run / "adapter" / f).items()}


def test_fsdp_ppo_equals_ddp_and_resumes(tmp_path):
    """PPO's roles on one sharded base: policy and value adapters in the decoder-layer units, the
    value head in the root unit; all three equal DDP's, and a resumed run its uninterrupted self."""
    ppo = ROOT / "tests" / "ppo_tiny.yaml"
    args = ("cpu=true", "train.per_device_batch_size=1", "train.max_steps=3", "train.save_every=1")

    ddp = tmp_path / "ddp"
    _finish(launch_two(ddp, *args, recipe=ppo), tmp_path / "ddp.log")
    run = tmp_path / "fsdp"
    launch = [*FSDP_CPU, "--main_process_port", str(free_port())]
    _finish(launch_accelerate(run, launch, *args, recipe=ppo), tmp_path / "fsdp.log")
    assert _manifest(run)["fsdp_units"] == ["", *LAYERS]
    assert max_abs_diff(ppo_weights(ddp), ppo_weights(run)) < 1e-6

    uninterrupted = ppo_weights(run)
    _resume_sharded(run, tmp_path, *args, recipe=ppo)
    assert max_abs_diff(ppo_weights(run), uninterrupted) < 1e-6


def test_fsdp_precomputed_reference_from_pretrained(one, tmp_path):
    """Ranks precompute 16 and 15 reference rows under FSDP; the run matches the live reference.
    The model is the tiny one saved as a local checkpoint, so it loads with from_pretrained: with
    fsdp_cpu_ram_efficient_loading only rank 0 reads weights and FSDP broadcasts them."""
    from transformers import AutoTokenizer

    from align.models.load import tiny_model

    model_dir = tmp_path / "tiny-local"
    tiny_model().save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(embedded_model_dir()).save_pretrained(model_dir)
    cache = tmp_path / "cache"  # a fresh reference cache (an earlier run's table would be reused)
    cache.mkdir()
    for shared in ("models", "gguf"):
        (cache / shared).symlink_to(cache_dir() / shared)
    run = tmp_path / "pre"
    args = ("train.per_device_batch_size=2", "reference=precompute", f"model.name={model_dir}", *COMMON)
    launch = [*FSDP_CPU, "--main_process_port", str(free_port())]
    _finish(launch_accelerate(run, launch, *args, ALIGN_CACHE=str(cache)), tmp_path / "pre.log")
    tables = sorted((cache / "reference").glob("*.safetensors"))
    assert [t.name.split("-")[-1] for t in tables] == ["eval.safetensors", "train.safetensors"]
    from safetensors.torch import load_file

    n = {"train": 31, "eval": 5}
    for t in tables:
        table = load_file(t)
        split = t.name.split("-")[-1].removesuffix(".safetensors")
        assert len(table["chosen_n"]) == n[split] and bool((table["chosen_n"] > 0).all())  # every row filled
    assert max_abs_diff(adapter(one), adapter(run)) < 1e-5


def test_two_nodes_on_loopback_equal_one(one, tmp_path):
    """`--num_machines 2`, one process per "node", rendezvous on 127.0.0.1 (multinode_2x1.yaml)."""
    run, port = tmp_path / "nodes", str(free_port())
    config = ["--config_file", str(ROOT / "recipes" / "accelerate" / "multinode_2x1.yaml")]
    args = ("train.per_device_batch_size=2", *COMMON)
    procs = [
        launch_accelerate(
            run,
            [
                *config,
                "--machine_rank",
                str(rank),
                "--main_process_ip",
                "127.0.0.1",
                "--main_process_port",
                port,
            ],
            *args,
            log=tmp_path / f"node{rank}.log",
        )
        for rank in (0, 1)
    ]
    for rank, proc in enumerate(procs):
        _finish(proc, tmp_path / f"node{rank}.log")
    manifest = _manifest(run)
    assert manifest["world_size"] == 2 and manifest["distributed_type"].endswith("MULTI_CPU")
    assert max_abs_diff(adapter(one), adapter(run)) < 1e-5


def test_memo_reference_runs_every_batch_once():
    """Rank 1's padded last eval batch repeats an example it already scored: it must still run
    the forward (its peers do), and a second evaluation runs none."""
    calls = []

    def inner(batch):
        calls.append(tuple(batch.index.tolist()))
        return batch.index.float()

    memo = MemoReference(inner)
    for _ in range(2):
        for idx in ([1, 3], [1]):
            memo(SimpleNamespace(index=torch.tensor(idx)))
    assert calls == [(1, 3), (1,)]


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "0"},
            "DeepSpeed zero_stage 0 is not supported",
        ),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "FSDP version 1 is not supported"),
        ({"ACCELERATE_USE_FSDP": "true"}, "FSDP version 1 is not supported"),  # accelerate's default
    ],
)
def test_unsupported_launch_is_refused(env, says):
    with pytest.raises(LaunchError, match=says):
        check_launch(env)
    check_launch({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"})
    for stage in ("1", "2", "3"):
        check_launch({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": stage})


def test_deepspeed_launch_fails_before_loading(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "align", "train", str(TINY), f"output_dir={out}"]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=align_env(ACCELERATE_USE_DEEPSPEED="true", ACCELERATE_DEEPSPEED_ZERO_STAGE="0"),
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("align: error: DeepSpeed zero_stage 0 is not supported")
    )
    assert "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.parametrize(
    "path", sorted((ROOT / "recipes" / "accelerate").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_accelerate_configs_are_supported(path):
    cfg = yaml.safe_load(path.read_text())
    assert cfg["distributed_type"] in ("MULTI_GPU", "FSDP", "DEEPSPEED")
    if cfg["distributed_type"] == "DEEPSPEED":
        ds = cfg["deepspeed_config"]
        if "deepspeed_config_file" in ds:
            ds = json.loads((ROOT / ds["deepspeed_config_file"]).read_text())["zero_optimization"]
        stage = ds.get("zero_stage", ds.get("stage"))
        assert stage in (2, 3)
        check_launch({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": str(stage)})
    if cfg["distributed_type"] == "FSDP":
        assert cfg["fsdp_config"]["fsdp_version"] == 2
        assert cfg["fsdp_config"]["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    if "deepspeed_config_file" in cfg.get("deepspeed_config", {}):  # the file says it; Accelerate
        ds = json.loads((ROOT / cfg["deepspeed_config"]["deepspeed_config_file"]).read_text())
        assert "mixed_precision" not in cfg  # refuses the key beside a file
        assert {"bf16", "fp16"} <= ds.keys()
    else:
        assert cfg.get("mixed_precision") in ("no", "bf16", "fp16")
