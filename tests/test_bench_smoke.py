"""Every bench runs through its real entry point on the tiny model, so a refactor that breaks a
bench breaks `make test` (bench/kto_vs_trl.py once rotted unnoticed behind a moved function).

Each runs its own side and, where the peer installs in this venv (TRL 1.16: DPO, KTO), the peer
too, for the fewest steps its argument checks allow. The PPO peer is TRL 1.12 in its own venv
(bench/ppo_vs_trl.py's INSTALL line, minutes to build), so here the PPO bench runs our side only;
tests/test_bench_ppo.py covers the peer script's parsing and its missing-venv message.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{out[-4000:]}"
    return proc.stdout


def ratio_cells(text: str) -> list[float]:
    """Every `1.23x` cell of the bench's table."""
    return [float(m) for m in re.findall(r"\|\s*([0-9.]+)x\s*\|", text)]


def test_dpo_bench_runs_both_sides_and_their_losses_agree():
    out = run_bench(
        "dpo_vs_trl.py",
        "--model", "tiny-smollm2", "--steps", "2", "--warmup", "0", "--batch-size", "2",
        "--max-length", "512", "--min-prompt-tokens", "0", "--threads", "1", "--only", "ours",
    )  # fmt: skip
    assert "ours: train examples" in out
    out = run_bench(
        "dpo_vs_trl.py",
        "--model", "tiny-smollm2", "--steps", "2", "--warmup", "0", "--batch-size", "2",
        "--max-length", "512", "--min-prompt-tokens", "0", "--threads", "1",
    )  # fmt: skip
    assert re.search(r"loss check, align vs TRL DPOTrainer: .*: OK", out), out
    assert ratio_cells(out) and all(math.isfinite(r) and r > 0 for r in ratio_cells(out)), out


def test_kto_bench_runs_both_sides():
    out = run_bench(
        "kto_vs_trl.py", "--model", "tiny-smollm2", "--steps", "2", "--warmup", "0", "--batch-size", "2",
        "--max-length", "48", "--threads", "1",
    )  # fmt: skip
    losses = re.findall(r"^(ours|trl): step losses \[([^\]]*)\]", out, re.M)
    assert [side for side, _ in losses] == ["ours", "trl"], out
    assert all(math.isfinite(float(x)) for _, xs in losses for x in xs.split(",")), out
    assert ratio_cells(out), out


def test_ppo_bench_runs_our_side_with_a_reward_run():
    out = run_bench(
        "ppo_vs_trl.py", "--model", "tiny-smollm2", "--steps", "1", "--warmup", "0", "--batch-size", "2",
        "--max-new-tokens", "4", "--epochs", "1", "--threads", "1", "--only", "ours",
    )  # fmt: skip
    row = re.search(r"^\| 1 \| align \| ([0-9.]+) \|", out, re.M)
    assert row and float(row.group(1)) > 0, out
    assert "reward run" in out, out  # scored by a reward run trained first, as the bench's default


@pytest.mark.parametrize("only", [None, "rollout"])
def test_rollout_bench_runs(only):
    args = ["--model", "tiny-smollm2", "--batch-size", "2", "--max-new-tokens", "4", "--warmup", "0"]
    args += ["--repeats", "1", "--threads", "1"] + (["--only", only] if only else [])
    out = run_bench("rollout_vs_generate.py", *args)
    assert "tokens/s" in out, out
    bound = re.search(r"every step >= ([0-9.]+) ms, <= ([0-9]+) tokens/s at batch 2", out)
    assert bound and float(bound.group(1)) > 0 and int(bound.group(2)) > 0, out
