"""bench/gpu_check.sh cannot run here (no CUDA); what can rot without a GPU is checked instead:
shell syntax, every bench flag and test file it names exists, its timeouts fit one 9-minute call."""

from __future__ import annotations

import re
import shlex
import subprocess

from tests.run_helpers import ROOT

SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _commands() -> list[list[str]]:
    """The `step NAME SECONDS CMD...` lines, continuation lines joined."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    return [shlex.split(line.strip()) for line in text.splitlines() if line.strip().startswith("step ")]


def test_syntax():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_named_benches_flags_and_tests_exist():
    steps = _commands()
    assert {s[1] for s in steps} >= {"tests", "dpo_135m", "dpo_1p7b", "rollout", "online"}
    for step in steps:
        cmd = step[3:]
        bench = next((a for a in cmd if a.startswith("bench/")), None)
        if bench is not None:
            known = set(re.findall(r'"(--[a-z-]+)"', (ROOT / bench).read_text()))
            used = {a for a in cmd if a.startswith("--")}
            assert used <= known, f"{step[1]}: {sorted(used - known)} not flags of {bench}"
        for arg in cmd:
            if arg.startswith("tests/"):
                assert (ROOT / arg).exists(), f"{step[1]}: {arg} does not exist"


def test_timeouts_fit_one_device_call():
    """<= 9 minutes with the setup (onbox.sh: ~1 min) and the kill grace of each step."""
    total = sum(int(s[2]) + 10 for s in _commands())
    assert total + 60 <= 540, total
