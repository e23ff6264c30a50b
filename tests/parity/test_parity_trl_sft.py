"""Parity with TRL 1.16's SFTTrainer on the same tiny model (SmolLM2's tokenizer) and batch.

TRL's trainer is driven as it is: it tokenizes the records (assistant-only loss for `messages`,
completion-only loss for prompt + completion, every token for text), collates them, and its own
`compute_loss` gives the loss. We feed TRL's token ids and label mask to our scorer in both
layouts (padded rows, and sequences packed under the block mask) and to `sft_loss`, and require
TRL's loss and the LoRA gradients of that loss; and with `num_items_in_batch` (TRL's count over a
whole accumulation step) our step normalisation gives TRL's micro-batch losses. Our own
tokenization is compared with TRL's separately:

* `messages` (assistant-only loss): identical ids and masks. TRL needs `{% generation %}` markers in
  the template (SmolLM2's has none, and TRL 1.16 has no patch for it, so it raises); the test gives
  both sides SmolLM2's template with markers around each assistant turn's content + `<|im_end|>`,
  which renders the same text. Our masks come from the plain template (no markers needed).
* Plain text: identical ids (both append EOS); TRL's labels also mark the first token, which no
  position predicts, so the losses are the same.
* Conversational prompt + completion: TRL trains on everything the template renders after the
  prompt, so its completion ends `<|im_end|>` + "\\n"; ours ends at `<|im_end|>` (generation stops
  there). One token per record differs, asserted below.
* Plain prompt + completion ending on a token boundary: identical (see the DPO parity test for the
  other case).
* Normalisation: both are the per-token mean over the loss tokens of the batch (TRL:
  `per_token_loss.sum() / num_items_in_batch`, the accumulation step's count; ours: the step's
  count handed to each micro-batch, align/methods/sft.py).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer

from align.data.batches import SFTBatch
from align.data.packing import pack_sequences
from align.data.records import SFTRecord
from align.data.tokenize import TokenizeConfig, Tokenizer
from align.models.load import load_tokenizer, tiny_model
from align.models.logprobs import SequenceScorer
from align.objectives import sft_loss
from align.recipe import ModelConfig
from tests.model_helpers import randomize_lora_b

ATOL = 1e-5
TRL_CPU_FP32 = dict(use_cpu=True, bf16=False, fp16=False)
TURN = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
MARKED = (
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}{% else %}" + TURN + "{% endif %}"
)


def U(s: str) -> dict:
    return {"role": "user", "content": s}


def A(s: str) -> dict:
    return {"role": "assistant", "content": s}


MESSAGES = [
    {"messages": [U("Hi!"), A("Hello! How can I help?"), U("What is 7 times 6?"), A("42.")]},
    {"messages": [{"role": "system", "content": "Be brief."}, U("Name a colour."), A("Blue.")]},
    {"messages": [U("a"), A("b"), U("c"), A("d"), U("e"), A("f")]},
]
TEXT = [{"text": "The capital of France is Paris."}, {"text": "Two plus two is four."}]
CHAT_COMPLETION = [
    {"prompt": [U("What is 2 + 2?")], "completion": [A("4.")]},
    {"prompt": [U("Hi!"), A("Hello!"), U("Capital of Italy?")], "completion": [A("Rome.")]},
]
PLAIN_COMPLETION = [
    {"prompt": "Question: capital of Italy?\nAnswer:", "completion": " Rome."},
    {"prompt": "Q: 2 + 2?\nA:", "completion": " 4"},
]


@pytest.fixture(scope="module")
def tok():
    t = copy.deepcopy(load_tokenizer(ModelConfig("smollm2-135m-instruct")))
    assert TURN in t.chat_template
    plain = t.apply_chat_template(MESSAGES[0]["messages"], tokenize=False)
    t.chat_template = t.chat_template.replace(TURN, MARKED)
    assert t.apply_chat_template(MESSAGES[0]["messages"], tokenize=False) == plain  # same text
    return t


def trl_side(tok, rows: list[dict], out: Path, **config) -> tuple[SFTTrainer, dict[str, torch.Tensor]]:
    """TRL's trainer on `rows` (PEFT LoRA with a non-zero B) and its collated batch of all of them."""
    args = SFTConfig(
        output_dir=str(out),
        report_to="none",
        **TRL_CPU_FP32,
        max_length=256,
        per_device_train_batch_size=len(rows),
        save_strategy="no",
        seed=0,
        **config,
    )
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(
        model=tiny_model(seed=0),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=copy.deepcopy(tok),
        peft_config=lora,
    )
    randomize_lora_b(trainer.model)
    examples = [trainer.train_dataset[i] for i in range(len(rows))]
    assert len(trainer.train_dataset) == len(rows)  # nothing dropped
    return trainer, trainer.data_collator([{k: e[k] for k in ("input_ids", "labels")} for e in examples])


def trl_loss(trainer: SFTTrainer, batch: dict, num_items: int | None = None) -> torch.Tensor:
    trainer.model.train()
    n = None if num_items is None else torch.tensor(num_items)
    return trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=n)


def our_batch(batch: dict, pad: int) -> SFTBatch:
    """TRL's ids and label mask as our batch, with the packed rows built from them."""
    mask = (batch["labels"] != -100).long()
    mask[:, 0] = 0  # no position predicts the first token (TRL's shift drops it too)
    lengths = batch["attention_mask"].sum(1).tolist()
    rows = [batch["input_ids"][i, :n].tolist() for i, n in enumerate(lengths)]
    masks = [mask[i, :n].tolist() for i, n in enumerate(lengths)]
    index = torch.arange(len(rows))
    return SFTBatch(
        batch["input_ids"], batch["attention_mask"], mask, index, pack_sequences(rows, masks, pad, 64)
    )


def our_loss(model, batch: SFTBatch, layout: str, examples=None, tokens=None) -> torch.Tensor:
    inputs = batch.model_inputs()
    if layout == "padded":
        inputs["packed"] = None
    return sft_loss(SequenceScorer(model, layout=layout)(**inputs), examples, tokens).loss


CASES = {
    "messages": (MESSAGES, {"assistant_only_loss": True}),
    "text": (TEXT, {}),
    "chat prompt+completion": (CHAT_COMPLETION, {}),
    "plain prompt+completion": (PLAIN_COMPLETION, {}),
}


@pytest.fixture(scope="module")
def sides(tok, tmp_path_factory):
    return {
        name: trl_side(tok, rows, tmp_path_factory.mktemp("trl"), **cfg)
        for name, (rows, cfg) in CASES.items()
    }


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_loss_and_grads_equal_trl_on_its_batch(sides, tok, name, layout):
    trainer, batch = sides[name]
    model = trainer.model
    want = trl_loss(trainer, batch)
    model.zero_grad()
    want.backward()
    want_grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    ours = our_loss(model, our_batch(batch, tok.pad_token_id), layout).mean()
    torch.testing.assert_close(ours, want.detach(), atol=ATOL, rtol=0)
    model.zero_grad()
    ours.backward()
    for g, w in zip((p.grad for p in model.parameters() if p.requires_grad), want_grads):
        # fp32 noise differs by host: 1.2e-6 seen on one (the same code under 1e-6 on another)
        torch.testing.assert_close(g, w, atol=5e-6, rtol=1e-4)


def test_step_normalisation_equals_num_items_in_batch(sides, tok):
    """Two micro-batches of one accumulation step: TRL divides each by the step's label count;
    ours gives each example -E·Σ log π / T, and the loop sums loss_i / E."""
    trainer, batch = sides["messages"]
    model = trainer.model
    full = our_batch(batch, tok.pad_token_id)
    total = int(full.loss_mask[:, 1:].sum())
    halves = [slice(0, 1), slice(1, 3)]
    for part in halves:
        sub = {k: v[part] for k, v in batch.items()}
        want = trl_loss(trainer, sub, num_items=total)
        ours = our_loss(model, our_batch(sub, tok.pad_token_id), "packed", examples=3, tokens=total).sum() / 3
        torch.testing.assert_close(ours, want.detach(), atol=ATOL, rtol=0)


def our_examples(tok, rows: list[dict]) -> list[dict]:
    tk = Tokenizer(tok, TokenizeConfig(256, 128))
    records = []
    for row in rows:
        if "messages" in row:
            records.append(SFTRecord(None, row["messages"]))
        elif "text" in row:
            records.append(SFTRecord(None, row["text"]))
        else:
            records.append(SFTRecord(row["prompt"], row["completion"]))
    return [tk.sft(r) for r in records]


def trl_rows(batch: dict) -> list[tuple[list[int], list[int]]]:
    lengths = batch["attention_mask"].sum(1).tolist()
    return [
        (batch["input_ids"][i, :n].tolist(), (batch["labels"][i, :n] != -100).long().tolist())
        for i, n in enumerate(lengths)
    ]


@pytest.mark.parametrize("name", ["messages", "plain prompt+completion"])
def test_our_tokenization_equals_trls(sides, tok, name):
    _, batch = sides[name]
    for ours, (ids, mask) in zip(our_examples(tok, CASES[name][0]), trl_rows(batch)):
        assert ours["input_ids"] == ids and ours["loss_mask"] == mask


def test_text_differs_only_in_the_untrainable_first_token(sides, tok):
    _, batch = sides["text"]
    for ours, (ids, mask) in zip(our_examples(tok, TEXT), trl_rows(batch)):
        assert ours["input_ids"] == ids and ids[-1] == tok.eos_token_id
        assert mask[0] == 1 and ours["loss_mask"] == [0] + mask[1:]


def test_chat_completions_end_at_eos_where_trl_also_trains_the_newline(sides, tok):
    _, batch = sides["chat prompt+completion"]
    for ours, (ids, mask) in zip(our_examples(tok, CHAT_COMPLETION), trl_rows(batch)):
        assert ids[:-1] == ours["input_ids"] and tok.decode(ids[-1]) == "\n" and mask[-1] == 1
        assert ours["loss_mask"] == mask[:-1] and ours["input_ids"][-1] == tok.eos_token_id


def test_our_loss_on_our_tokens_equals_trls_where_the_tokens_agree(sides, tok):
    """The end-to-end number: `messages` records tokenized by us, scored by us == TRL's loss."""
    from align.data.batches import collate_sft

    trainer, batch = sides["messages"]
    exs = [{**e, "index": i} for i, e in enumerate(our_examples(tok, MESSAGES))]
    ours = our_loss(trainer.model, collate_sft(exs, tok.pad_token_id), "packed").mean()
    torch.testing.assert_close(ours, trl_loss(trainer, batch).detach(), atol=ATOL, rtol=0)
