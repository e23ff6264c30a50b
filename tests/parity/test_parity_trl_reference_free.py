"""Parity of the reference-free objectives with TRL 1.16's experimental trainers on the same tiny model,
tokenizer and batch: SimPO == `trl.experimental.cpo.CPOTrainer(loss_type="simpo", cpo_alpha=0)`, ORPO ==
`trl.experimental.orpo.ORPOTrainer` (its `beta` is ORPO's λ, as ours).

The conversational records of test_parity_trl_dpo.py (a dataset cannot mix them with its plain-text ones).
TRL's legacy pairwise tokenization (prompt + completion rows, prompt labels -100) is taken as given: its
concatenated rows, attention mask and label mask go straight into our SequenceScorer (padded layout: the
same rows), so what is compared is the per-sequence mean log-probs, the loss and the LoRA gradients.

Documented difference (ORPO): TRL's NLL term is one cross-entropy mean over every non-padding token of the
micro-batch's chosen rows, prompt tokens included (as the ORPO authors' code does); ours is the per-pair
mean over the chosen completion only (metrics.chosen_nll). The odds-ratio term is identical, and the test
checks TRL's NLL is exactly that prompt-inclusive token mean, scored by our scorer with every token
labelled.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from trl.experimental.cpo import CPOConfig, CPOTrainer
from trl.experimental.orpo import ORPOConfig, ORPOTrainer

from align.data.batches import PairBatch
from align.models.load import load_tokenizer, tiny_model
from align.models.logprobs import SequenceScorer
from align.objectives import get_objective
from align.recipe import ModelConfig
from tests.model_helpers import randomize_lora_b
from tests.parity.test_parity_trl_dpo import ATOL, CONVERSATIONAL, TRL_CPU_FP32, _lora_grads

MEAN_ATOL = 2e-6  # per-token means of sums compared at 1e-5 (test_parity_trl_dpo.py's fp32 note)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(ModelConfig("smollm2-135m-instruct"))


def _trainer(kind: str, tokenizer, out, beta: float, **extra):
    common = dict(
        output_dir=str(out),
        report_to="none",
        **TRL_CPU_FP32,
        beta=beta,
        max_length=256,
        per_device_train_batch_size=len(CONVERSATIONAL),
        save_strategy="no",
        seed=0,
        **extra,
    )
    config, trainer_cls = (CPOConfig, CPOTrainer) if kind == "cpo" else (ORPOConfig, ORPOTrainer)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = trainer_cls(
        model=tiny_model(seed=0),
        args=config(**common),
        train_dataset=Dataset.from_list(CONVERSATIONAL),
        processing_class=tokenizer,
        peft_config=lora,
    )
    randomize_lora_b(trainer.model)  # a trained-looking policy, deterministically
    batch = trainer.data_collator(list(trainer.train_dataset))
    return trainer, batch


def _ours(trainer, batch, all_tokens: bool = False):
    """Our scorer on TRL's concatenated rows (chosen rows, then rejected), label mask = TRL's labels
    (or every real token after the first, `all_tokens`, to reproduce ORPO's prompt-inclusive NLL)."""
    pad = trainer.pad_token_id if isinstance(trainer, CPOTrainer) else trainer.padding_value
    cat = trainer.concatenated_inputs(batch, is_encoder_decoder=False, padding_value=pad)
    ids, attn = cat["concatenated_input_ids"], cat["concatenated_attention_mask"]
    mask = attn.clone() if all_tokens else (cat["concatenated_labels"] != -100).long()
    if all_tokens:
        mask[:, 0] = 0  # the first token is never predicted
    pair = PairBatch(ids, attn, mask, torch.arange(ids.shape[0] // 2))
    scorer = SequenceScorer(trainer.model, layout="padded")
    assert scorer.fast
    return PairBatch.split(scorer(**pair.model_inputs()))


def test_simpo_matches_trl_cpo_simpo(tokenizer, tmp_path) -> None:
    beta, gamma = 2.0, 0.5
    trainer, batch = _trainer(
        "cpo", tokenizer, tmp_path, beta, loss_type="simpo", cpo_alpha=0.0, simpo_gamma=gamma
    )
    model = trainer.model
    model.train()
    model.zero_grad(set_to_none=True)
    trl_c, trl_r = trainer.concatenated_forward(model, batch)[:2]
    trl_loss, _ = trainer.get_batch_loss_metrics(model, batch, "train")
    trl_loss.backward()
    trl_grads = _lora_grads(model)

    pol = _ours(trainer, batch)
    torch.testing.assert_close(pol.chosen.mean.detach(), trl_c.detach(), atol=MEAN_ATOL, rtol=0)
    torch.testing.assert_close(pol.rejected.mean.detach(), trl_r.detach(), atol=MEAN_ATOL, rtol=0)
    assert (pol.chosen.n_tokens != pol.rejected.n_tokens).any()  # length normalisation is exercised
    ours = get_objective("simpo").fn(pol, None, beta, gamma=gamma).loss.mean()
    torch.testing.assert_close(ours.detach(), trl_loss.detach(), atol=ATOL, rtol=0)
    ours.backward()
    our_grads = _lora_grads(model)
    assert our_grads.keys() == trl_grads.keys()
    for name, g in trl_grads.items():
        torch.testing.assert_close(our_grads[name], g, atol=1e-6, rtol=1e-4, msg=name)


def test_orpo_matches_trl_orpo_up_to_the_documented_nll(tokenizer, tmp_path) -> None:
    lam = 0.1
    trainer, batch = _trainer("orpo", tokenizer, tmp_path, lam)
    model = trainer.model
    model.train()
    model.zero_grad(set_to_none=True)
    trl_c, trl_r, _, _, trl_nll = trainer.concatenated_forward(model, batch)
    trl_loss, metrics = trainer.get_batch_loss_metrics(model, batch, "train")
    (trl_loss - trl_nll).backward()  # the odds-ratio term alone
    trl_or_grads = _lora_grads(model)

    pol = _ours(trainer, batch)
    torch.testing.assert_close(pol.chosen.mean.detach(), trl_c.detach(), atol=MEAN_ATOL, rtol=0)
    torch.testing.assert_close(pol.rejected.mean.detach(), trl_r.detach(), atol=MEAN_ATOL, rtol=0)
    out = get_objective("orpo").fn(pol, None, lam)
    trl_log_odds = torch.as_tensor(metrics["log_odds_chosen"], dtype=torch.float32)  # TRL: the batch mean
    torch.testing.assert_close(out.metrics["orpo/log_odds"].mean(), trl_log_odds, atol=ATOL, rtol=0)
    odds_term = out.loss.mean() - out.metrics["nll"].mean()  # nll is detached in metrics: value only
    torch.testing.assert_close(odds_term.detach(), (trl_loss - trl_nll).detach(), atol=ATOL, rtol=0)
    (out.loss - (-pol.chosen.mean)).mean().backward()  # our odds-ratio term, with its graph
    our_or_grads = _lora_grads(model)
    for name, g in trl_or_grads.items():
        torch.testing.assert_close(our_or_grads[name], g, atol=1e-6, rtol=1e-4, msg=name)

    # The NLL: TRL's = token mean over prompt + chosen tokens of the batch; ours = per-pair completion mean.
    with torch.no_grad():
        every = _ours(trainer, batch, all_tokens=True).chosen
    torch.testing.assert_close(trl_nll.detach(), -every.sum.sum() / every.n_tokens.sum(), atol=ATOL, rtol=0)
    assert abs(trl_nll.item() - out.metrics["nll"].mean().item()) > 100 * ATOL
