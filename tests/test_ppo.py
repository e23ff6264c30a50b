"""RLHF-PPO end to end on tiny models: learning, the reference at step 0, roles, resume, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from model_helpers import write_steerable_model
from run_helpers import ROOT, cut_before_last_checkpoint, launch_two, max_abs_diff

from align.engine.checkpoint import read_metrics
from align.methods import load_recipe
from align.train import run
from align.util.errors import RecipeError

PPO = ROOT / "tests" / "ppo_tiny.yaml"
REWARD = ROOT / "tests" / "tiny.yaml"


def ppo(out: Path, *overrides: str, resume: bool | None = None) -> dict:
    return run(load_recipe(PPO, [f"output_dir={out}", *overrides]), resume=resume)


def adapters(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    root = run_dir / "adapter"
    out = {f"policy.{k}": v for k, v in load_file(root / "adapter_model.safetensors").items()}
    if (root / "value").is_dir():
        out.update(
            {f"value.{k}": v for k, v in load_file(root / "value" / "adapter_model.safetensors").items()}
        )
        out.update({f"head.{k}": v for k, v in load_file(root / "value" / "value_head.safetensors").items()})
    return out


@pytest.fixture(scope="module")
def steerable(tmp_path_factory) -> str:
    return write_steerable_model(tmp_path_factory.mktemp("steerable"))


def test_ppo_raises_a_programmatic_reward_with_bounded_kl(tmp_path, steerable):
    """Reward: the share of response tokens with id < 4096 (tests/ppo_rewards.py). Seeded."""
    summary = ppo(
        tmp_path / "run",
        f"model.name={steerable}",
        "ppo.reward_function=ppo_rewards:low_ids",
        "train.max_steps=10",
    )
    before, after = summary["before"], summary["after"]
    assert before["eval/kl_ref"] == 0.0 and before["eval/kl_ref/k3"] == 0.0  # fresh policy = reference
    assert after["eval/score"] > before["eval/score"] + 0.25, (before, after)
    assert 0 < after["eval/kl_ref/k3"] < 20
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/score" in r]
    assert (
        rows[0]["train/kl_ref"] == 0.0 and rows[0]["train/kl_ref/k3"] == 0.0
    )  # step 1 samples the reference
    assert max(r["train/score"] for r in rows[-3:]) > rows[0]["train/score"] + 0.2
    for key in (
        "train/time/rollout_s",
        "train/time/scoring_s",
        "train/time/update_s",
        "train/policy/clipfrac",
        "train/value/explained_variance",
        "train/kl_coef",
        "train/entropy",
        "train/eos",
    ):
        assert key in rows[-1]
    trained = adapters(tmp_path / "run")  # both adapters moved from B = 0
    for role in ("policy", "value"):
        assert (
            max(float(v.abs().max()) for k, v in trained.items() if k.startswith(role) and "lora_B" in k) > 0
        )
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["objective"]["objective"] == "ppo" and manifest["objective"]["value_model"] == "fresh"
    assert manifest["objective"]["gamma"] == 1.0 and manifest["objective"]["lam"] == 0.95


def test_resume_equals_uninterrupted(tmp_path):
    common = ("train.max_steps=4", "train.save_every=2", "train.keep_checkpoints=0", "ppo.minibatches=2")
    ppo(tmp_path / "full", *common)
    cut = tmp_path / "cut"
    cut_before_last_checkpoint(tmp_path / "full", cut, "step-0000004")
    ppo(cut, *common, resume=True)
    a, b = adapters(tmp_path / "full"), adapters(cut)
    assert any(k.startswith("value.") for k in a)
    assert max_abs_diff(a, b) < 1e-6


def test_two_processes_hold_the_same_adapter(tmp_path):
    proc = launch_two(tmp_path / "two", "train.per_device_batch_size=4", recipe=PPO)
    assert proc.wait(timeout=300) == 0, (tmp_path / "two.log").read_text()[-3000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    sums = summary["rank_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and "MULTI" in manifest["distributed_type"]


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reward") / "run"
    run(load_recipe(REWARD, ["method=reward", f"output_dir={out}", "train.max_steps=2"]))
    return out


def test_reward_run_trains_and_saves_adapter_and_head(reward_run):
    summary = json.loads((reward_run / "summary.json").read_text())
    assert 0.0 <= summary["after"]["eval/accuracy"] <= 1.0 and "eval/margin" in summary["before"]
    assert (reward_run / "adapter" / "score_head.safetensors").is_file()
    manifest = json.loads((reward_run / "manifest.json").read_text())
    assert manifest["objective"]["objective"] == "bradley_terry"


def test_value_model_starts_from_the_reward_run(tmp_path, reward_run):
    from safetensors.torch import load_file

    from align.methods.ppo import REWARD as REWARD_ADAPTER
    from align.methods.ppo import VALUE, build_roles
    from align.models.adapters import adapter_state_of
    from align.models.load import add_lora, tiny_model

    r = load_recipe(
        PPO, [f"output_dir={tmp_path}", f"ppo.reward_run={reward_run}", "ppo.reward_function=null"]
    )
    method = __import__("align.methods", fromlist=["build_method"]).build_method(r)
    peft_model = add_lora(tiny_model(), r.lora)
    head, value_adapter, (reward_head, _) = build_roles(r, method, peft_model, "test")
    assert value_adapter == VALUE
    saved = load_file(reward_run / "adapter" / "adapter_model.safetensors")
    for name in (VALUE, REWARD_ADAPTER):
        got = adapter_state_of(peft_model, name)
        assert got.keys() == saved.keys() and max_abs_diff(got, saved) == 0
    head_saved = load_file(reward_run / "adapter" / "score_head.safetensors")
    assert torch.equal(head.linear.weight, head_saved["linear.weight"])
    assert torch.equal(reward_head.linear.weight, head_saved["linear.weight"])
    trainable = {n.split(".")[-2] for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable == {"default", VALUE}


def test_ppo_with_a_reward_run_end_to_end(tmp_path, reward_run):
    summary = ppo(
        tmp_path / "run", f"ppo.reward_run={reward_run}", "ppo.reward_function=null", "train.max_steps=1"
    )
    assert summary["steps"] == 1 and "eval/score" in summary["after"]
    assert (tmp_path / "run" / "adapter" / "value" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["ppo.reward_function=null"], "set exactly one of ppo.reward_run"),
        (["ppo.reward_model=/nowhere"], "got reward_model, reward_function"),
        (["lora.dropout=0.1"], "lora.dropout: PPO needs 0"),
        (["ppo.value=reward"], "ppo.value: 'reward' initialises"),
        (["ppo.minibatches=9"], "ppo.minibatches: 9 is more than"),
        (["ppo.reward_function=align.rewards:nope"], "align.rewards has no 'nope'"),
        (["ppo.reward_function=no_such_module_xyz:f"], "cannot import 'no_such_module_xyz'"),
        (["ppo.reward_function=lowercase"], "must look like `module:function`"),
        (["method=dpo"], "ppo: applies to method 'ppo' only"),
        (["data.unpair=true"], "data.unpair: applies to kto only, not 'ppo'"),
    ],
)
def test_bad_recipes_fail_before_any_model_loads(overrides, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace("'", "'")):
        load_recipe(PPO, overrides)


@pytest.mark.parametrize(
    "fn, message",
    [
        ("ppo_rewards:wrong_length", "returned 9 values for 8 responses"),
        ("ppo_rewards:not_finite", "non-finite value"),
    ],
)
def test_a_bad_reward_function_fails_at_the_first_step(tmp_path, fn, message):
    with pytest.raises(RecipeError, match=message):
        ppo(tmp_path / "run", f"ppo.reward_function={fn}", "report.eval_before=false", "train.max_steps=1")


def test_reward_run_errors_name_the_problem(tmp_path, reward_run):
    with pytest.raises(RecipeError, match="not a finished reward run.*no such directory"):
        ppo(tmp_path / "a", f"ppo.reward_run={tmp_path / 'missing'}", "ppo.reward_function=null")
    other = tmp_path / "other-base"
    shutil.copytree(reward_run, other)
    text = (other / "recipe.yaml").read_text().replace("name: tiny-smollm2", "name: smollm2-135m-instruct")
    (other / "recipe.yaml").write_text(text)
    with pytest.raises(RecipeError, match="trained on base model 'smollm2-135m-instruct'"):
        ppo(tmp_path / "b", f"ppo.reward_run={other}", "ppo.reward_function=null")
    dpo = tmp_path / "dpo-run"
    shutil.copytree(reward_run, dpo)
    (dpo / "recipe.yaml").write_text(
        (dpo / "recipe.yaml").read_text().replace("method: reward", "method: dpo")
    )
    with pytest.raises(RecipeError, match="is a 'dpo' run, not a reward model run"):
        ppo(tmp_path / "c", f"ppo.reward_run={dpo}", "ppo.reward_function=null")


def _write_classifier(out: Path, num_labels: int = 1) -> Path:
    """A tiny local sequence-classification model with SmolLM2's tokenizer files."""
    from transformers import AutoModelForSequenceClassification

    from align.models.embedded import embedded_model_dir
    from align.models.load import tiny_config

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_config(num_labels=num_labels))
    model.save_pretrained(out, safe_serialization=True)
    for f in embedded_model_dir().iterdir():
        if f.is_file() and f.name != "config.json" and f.suffix != ".safetensors":
            shutil.copy(f, out / f.name)
    return out


def test_a_local_classifier_with_its_own_tokenizer_scores_the_responses(tmp_path):
    from align.models.reward_model import ExternalRewardModel

    path = _write_classifier(tmp_path / "rm")
    rm = ExternalRewardModel(str(path), torch.device("cpu"))
    convs = [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there, friend."}],
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
    ]
    batched = rm(convs)
    alone = torch.cat([rm([c]) for c in convs])  # no padding at all
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    summary = ppo(
        tmp_path / "run", f"ppo.reward_model={path}", "ppo.reward_function=null", "train.max_steps=1"
    )
    assert summary["steps"] == 1 and "eval/score" in summary["after"]
    with pytest.raises(RecipeError, match="num_labels=2"):
        ExternalRewardModel(str(_write_classifier(tmp_path / "two", num_labels=2)), torch.device("cpu"))


def test_a_prompt_set_with_an_empty_prompt_is_refused_naming_the_record(tmp_path):
    from align.util.errors import DataError

    data = tmp_path / "prompts.jsonl"
    data.write_text(
        '{"prompt": "Name a colour.", "chosen": "Red.", "rejected": "No."}\n'
        '{"prompt": "  ", "chosen": "a", "rejected": "b"}\n'
    )
    with pytest.raises(DataError, match=r"prompts.jsonl: line 2: field 'prompt': empty prompt"):
        ppo(tmp_path / "run", "data.card=null", f"data.path={data}")


PROMPTS = [
    "Name a colour.",
    [{"role": "user", "content": "What is 2 + 3?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me a fact."},
    ],
    *([{"role": "user", "content": f"Count to {n}."}] for n in range(2, 10)),
]


def test_a_prompt_only_file_drives_ppo(tmp_path):
    data = tmp_path / "prompts.jsonl"
    rows = [{"prompt": p, "id": i} for i, p in enumerate(PROMPTS)] + [{"prompt": PROMPTS[1]}]  # one repeated
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = ppo(
        tmp_path / "run", "data.card=null", f"data.path={data}", "data.format=prompts", "train.max_steps=1"
    )
    assert summary["steps"] == 1 and "eval/score" in summary["after"] and "eval/score" in summary["before"]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["data"]["load"]["kept"] == 13 and manifest["data"]["tokenize"] == {"records": 13}
    assert summary["examples"] == {"train": 11, "eval": 1}  # 10% held out; the repeated prompt counted once
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("method", ["dpo", "ipo", "kto", "reward"])
def test_methods_that_need_completions_refuse_prompt_only_data(tmp_path, method):
    from align.util.errors import DataError

    with pytest.raises(RecipeError, match=f"data.format: method '{method}' needs (pairwise|unpaired)"):
        load_recipe(REWARD, [f"method={method}", "data.format=prompts"])
    if method == "dpo":  # a card's format is only known when the data loads: still before any model
        r = load_recipe(REWARD, [f"output_dir={tmp_path}", "data.card=align_prompts_v1"])
        with pytest.raises(DataError, match=r"align_prompts_v1.md: field 'format': this method needs pairs"):
            run(r)


def test_trimmed_micro_batches_score_like_the_whole_batch():
    """A micro-batch drops the columns that are padding in all its rows; its log-probs, entropies
    and values equal those of the same rows in the full-width batch."""
    from model_helpers import randomize_lora_b

    from align.methods.experience import PPOBatch
    from align.methods.ppo import PPOModule
    from align.models.adapters import ScalarHead
    from align.models.load import add_lora, tiny_model
    from align.models.rollout import Rollout, left_pad
    from align.recipe import LoraConfig

    peft_model = add_lora(tiny_model(seed=4), LoraConfig(r=2, alpha=4, dropout=0.0))
    randomize_lora_b(peft_model)
    module = PPOModule(peft_model, ScalarHead(64, seed=1), "default", temperature=0.7, chunk=16).eval()
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]
    resp = torch.tensor([[20, 21, 2, 2, 2], [22, 23, 24, 25, 26], [27, 2, 2, 2, 2]])
    r = Rollout(*left_pad(prompts, 2), resp, torch.tensor([3, 5, 2]), torch.tensor([True, False, True]))
    ids, att, pos = r.sequences()
    z = torch.zeros(3, 5)
    full = PPOBatch(ids, att, pos, resp, r.response_mask(), z, z, z, z)
    with torch.no_grad():
        want = module(ids, att, pos, resp)
        rows = torch.tensor([1, 2])  # prompts of 2 and 3 tokens, responses of 5 and 2
        part = full.select(rows, tokens=7.0, n_rows=2.0, width=(3, 5))
        assert part.input_ids.shape == (2, 8) and part.tokens == 7.0
        got = module(part.input_ids, part.attention_mask, part.position_ids, part.response_ids)
        short = full.select(torch.tensor([2]), 2.0, 1.0, width=(3, 2))
        assert short.input_ids.shape == (1, 5) and short.mask.shape == (1, 2)
        got_short = module(short.input_ids, short.attention_mask, short.position_ids, short.response_ids)
    for w, g in zip(want, got):
        m = r.response_mask()[rows]
        torch.testing.assert_close(g[m], w[rows][m], atol=1e-5, rtol=0)
    for w, g in zip(want, got_short):
        torch.testing.assert_close(g[0], w[2, :2], atol=1e-5, rtol=0)


def test_token_logps_and_entropy_at_a_temperature():
    """log p and entropy of softmax(logits / T), by hand; without an entropy bonus the entropy is a
    detached metric (same values), so its softmax stays out of the backward pass."""
    from align.models.logprobs import token_logps_entropy

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(5, 8, requires_grad=True)
    targets = torch.tensor([1, 7, 3, 49, 0])
    logp, ent = token_logps_entropy(head, hidden, targets, chunk_tokens=2, temperature=0.7)
    logits = head(hidden) / 0.7
    want = torch.log_softmax(logits, -1)
    torch.testing.assert_close(logp, want[torch.arange(5), targets])
    torch.testing.assert_close(ent, -(want.exp() * want).sum(-1))
    assert ent.requires_grad
    logp2, ent2 = token_logps_entropy(head, hidden, targets, 2, 0.7, entropy_grad=False)
    torch.testing.assert_close(ent2, ent.detach())
    assert logp2.requires_grad and not ent2.requires_grad


def test_ppo_on_verifiable_prompts_rewards_exact_answers_and_reports_accuracy(tmp_path):
    """align_math_v1 with align.rewards:exact_answer: the answers reach the reward at each step and
    the held-out evaluation adds greedy accuracy (0 for the random tiny model, but measured)."""
    summary = ppo(
        tmp_path / "run",
        "data.card=align_math_v1",
        "ppo.reward_function=align.rewards:exact_answer",
        "train.max_steps=1",
    )
    for when in ("before", "after"):
        assert 0.0 <= summary[when]["eval/accuracy"] <= 1.0
        assert summary[when]["eval/score"] == summary[when]["eval/accuracy"] == 0.0  # random replies
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/score" in r]
    assert rows and rows[0]["train/score"] == 0.0
    plain = ppo(
        tmp_path / "plain", "train.max_steps=1", "report.eval_before=false"
    )  # prompts without answers
    assert "eval/accuracy" not in plain["after"]


def test_an_answer_reward_on_prompts_without_answers_fails_clearly(tmp_path):
    with pytest.raises(RecipeError, match=r"exact_answer checks answers, but 8 of 8 prompts have none"):
        ppo(tmp_path / "run", "ppo.reward_function=align.rewards:exact_answer", "train.max_steps=1")
