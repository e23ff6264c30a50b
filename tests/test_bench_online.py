"""bench/online_vs_trl.py end to end on the tiny model: both sides (align and TRL 1.16's RLOOTrainer /
GRPOTrainer), both methods, one warm-up + one timed step, a table with finite ratios."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import online_vs_trl  # noqa: E402


def test_online_bench_runs_both_sides_on_the_tiny_model(capsys):
    rc = online_vs_trl.main(
        [
            "--model", "tiny-smollm2", "--methods", "rloo", "grpo", "--betas", "0",
            "--steps", "1", "--warmup", "1", "--prompts-per-step", "2", "--group-size", "2",
            "--max-new-tokens", "4", "--threads", "1",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    trl_rows = [ln for ln in out.splitlines() if "TRL 1.16" in ln and ln.startswith("| ")]
    assert {ln.split(" | ")[0].strip("| ") for ln in trl_rows} == {"rloo", "grpo"}
    for row in trl_rows:
        ratios = re.findall(r"([0-9.]+)x", row)
        assert len(ratios) == 3 and all(math.isfinite(float(r)) and float(r) > 0 for r in ratios), row


def test_trl_reward_wrapper_reads_conversational_completions():
    completions = [[{"role": "assistant", "content": "Answer: 28"}], [{"role": "assistant", "content": "5"}]]
    assert online_vs_trl.trl_exact_answer(["p", "p"], completions, answer=["28", "4"]) == [1.0, 0.0]
