"""Parity with TRL 1.16's KTOTrainer on the same tiny model (PEFT; reference = adapter off) and batch.

TRL builds its KL rows by rotating completions by one inside each per-device batch (record i's
prompt with record i-1's completion). Ours are fixed per record (align/data/batches.py:
kl_partners); here we hand our collator TRL's own KL completions, so both sides score the same
token ids, and compare the loss, the per-class rewards and the KL estimate z0.
"""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from trl import KTOConfig, KTOTrainer

from align.data.batches import collate_unpaired
from align.methods import KTOMethod
from align.models.load import load_tokenizer, tiny_model
from align.models.logprobs import SequenceScorer
from align.models.reference import AdapterOffReference
from align.recipe import ModelConfig
from tests.model_helpers import randomize_lora_b

ATOL = 1e-5


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


RECORDS = [
    {"prompt": [_msg("user", "What is 2+2?")], "completion": [_msg("assistant", "4.")], "label": True},
    {
        "prompt": [_msg("system", "Be terse."), _msg("user", "Capital of France?")],
        "completion": [_msg("assistant", "Lyon, I think.")],
        "label": False,
    },
    {
        "prompt": [_msg("user", "Hi."), _msg("assistant", "Hello!"), _msg("user", "Name a color.")],
        "completion": [_msg("assistant", "Blue.")],
        "label": True,
    },
    {"prompt": [_msg("user", "Say yes.")], "completion": [_msg("assistant", "No.")], "label": False},
    {"prompt": [_msg("user", "Spell cat.")], "completion": [_msg("assistant", "C-A-T.")], "label": True},
]


@pytest.fixture(scope="module")
def trl_side(tmp_path_factory):
    tokenizer = load_tokenizer(ModelConfig("smollm2-135m-instruct"))
    args = KTOConfig(
        output_dir=str(tmp_path_factory.mktemp("kto")),
        report_to="none",
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        beta=0.3,
        desirable_weight=0.8,
        undesirable_weight=1.4,
        max_length=256,
        per_device_train_batch_size=len(RECORDS),
        save_strategy="no",
        seed=0,
    )
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = KTOTrainer(
        model=tiny_model(seed=0),
        args=args,
        train_dataset=Dataset.from_list(RECORDS),
        processing_class=tokenizer,
        peft_config=lora,
    )
    randomize_lora_b(trainer.model)  # a policy that differs from the reference, deterministically
    examples = list(trainer.train_dataset)
    return trainer, examples, tokenizer


def test_loss_rewards_and_kl_match_trl(trl_side):
    trainer, examples, tokenizer = trl_side
    model = trainer.model
    model.train()
    batch = trainer.data_collator(examples)
    trl_loss = trainer._compute_loss(model, batch, return_outputs=False)
    m = trainer._metrics["train"]
    trl_kl, trl_up, trl_down = m["kl"][-1], m["rewards/chosen"][-1], m["rewards/rejected"][-1]

    ours_in = [
        {
            "index": i,
            "prompt_ids": ex["prompt_ids"],
            "completion_ids": ex["completion_ids"],
            "label": ex["label"],
        }
        for i, ex in enumerate(examples)
    ]
    kl_rows = [ex["KL_completion_ids"] for ex in examples]
    assert kl_rows == [examples[-1]["completion_ids"]] + [ex["completion_ids"] for ex in examples[:-1]]
    ours = collate_unpaired(ours_in, kl_rows, tokenizer.pad_token_id, max_length=256)
    scorer = SequenceScorer(model)
    assert scorer.layout == "packed"
    policy = scorer(**ours.model_inputs())
    reference = AdapterOffReference(scorer, model)(ours)
    out = KTOMethod(beta=0.3, desirable_weight=0.8, undesirable_weight=1.4).loss(policy, reference, ours)

    assert abs(trl_kl) > 1e-3 and not math.isclose(trl_up, trl_down)  # a comparison that could fail
    torch.testing.assert_close(out.loss.mean(), trl_loss.detach(), atol=ATOL, rtol=0)
    assert float(out.metrics["kl"][0]) == pytest.approx(trl_kl, abs=ATOL)
    assert float(out.metrics["rewards/desirable"].nanmean()) == pytest.approx(trl_up, abs=ATOL)
    assert float(out.metrics["rewards/undesirable"].nanmean()) == pytest.approx(trl_down, abs=ATOL)
