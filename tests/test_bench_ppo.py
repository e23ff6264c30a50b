"""bench/ PPO and rollout benches: the peer's phase clock and its attribution of TRL's calls, response
token counts, our metrics.jsonl rows read as steps, summaries, the table and target verdicts, the
missing-venv message, left padding and the rollout report. No benchmark runs here."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import ppo_vs_trl  # noqa: E402
import rollout_vs_generate as rvg  # noqa: E402
from ppo_peer_trl import PhaseClock, PPOBenchConfig, StepTimes, instrument, read_prompts, response_tokens  # noqa: E402


def test_response_tokens_count_through_the_first_stop():
    r = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 0, 0, 0]])
    assert response_tokens(r, 2) == 2 + 4 + 1
    assert response_tokens(r, None) == 12


def test_read_prompts_names_the_file_when_short(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"input_ids": [1, 2]}\n{"input_ids": [3]}\n')
    assert read_prompts(str(f), 1) == [[1, 2]]
    with pytest.raises(ValueError, match=r"p\.jsonl: 2 prompts, the bench needs 3"):
        read_prompts(str(f), 3)


def _fake_trainer_module(reward_model):
    """Stand-ins for the three module functions PPOTrainer.train calls by name, each taking a little time."""

    def batch_generation(model, queries, *args):
        time.sleep(0.01)
        return torch.cat([queries, torch.tensor([[7, 2, 0], [7, 7, 7]])], 1), None

    def forward(model, query_responses, pad_token_id):
        time.sleep(0.01)
        return "out"

    def get_reward(model, query_responses, pad_token_id, context_length):
        time.sleep(0.02 if model is reward_model else 0.01)
        return "reward"

    return SimpleNamespace(batch_generation=batch_generation, forward=forward, get_reward=get_reward)


def test_instrument_splits_a_trl_step_into_its_phases():
    reward_model, value_model = object(), object()
    mod = _fake_trainer_module(reward_model)
    clock = PhaseClock(lambda: None)
    instrument(mod, clock, {"trainer": SimpleNamespace(reward_model=reward_model)}, stop_id=2)
    queries = torch.ones(2, 4, dtype=torch.long)
    for _ in range(2):  # two steps, as PPOTrainer.train runs them
        out, _ = mod.batch_generation("policy", queries, 8, 0, None)
        assert out.shape == (2, 7)
        with torch.no_grad():
            assert mod.forward("policy", out, 0) == "out"  # the reference
            mod.get_reward(value_model, out, 0, 4)
            mod.get_reward(reward_model, out, 0, 4)
        with torch.enable_grad():
            mod.forward("policy+value", out, 0)  # first update forward: scoring ends here
            mod.forward("policy+value", out, 0)
        clock.end_phase("update_s", "")  # on_step_end
    clock.finish()  # on_train_end
    assert len(clock.steps) == 2
    for s in clock.steps:
        assert (s.gen_tokens, s.response_tokens) == (6, 2 + 3)
        assert s.rollout_s >= 0.01 and s.update_s >= 0.01
        assert s.reward_s >= 0.02 and 0.01 <= s.value_s < s.reward_s and s.ref_s >= 0.01
        assert s.scoring_s >= s.ref_s + s.value_s + s.reward_s  # the forwards lie inside scoring
        assert s.step_s >= s.rollout_s + s.scoring_s + s.update_s


def test_ours_steps_read_the_time_split_from_metrics_rows():
    rows = [
        {"step": 2, "train/time/rollout_s": 2.0, "train/time/scoring_s": 1.0, "train/time/update_s": 3.0},
        {"step": 0, "eval/loss": 1.0},  # no timing: not a step
        {"step": 1, "train/time/rollout_s": 1.0, "train/time/scoring_s": 1.0, "train/time/update_s": 1.0},
    ]
    rows[0]["train/response_length"] = 40.0
    steps = ppo_vs_trl.ours_steps(rows, ends=[10.0, 16.5], batch_size=8)
    assert [s.rollout_s for s in steps] == [1.0, 2.0]
    assert steps[0].step_s == 3.0  # first step: the sum of its phases
    assert steps[1].step_s == 6.5  # then the gap between observed step ends
    assert (steps[0].response_tokens, steps[1].response_tokens) == (None, 320)
    assert ppo_vs_trl.ours_steps(rows, ends=[], batch_size=8)[1].step_s == 6.0  # ends not observed
    del rows[2]["train/time/update_s"]
    with pytest.raises(RuntimeError, match="step 1: no train/time/update_s"):
        ppo_vs_trl.ours_steps(rows, [], 8)


def _result(name: str, step_s: list[float], rss: float, phases: bool = True) -> dict:
    steps = [
        StepTimes(step_s=t, **({p: t / 4 for p in ("rollout_s", "scoring_s", "update_s")} if phases else {}))
        for t in step_s
    ]
    return {"name": name, "steps": [asdict(s) for s in steps], "peak_rss_gib": rss}


def test_summarize_skips_warmup_and_leaves_unmeasured_parts_empty():
    cfg = PPOBenchConfig(steps=2, warmup=1)
    s = ppo_vs_trl.summarize(_result("trl", [100.0, 30.0, 40.0], 9.0), cfg)
    assert s["step_s"] == 35.0 and s["steps_per_s"] == pytest.approx(1 / 35)
    assert s["rollout_s"] == 8.75 and s["other_s"] == pytest.approx(35.0 / 4)
    assert s["ref_s"] is None and s["peak_rss_gib"] == 9.0
    assert ppo_vs_trl.summarize(_result("ours", [1.0, 2.0, 3.0], 1.0, phases=False), cfg)["other_s"] is None
    with pytest.raises(RuntimeError, match="ours: recorded 2 steps, expected 1 warmup \\+ 2"):
        ppo_vs_trl.summarize(_result("ours", [1.0, 2.0], 1.0), cfg)


def test_table_and_verdict_compare_align_with_trl_per_epoch_setting():
    cfg = PPOBenchConfig(steps=1, warmup=0)
    summaries = {
        1: {
            "ours": ppo_vs_trl.summarize(_result("ours", [10.0], 2.0), cfg),
            "trl": ppo_vs_trl.summarize(_result("trl", [30.0], 10.0), cfg),
        },
        4: {"trl": ppo_vs_trl.summarize(_result("trl", [70.0], 9.0), cfg)},
    }
    text = ppo_vs_trl.table(summaries, {(4, "ours"): "RecipeError: method: unknown method 'ppo'"})
    rows = text.splitlines()[2:]
    assert [r.split(" | ")[:2] for r in rows] == [
        ["| 1", "align"],
        ["| 1", "TRL 1.12 PPOTrainer"],
        ["| 4", "align"],
        ["| 4", "TRL 1.12 PPOTrainer"],
    ]
    assert rows[1].endswith("| 10.00 | 3.00x | 0.20x |")  # align / TRL: step rate, memory
    assert "failed: RecipeError" in rows[2] and rows[3].endswith("|  |  |")
    r = ppo_vs_trl.ratios(summaries[1]["ours"], summaries[1]["trl"])
    assert (
        ppo_vs_trl.verdict(r)
        == "step rate 3.00x (target >= 2x): met; peak memory 0.20x (target <= 0.3x): met"
    )
    slow = ppo_vs_trl.ratios(summaries[1]["trl"], summaries[1]["ours"])
    assert ppo_vs_trl.verdict(slow).count("MISSED") == 2


def test_config_round_trips_through_json_for_the_peer():
    cfg = PPOBenchConfig(epochs=4, ours_set=["ppo.top_k=5"], model_dir="/m", reward_run="/r")
    again = PPOBenchConfig(**json.loads(json.dumps(asdict(cfg))))
    assert again == cfg and again.total_steps == 4


def test_missing_trl_venv_says_how_to_make_it(tmp_path):
    why = ppo_vs_trl.trl_python_problem(str(tmp_path / "nope" / "python"))
    assert "does not exist" in why and "pip install torch==2.13.0" in why and "trl==1.12.0" in why
    assert ppo_vs_trl.trl_python_problem(sys.executable) is None
    assert ppo_vs_trl.main(["--only", "trl", "--trl-python", str(tmp_path / "python")]) == 2


def test_ours_recipes_load_as_a_user_recipe_with_the_bench_settings(tmp_path):
    import yaml

    from align.methods import load_recipe

    cfg = PPOBenchConfig(epochs=4, kl_coef=0.07, workdir=str(tmp_path), records=str(tmp_path / "r.jsonl"))
    cfg.reward_run = str(tmp_path / "reward_run")
    for data, overrides in [
        (ppo_vs_trl.ours_recipe(cfg), ["ppo.top_k=5"]),
        (ppo_vs_trl.reward_recipe(cfg), []),
    ]:
        path = tmp_path / f"{data['method']}.yaml"
        path.write_text(yaml.safe_dump(data))
        r = load_recipe(path, overrides)  # every key exists, in range, and the methods accept them
        rollout = r.train.per_device_batch_size * r.train.gradient_accumulation_steps
        assert (rollout, r.precision, r.lora.dropout) == (8, "fp32", 0.0)
        assert r.data.path == cfg.records and r.data.heldout_fraction == 0.0
    assert r.method == "reward" and r.train.max_steps == 1
    ppo = load_recipe(tmp_path / "ppo.yaml", ["ppo.top_k=5"])
    assert (ppo.beta, ppo.train.max_steps, ppo.ppo.top_k) == (0.07, cfg.total_steps, 5)
    assert ppo.train.per_device_batch_size == cfg.ours_micro_batch == 2  # update rows per forward
    assert (ppo.ppo.max_new_tokens, ppo.ppo.epochs, ppo.ppo.minibatches, ppo.ppo.temperature) == (
        64,
        4,
        1,
        0.7,
    )
    assert ppo.ppo.reward_run == cfg.reward_run and ppo.ppo.reward_function is None
    cfg.reward, cfg.reward_function = "function", "align.rewards:brevity"
    assert ppo_vs_trl.ours_recipe(cfg)["ppo"]["reward_function"] == "align.rewards:brevity"
    assert "reward_run" not in ppo_vs_trl.ours_recipe(cfg)["ppo"]


def test_left_pad_right_aligns_prompts_with_a_length_mask():
    ids, mask = rvg.left_pad([[5, 6, 7], [2]], pad_id=2)
    assert ids.tolist() == [[5, 6, 7], [2, 2, 2]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]  # the real <|im_end|> (= pad id) is kept by the mask


def test_time_calls_and_report():
    counts = iter([7, 512, 512])
    t = rvg.time_calls("generate", lambda: next(counts), warmup=1, repeats=2, sync=lambda: None)
    assert t.tokens_per_call == 512 and len(t.call_s) == 2
    with pytest.raises(RuntimeError, match=r"rollout: calls generated different token counts \[1, 2\]"):
        rvg.time_calls("rollout", iter([1, 2]).__next__, warmup=0, repeats=2, sync=lambda: None)
    text = rvg.report(
        [
            rvg.Timing("generate", [1.0], 512),
            rvg.Timing("rollout-hf", [1.25], 512),
            rvg.Timing("rollout-fast", [0.25], 512),
        ]
    )
    assert "| generate | 512 | 1.000 | 512.0 |" in text
    assert "rollout-hf / generate tokens/s: 0.80x (target >= 0.9x: MISSED)" in text
    assert "| rollout-fast | 512 | 0.250 | 2048.0 | 4.00x | >= 2.5x: met |" in text
    assert "generate tokens/s:" not in rvg.report([rvg.Timing("generate", [1.0], 512)])


@dataclass
class Sampling:
    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float


def sample(model, prompts: list[list[int]], sampling: Sampling, eos_token_id: int, pad_token_id: int):
    """The signature align.models.rollout.sample is written to (issue 8)."""


def test_sampling_settings_follow_the_sample_annotation():
    a = SimpleNamespace(max_new_tokens=64, temperature=0.7, top_k=0, top_p=1.0)
    assert rvg.sampling_settings(sample, a) == Sampling(64, 0.7, 0, 1.0)


@pytest.mark.parametrize("tied", [True, False])
def test_rollout_ceiling_counts_each_streamed_weight_once(tied):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, tie_word_embeddings=tied,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg)
    params = sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once
    assert rvg.streamed_bytes(model) == 4 * (params if tied else params - 100 * 16)
    gen = rvg.Timing("generate", [1.0], 40)
    line = rvg.ceiling(10**9, 10**10, 10**12, 8, gen)  # reading bounds: 100 ms vs 4 GFLOP in 4 ms
    assert "every step >= 100.0 ms, <= 80 tokens/s at batch 8" in line
    assert "(2.00x this run's generate)" in line
    line = rvg.ceiling(10**9, 10**12, 10**11, 8, gen)  # arithmetic bounds: 1 ms vs 40 ms
    assert "every step >= 40.0 ms, <= 200 tokens/s" in line and "(5.00x this run's generate)" in line
