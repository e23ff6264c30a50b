"""Parity with TRL 1.16's RewardTrainer.compute_loss: same weights, same batch, same loss.

TRL scores a sequence with `AutoModelForSequenceClassification`, which reads the logit at the
last token that is not the pad id. With SmolLM2 (pad = eos = `<|im_end|>`, which ends every
completion) that rule reads the token *before* the final EOS; ours reads the last real token from
the attention mask. So TRL's side gets pad id 0 (`<|endoftext|>`, absent from the data) in its
padding, where both rules agree, and the two must then give the same scores and loss.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from trl import RewardConfig, RewardTrainer

from align.data.batches import collate_pairs
from align.models.adapters import ScalarHead
from align.models.load import load_tokenizer, tiny_config, tiny_model
from align.models.reward_model import RewardScorer
from align.objectives.reward import bradley_terry_loss
from align.recipe import ModelConfig

PAIRS = [
    ([{"role": "user", "content": "2+2?"}], "4.", "5."),
    ([{"role": "user", "content": "Capital of France?"}], "Paris.", "Lyon, I believe, or maybe Nice."),
    ([{"role": "user", "content": "Say hi."}], "Hi!", "No."),
]


def test_bradley_terry_loss_and_scores_match_trl(tmp_path):
    from transformers import AutoModelForSequenceClassification

    tok = load_tokenizer(ModelConfig("tiny-smollm2"))
    examples = []
    for i, (prompt, chosen, rejected) in enumerate(PAIRS):
        p = list(tok.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"])
        c = tok(chosen, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        r = tok(rejected, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        examples.append({"index": i, "prompt_ids": p, "chosen_ids": c, "rejected_ids": r})
    batch = collate_pairs(examples, tok.pad_token_id)

    causal = tiny_model(seed=0)
    head = ScalarHead(causal.config.hidden_size, seed=5)
    torch.nn.init.zeros_(head.linear.bias)  # TRL's score layer has no bias
    ours = RewardScorer(causal, head).eval()
    with torch.no_grad():
        scores = ours(**batch.model_inputs())
    b = len(PAIRS)
    out = bradley_terry_loss(scores[:b], scores[b:], center_coef=0.01)

    seq = AutoModelForSequenceClassification.from_config(tiny_config(num_labels=1, pad_token_id=0))
    seq.model.load_state_dict(causal.model.state_dict())
    seq.score.weight.data.copy_(head.linear.weight)
    seq.eval()
    args = RewardConfig(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False, center_rewards_coefficient=0.01
    )
    dataset = Dataset.from_list(
        [{"chosen_ids": e["chosen_ids"], "rejected_ids": e["rejected_ids"]} for e in examples]
    )
    trainer = RewardTrainer(model=seq, args=args, train_dataset=dataset, processing_class=tok)
    trainer.model.config.pad_token_id = 0  # TRL sets the tokenizer's (= EOS); see the docstring
    ids = batch.input_ids.masked_fill(batch.attention_mask == 0, 0)  # TRL's side: pad id 0
    with torch.no_grad():
        trl_loss, trl_out = trainer.compute_loss(
            seq, {"input_ids": ids, "attention_mask": batch.attention_mask}, return_outputs=True
        )
    torch.testing.assert_close(trl_out["logits"].squeeze(-1).float(), scores, atol=1e-5, rtol=0)
    assert float(out.loss.mean()) == pytest.approx(float(trl_loss), abs=1e-6)
    assert float(scores.std()) > 1e-3  # non-trivial scores: a comparison that could fail

    # with SmolLM2's own pad id, the stock rule reads another token and the scores differ
    stock = AutoModelForSequenceClassification.from_config(tiny_config(num_labels=1))
    stock.load_state_dict(seq.state_dict())
    with torch.no_grad():
        shifted = stock(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.squeeze(-1)
    assert (shifted - scores).abs().max() > 1e-3
