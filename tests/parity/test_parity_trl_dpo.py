"""Parity with TRL 1.16's DPOTrainer on the same tiny model, tokenizer and batch.

What is compared, and why it is enough: TRL tokenizes and collates the records itself; we feed its
token ids to our SequenceScorer (policy with the LoRA adapter on, reference with it off, exactly as TRL's
PEFT path does) in both of our layouts (TRL's concatenated rows with its completion mask as our loss
mask, and our shared-prompt batch built by our collator from TRL's examples), then to our objectives,
and require TRL's per-sequence log-probs (captured from its own `_compute_loss` forward calls), its loss
and the LoRA gradients of that loss to match. Our collator and tokenizer are compared against TRL's
separately, so any training difference has to come from the documented differences below.

Documented differences from TRL 1.16 (asserted below unless marked "not exercised"):

* Conversational completions: TRL keeps everything the chat template renders after the prompt, so each
  completion ends `<|im_end|>` + "\\n" and the model is trained to predict the "\\n" after EOS. We end the
  completion at EOS (generation stops there). Completions are otherwise identical, prompts identical.
* Plain-text records: both add EOS (TRL appends the EOS text and tokenizes prompt+completion together; we
  tokenize the completion alone and append the EOS id). Identical when the prompt ends on a token
  boundary. When it does not (e.g. a prompt ending in a space), TRL cuts the prompt at the point where
  prompt and prompt+completion tokenizations diverge (dropping the prompt's last token, with a warning) and
  the completion starts with the merged token (" Rome"); we keep the prompt as tokenized alone (what the
  model sees at inference) and tokenize the completion separately ("Rome").
* Truncation (not exercised: nothing is truncated here): TRL 1.16 has no prompt limit; its collator cuts
  each prompt+completion row to `max_length` keeping the start, and drops examples whose prompt alone fills
  `max_length`. We cut the prompt from the left to `max_prompt_length` (keeping BOS), then the completion
  to fit `max_length`, and drop pairs whose completion becomes empty.
* Masks and layout: identical. Both right-pad, build attention and completion masks from lengths (never
  from `token == pad`, SmolLM2's pad is its EOS), and put the B chosen rows before the B rejected rows.
* Log-prob computation: same values. TRL's fused LM head on CPU (no Triton) projects every position,
  prompt and padding included, and also computes entropy / mean logit / top-1 for logging; on CUDA it
  projects only labelled positions. We project only completion positions on every device. TRL runs each
  prompt twice (once per completion row); we run it once: whole pairs packed under a block mask
  (`layout: packed`, the default), or both completions attending to its KV cache (`layout: shared`).
* IPO: both use per-token-mean log-ratios (our `normalize="mean"`), same target 1/(2β).
* `label_smoothing`: TRL's `loss_type="sigmoid"` ignores it (only "robust", "exo_pair" and "aot*" read
  it), so a TRL config with `label_smoothing=0.1` silently trains plain DPO. Ours trains cDPO.

fp32 note: per-sequence sums are compared at atol 1e-5. A random tiny model gives ~-10.8 nats per token,
so completions are kept short (|sum| < ~70, where the fp32 spacing is 3.8e-6 to 7.6e-6; observed max
difference: 1 ulp). Longer completions would need an rtol, not a different implementation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import LoraConfig
from trl import DPOConfig, DPOTrainer

from align.data.batches import PairBatch, collate_pairs
from align.data.records import PairRecord
from align.data.tokenize import TokenizeConfig, Tokenizer
from align.models.load import load_tokenizer, tiny_model
from align.models.logprobs import SequenceScorer
from align.models.reference import AdapterOffReference
from align.objectives import SeqLogps, get_objective
from align.recipe import ModelConfig
from tests.model_helpers import randomize_lora_b

ATOL = 1e-5
# TRL 1.16's DPOConfig defaults bf16=True: transformers refuses that on a CPU-only machine unless use_cpu,
# and autocasts silently where a GPU is present. These comparisons are fp32 on CPU on every machine.
TRL_CPU_FP32 = dict(use_cpu=True, bf16=False, fp16=False)


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


# Conversational records: single-turn, with a system message, multi-turn (assistant turn in the prompt).
CONVERSATIONAL = [
    {
        "prompt": [_msg("user", "What is 2+2?")],
        "chosen": [_msg("assistant", "4.")],
        "rejected": [_msg("assistant", "5, maybe.")],
    },
    {
        "prompt": [_msg("system", "Be terse."), _msg("user", "Capital of France?")],
        "chosen": [_msg("assistant", "Paris.")],
        "rejected": [_msg("assistant", "Lyon.")],
    },
    {
        "prompt": [
            _msg("user", "Hi."),
            _msg("assistant", "Hello! How can I help?"),
            _msg("user", "Name a color."),
        ],
        "chosen": [_msg("assistant", "Blue.")],
        "rejected": [_msg("assistant", "No.")],
    },
    {
        "prompt": [_msg("user", "Say yes."), _msg("assistant", "Yes."), _msg("user", "Again, in French.")],
        "chosen": [_msg("assistant", "Oui.")],
        "rejected": [_msg("assistant", "Yes again.")],
    },
]
# Plain-text records; the first two end on a token boundary, the last one (trailing space) does not.
PLAIN = [
    {"prompt": "Question: capital of Italy?\nAnswer:", "chosen": " Rome.", "rejected": " Milan, surely."},
    {"prompt": "Translate to French: cat\n", "chosen": "chat", "rejected": "chien"},
    {"prompt": "Answer: ", "chosen": "Rome.", "rejected": "Milan."},
]
BOUNDARY_OK = len(PLAIN) - 1  # plain records before this index end on a token boundary


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(ModelConfig("smollm2-135m-instruct"))


@dataclass
class TrlSide:
    trainer: DPOTrainer
    examples: list[dict[str, list[int]]]  # TRL-tokenized, CONVERSATIONAL then PLAIN
    batch: dict[str, torch.Tensor]  # TRL's collated batch of all examples


def _make_trainer(
    tokenizer,
    out: Path,
    loss_type: str | list[str],
    beta: float,
    label_smoothing: float = 0.0,
    n_batch: int | None = None,
    **config,
) -> TrlSide:
    """A DPOTrainer (PEFT: reference = adapter off) whose policy differs deterministically from the reference.

    The batch holds the first `n_batch` examples (all by default). TRL's CPU log-prob path (every position
    through the LM head, plus logging statistics) dominates these tests' runtime even on the tiny model, so a
    test that needs only the loss uses a smaller batch. `config`: further DPOConfig fields (loss_weights).
    """
    args = DPOConfig(
        output_dir=str(out),
        report_to="none",
        **TRL_CPU_FP32,
        gradient_checkpointing=False,
        loss_type=loss_type,
        beta=beta,
        label_smoothing=label_smoothing,
        max_length=256,
        per_device_train_batch_size=len(CONVERSATIONAL) + len(PLAIN),
        save_strategy="no",
        seed=0,
        **config,
    )
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(
        model=tiny_model(seed=0),
        args=args,
        train_dataset=Dataset.from_list(CONVERSATIONAL),
        processing_class=tokenizer,
        peft_config=lora,
    )
    plain = trainer._prepare_dataset(Dataset.from_list(PLAIN), tokenizer, trainer.args, "plain")
    keys = ("prompt_ids", "chosen_ids", "rejected_ids")
    examples = [{k: ex[k] for k in keys} for ex in [*trainer.train_dataset, *plain]]
    assert len(examples) == len(CONVERSATIONAL) + len(PLAIN)  # nothing dropped or truncated
    # LoRA B starts at zero (policy == reference, loss == log 2); make it non-zero, deterministically.
    randomize_lora_b(trainer.model)  # a policy that differs from the reference, deterministically
    examples = examples[:n_batch]
    return TrlSide(trainer, examples, trainer.data_collator(examples))


@pytest.fixture(scope="module")
def make_trl(tokenizer, tmp_path_factory) -> Callable[..., TrlSide]:
    def make(
        loss_type: str, beta: float, label_smoothing: float = 0.0, n_batch: int | None = None
    ) -> TrlSide:
        out = tmp_path_factory.mktemp("trl")
        return _make_trainer(tokenizer, out, loss_type, beta, label_smoothing, n_batch)

    return make


def _trl_loss_and_logps(side: TrlSide) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TRL's own `_compute_loss` on its batch; per-sequence log-probs captured from its two forward calls
    (policy first, then the adapter-off reference) and summed exactly as it does (`log_probs.sum(dim=1)`)."""
    calls: list[torch.Tensor] = []
    model = side.trainer.model
    hook = model.register_forward_hook(lambda _m, _i, out: calls.append(out.log_probs.detach().clone()))
    try:
        model.train()
        loss = side.trainer._compute_loss(model, side.batch, return_outputs=False)
    finally:
        hook.remove()
    assert len(calls) == 2, "expected one policy and one reference forward"
    return loss, calls[0].sum(dim=1), calls[1].sum(dim=1)


def _our_batches(side: TrlSide, pad_id: int) -> dict[str, PairBatch]:
    """Our three forward layouts over TRL's token ids (keyed by `SequenceScorer` layout).

    "padded": TRL's own tensors (loss mask = its completion mask), prompt+completion per row.
    "shared": our collator on TRL's examples; each prompt runs once and both completions reuse its
    KV cache. "packed": the same examples as whole pairs under a block mask (the default path).
    """
    b = side.batch
    index = torch.arange(len(side.examples))
    ours = collate_pairs([{**ex, "index": i} for i, ex in enumerate(side.examples)], pad_id)
    return {
        "padded": PairBatch(b["input_ids"], b["attention_mask"], b["completion_mask"], index),
        "shared": ours,
        "packed": ours,
    }


def _our_logps(side: TrlSide, batch: PairBatch, layout: str = "packed") -> tuple[SeqLogps, SeqLogps]:
    """Policy (adapter on) and reference (adapter off) log-probs from our scorer, as the training step calls it."""
    scorer = SequenceScorer(side.trainer.model, layout=layout)
    assert scorer.fast  # the backbone + completion-only LM head path, not the full-logits fallback
    policy = scorer(**batch.model_inputs())
    reference = AdapterOffReference(scorer, side.trainer.model)(batch)
    return policy, reference


def _lora_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize(
    ("loss_type", "objective", "kwargs", "beta"),
    [("sigmoid", "dpo", {"label_smoothing": 0.0}, 0.1), ("ipo", "ipo", {"normalize": "mean"}, 0.1)],
)
def test_logps_loss_and_grads_match_trl(
    make_trl, tokenizer, loss_type: str, objective: str, kwargs: dict, beta: float
) -> None:
    side = make_trl(loss_type, beta)
    model = side.trainer.model
    model.zero_grad(set_to_none=True)
    trl_loss, trl_policy, trl_ref = _trl_loss_and_logps(side)
    trl_loss.backward()
    trl_grads = _lora_grads(model)
    assert (trl_policy - trl_ref).abs().max() > 1e-2, "policy == reference: the comparison would be vacuous"
    assert loss_type != "sigmoid" or abs(float(trl_loss.detach()) - math.log(2)) > 1e-3  # not trivially log 2
    batches = _our_batches(side, tokenizer.pad_token_id)
    assert batches["shared"].prompt_ids is not None and batches["packed"].packed is not None
    for layout, batch in batches.items():
        _check_against_trl(
            side, batch, objective, kwargs, beta, (trl_loss, trl_policy, trl_ref), trl_grads, layout
        )


def _check_against_trl(
    side: TrlSide,
    batch: PairBatch,
    objective: str,
    kwargs: dict,
    beta: float,
    trl_out: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    trl_grads: dict[str, torch.Tensor],
    layout: str,
) -> None:
    """Per-sequence log-probs, token counts, loss and LoRA gradients of one of our layouts vs TRL's."""
    trl_loss, trl_policy, trl_ref = trl_out
    model = side.trainer.model
    policy, reference = _our_logps(side, batch, layout)
    n_completion = side.batch["completion_mask"][:, 1:].sum(dim=1).to(policy.n_tokens.dtype)
    torch.testing.assert_close(policy.n_tokens, n_completion, atol=0, rtol=0, msg=layout)
    torch.testing.assert_close(policy.sum.detach(), trl_policy, atol=ATOL, rtol=0, msg=layout)
    torch.testing.assert_close(reference.sum, trl_ref, atol=ATOL, rtol=0, msg=layout)

    out = get_objective(objective).fn(PairBatch.split(policy), PairBatch.split(reference), beta, **kwargs)
    ours = out.loss.mean()
    torch.testing.assert_close(ours.detach(), trl_loss.detach(), atol=ATOL, rtol=1e-6, msg=layout)  # IPO: ~25
    ours.backward()
    our_grads = _lora_grads(model)
    assert our_grads.keys() == trl_grads.keys()
    for name, g in trl_grads.items():
        # fp32 noise differs by host: 1.2e-6 seen on one (the same code under 1e-6 on another)
        torch.testing.assert_close(our_grads[name], g, atol=5e-6, rtol=1e-4, msg=f"{layout}: {name}")


def test_trl_side_is_fp32_on_cpu_whatever_the_machine(make_trl) -> None:
    trainer = make_trl("sigmoid", 0.1, n_batch=1).trainer
    assert (trainer.args.bf16, trainer.args.fp16, trainer.accelerator.mixed_precision) == (False, False, "no")
    assert trainer.args.device.type == "cpu"
    assert {(p.device.type, p.dtype) for p in trainer.model.parameters()} == {("cpu", torch.float32)}


def test_collator_matches_trl(make_trl, tokenizer) -> None:
    """Same examples -> identical tensors: ids, attention mask, and our loss mask == TRL's completion mask."""
    side = make_trl("sigmoid", 0.1)
    ours = collate_pairs([{**ex, "index": i} for i, ex in enumerate(side.examples)], tokenizer.pad_token_id)
    assert torch.equal(ours.input_ids, side.batch["input_ids"])
    assert torch.equal(ours.attention_mask, side.batch["attention_mask"])
    assert torch.equal(ours.loss_mask, side.batch["completion_mask"])
    # Padding exists in this batch, and pad == EOS, so masks built from `token != pad` would be wrong.
    assert (ours.attention_mask == 0).any() and tokenizer.pad_token_id == tokenizer.eos_token_id


def test_tokenization_matches_trl_up_to_documented_differences(make_trl, tokenizer) -> None:
    side = make_trl("sigmoid", 0.1)
    tk = Tokenizer(tokenizer, TokenizeConfig(max_length=256, max_prompt_length=192))
    eos, newline = tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("Ċ")
    records = [
        PairRecord(r["prompt"], r["chosen"], r["rejected"], f"rec:{i}")
        for i, r in enumerate(CONVERSATIONAL + PLAIN)
    ]
    for i, (rec, theirs) in enumerate(zip(records, side.examples)):
        ours = tk.pair(rec)
        assert ours is not None
        if rec.conversational:
            assert ours["prompt_ids"] == theirs["prompt_ids"], rec.origin
            for key in ("chosen_ids", "rejected_ids"):
                # TRL keeps the template's "\n" after <|im_end|>; we stop at EOS.
                assert theirs[key][-2:] == [eos, newline], rec.origin
                assert ours[key] == theirs[key][:-1], rec.origin
        elif i - len(CONVERSATIONAL) < BOUNDARY_OK:
            assert ours == theirs, rec.origin
        else:
            # Prompt "Answer: " (trailing space): TRL drops the prompt's last token (" ") and merges it into
            # the completion (" Rome"); we keep the prompt as tokenized alone and the completion starts "Rome".
            assert theirs["prompt_ids"] == ours["prompt_ids"][:-1], rec.origin
            assert tokenizer.convert_ids_to_tokens(ours["prompt_ids"][-1]) == "Ġ"
            assert tokenizer.decode(theirs["chosen_ids"]) == " Rome.<|im_end|>"
            assert tokenizer.decode(ours["chosen_ids"]) == "Rome.<|im_end|>"
            assert ours["chosen_ids"][-1] == theirs["chosen_ids"][-1] == eos


def test_trl_sigmoid_ignores_label_smoothing(make_trl, tokenizer) -> None:
    """TRL 1.16 bug we do not reproduce: `loss_type="sigmoid"` with `label_smoothing=0.1` is plain DPO.

    Our dpo objective applies it (cDPO, Mitchell 2023). If TRL fixes this, this test fails: then update
    the note in align/objectives/dpo.py.
    """
    beta = 1.0  # a large β makes the ε term visible on this nearly-untrained policy
    side = make_trl("sigmoid", beta, label_smoothing=0.1, n_batch=3)
    with torch.no_grad():
        trl_loss, _, _ = _trl_loss_and_logps(side)
        policy, reference = _our_logps(side, _our_batches(side, tokenizer.pad_token_id)["packed"])
    pol, ref = PairBatch.split(policy), PairBatch.split(reference)
    dpo = get_objective("dpo").fn
    plain = dpo(pol, ref, beta, label_smoothing=0.0).loss.mean()
    smoothed = dpo(pol, ref, beta, label_smoothing=0.1).loss.mean()
    torch.testing.assert_close(trl_loss, plain, atol=ATOL, rtol=0)  # TRL: ε silently dropped
    assert abs(float(smoothed) - float(trl_loss)) > 100 * ATOL
    # cDPO: (1-ε)·(-log σ(βh)) + ε·(-log σ(-βh)), h the summed log-ratio margin.
    h = beta * ((pol.chosen.sum - ref.chosen.sum) - (pol.rejected.sum - ref.rejected.sum))
    expected = (-0.9 * F.logsigmoid(h) - 0.1 * F.logsigmoid(-h)).mean()
    torch.testing.assert_close(smoothed, expected, atol=ATOL, rtol=0)
