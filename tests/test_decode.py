"""The fast rollout backend (align/models/decode.py) against the HF forward, on the real embedded
SmolLM2-135M-Instruct with a non-zero LoRA adapter: greedy tokens equal `generate`'s, logits equal
the HF forward's, seeded sampling is the same on both backends, the trained weights stay as they
were, and unsupported models fall back to the HF path."""

from __future__ import annotations

import pytest
import torch
from model_helpers import randomize_lora_b, tiny_causal_lm

from align.models.decode import StaticDecoder, unsupported
from align.models.decode_weights import prepare
from align.models.load import add_lora, load_model, load_tokenizer, tiny_model
from align.models.rollout import Sampling, backend_for, left_pad, sample
from align.recipe import LoraConfig, ModelConfig

# fp32 sums in another order differ by ~1e-4 on logits of size ~20; greedy may flip only on such a tie
ATOL = 3e-4
TIE = 1e-3
QUESTIONS = ("Hi", "What is the capital of France? Answer in one sentence, please.", "2+2?", "Name a color.")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(ModelConfig("smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def model():
    base = load_model(ModelConfig("smollm2-135m-instruct", "float32")).eval()
    peft_model = add_lora(base, LoraConfig(r=4, alpha=8, dropout=0.0)).eval()
    randomize_lora_b(peft_model, scale=0.02)
    return peft_model


@pytest.fixture(scope="module")
def prompts(tok):
    return [
        list(
            tok.apply_chat_template(
                [{"role": "user", "content": q}], add_generation_prompt=True, return_dict=True
            )["input_ids"]
        )
        for q in QUESTIONS
    ]


def _until_eos(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos) + 1] if eos in row else row


def test_the_adapter_matters_and_the_model_is_supported(model, prompts):
    assert unsupported(model) is None and backend_for(model) == "fast"
    x = torch.tensor([prompts[1]])
    with torch.no_grad():
        on = model(input_ids=x).logits
        with model.disable_adapter():
            off = model(input_ids=x).logits
    assert (on - off).abs().max() > 1e-2  # a fresh adapter (B = 0) would test nothing


def _assert_same_greedy(got: list[int], want: list[int], scores: list[torch.Tensor]) -> None:
    """Token for token; a first difference is allowed only where the reference's top two logits
    lie within fp32 reduction noise (then the rest of the row is free to differ)."""
    for t, (a, b) in enumerate(zip(got, want)):
        if a != b:
            top2 = scores[t].topk(2).values
            assert float(top2[0] - top2[1]) < TIE, f"step {t}: {a} != {b} with margin {top2}"
            return
    assert len(got) == len(want)


def _greedy_reference(model, prompts, tok, n: int) -> tuple[list[list[int]], torch.Tensor]:
    ids, plen = left_pad(prompts, tok.pad_token_id)
    att = (torch.arange(ids.shape[1])[None] >= (ids.shape[1] - plen)[:, None]).long()
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=att,
            max_new_tokens=n,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
    rows = [
        _until_eos(out.sequences[i, ids.shape[1] :].tolist(), tok.eos_token_id) for i in range(len(prompts))
    ]
    return rows, torch.stack(out.logits, 1)


def test_greedy_equals_generate_token_for_token(model, prompts, tok):
    n = 24
    r = sample(model, prompts, Sampling(max_new_tokens=n, temperature=0), tok.eos_token_id, tok.pad_token_id)
    want, logits = _greedy_reference(model, prompts, tok, n)
    for i in range(len(prompts)):
        _assert_same_greedy(r.response_ids[i, : int(r.response_len[i])].tolist(), want[i], list(logits[i]))


def test_logits_equal_the_hf_forward(model, prompts):
    """Prefill and every decode step against one HF forward over prompt + response."""
    ids, plen = left_pad(prompts, 2)
    n = 6
    decoder = StaticDecoder(prepare(model), len(prompts), ids.shape[1] + n)
    got = [decoder.prefill(ids, plen)]
    toks = []
    for _ in range(n - 1):
        toks.append(got[-1].argmax(-1))
        got.append(decoder.step(toks[-1]))
    full = torch.cat([ids, torch.stack(toks, 1)], 1)
    tp = ids.shape[1]
    att = (torch.arange(full.shape[1])[None] >= (tp - plen)[:, None]).long()
    with torch.no_grad():
        ref = model(input_ids=full, attention_mask=att, position_ids=(att.cumsum(1) - 1).clamp(min=0)).logits
    for t, logits in enumerate(got):
        torch.testing.assert_close(logits, ref[:, tp - 1 + t], atol=ATOL, rtol=1e-4)


def test_seeded_sampling_is_reproducible_and_equal_between_backends(model, prompts, tok):
    s = Sampling(max_new_tokens=12, temperature=0.8, top_k=50, top_p=0.95)

    def run(backend: str, seed: int):
        g = torch.Generator().manual_seed(seed)
        return sample(model, prompts, s, tok.eos_token_id, tok.pad_token_id, generator=g, backend=backend)

    a, b, hf, other = run("fast", 5), run("fast", 5), run("hf", 5), run("fast", 6)
    assert torch.equal(a.response_ids, b.response_ids)
    assert torch.equal(a.response_ids, hf.response_ids) and torch.equal(a.response_len, hf.response_len)
    assert not torch.equal(a.response_ids, other.response_ids)


def test_trained_weights_are_untouched_and_updates_are_seen(model, prompts, tok):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n for n, p in model.named_parameters() if p.requires_grad}
    s = Sampling(max_new_tokens=4, temperature=0)
    sample(model, prompts, s, tok.eos_token_id, tok.pad_token_id, backend="fast")
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == grads
    try:  # an optimizer step (in place) between rollouts: the merged buffers must follow it
        ids, plen = left_pad(prompts, tok.pad_token_id)
        stale = StaticDecoder(prepare(model), len(prompts), ids.shape[1] + 1).prefill(ids, plen)
        randomize_lora_b(model, seed=99, scale=0.05)
        fresh = StaticDecoder(prepare(model), len(prompts), ids.shape[1] + 1).prefill(ids, plen)
        att = (torch.arange(ids.shape[1])[None] >= (ids.shape[1] - plen)[:, None]).long()
        with torch.no_grad():
            ref = model(
                input_ids=ids, attention_mask=att, position_ids=(att.cumsum(1) - 1).clamp(min=0)
            ).logits
        torch.testing.assert_close(fresh, ref[:, -1], atol=ATOL, rtol=1e-4)
        assert (fresh - stale).abs().max() > 1e-2
        fast = sample(model, prompts, s, tok.eos_token_id, tok.pad_token_id, backend="fast")
        want, logits = _greedy_reference(model, prompts, tok, 4)
        for i in range(len(prompts)):
            _assert_same_greedy(
                fast.response_ids[i, : int(fast.response_len[i])].tolist(), want[i], list(logits[i])
            )
    finally:
        with torch.no_grad():
            for k, p in model.state_dict().items():
                p.copy_(before[k])


def test_unsupported_models_say_why_and_auto_falls_back(prompts):
    assert "not LlamaForCausalLM" in unsupported(tiny_causal_lm("MistralConfig").eval())
    assert "bias" in unsupported(tiny_model(attention_bias=True).eval())
    assert "hidden_act" in unsupported(tiny_model(hidden_act="gelu").eval())
    rope = tiny_model(rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}).eval()
    assert "rope_type" in unsupported(rope)
    dropout = add_lora(tiny_model(), LoraConfig(r=2, dropout=0.1)).train()
    assert "dropout" in unsupported(dropout)
    assert unsupported(dropout.eval()) is None and unsupported(tiny_model().eval()) is None
    mistral = tiny_causal_lm("MistralConfig").eval()
    s = Sampling(max_new_tokens=4, temperature=0)
    short = [p[-6:] for p in prompts]
    small = [[t % 256 for t in p] for p in short]  # tiny_causal_lm's vocabulary is 256
    assert backend_for(mistral) == "hf"
    auto = sample(mistral, small, s, 2, 0, backend="auto")
    assert torch.equal(auto.response_ids, sample(mistral, small, s, 2, 0, backend="hf").response_ids)
    with pytest.raises(ValueError, match="not LlamaForCausalLM"):
        sample(mistral, small, s, 2, 0, backend="fast")
    with pytest.raises(ValueError, match="backend"):
        sample(mistral, small, s, 2, 0, backend="turbo")


def test_tiny_llama_fast_equals_hf_with_sampling():
    """A second shape (2 layers, 4 heads / 2 kv heads, all-linear LoRA, untied head)."""
    m = add_lora(tiny_model(seed=1, tie_word_embeddings=False), LoraConfig(r=2, dropout=0.0)).eval()
    randomize_lora_b(m)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15]]
    s = Sampling(max_new_tokens=8, temperature=1.0)
    runs = [
        sample(m, prompts, s, 2, 0, generator=torch.Generator().manual_seed(1), backend=b)
        for b in ("fast", "hf")
    ]
    assert torch.equal(runs[0].response_ids, runs[1].response_ids)


def test_compiled_decode_equals_eager_and_hf_without_recompiles(prompts, tok):
    """compile=True (align/models/decode_compile.py, inductor on CPU): greedy tokens equal the eager
    fast path's and `generate`'s, seeded sampling equals eager's, a second prompt length in the
    same cache bucket reuses the graph (no recompile), and the cache length is bucketed."""
    import torch._dynamo.utils as dynamo_utils

    from align.models import decode_compile

    m = add_lora(tiny_model(seed=2), LoraConfig(r=2, dropout=0.0)).eval()
    randomize_lora_b(m)
    short = [p[-k:] for p, k in zip(prompts, (3, 9, 5, 1))]
    greedy = Sampling(max_new_tokens=10, temperature=0)
    dynamo_utils.counters.clear()
    compiled = sample(m, short, greedy, tok.eos_token_id, tok.pad_token_id, backend="fast", compile=True)
    assert decode_compile.failed("cpu") is None
    eager = sample(m, short, greedy, tok.eos_token_id, tok.pad_token_id, backend="fast")
    assert torch.equal(compiled.response_ids, eager.response_ids)
    want, logits = _greedy_reference(m, short, tok, 10)
    for i in range(len(short)):
        row = compiled.response_ids[i, : int(compiled.response_len[i])].tolist()
        _assert_same_greedy(row, want[i], list(logits[i]))
    s = Sampling(max_new_tokens=10, temperature=1.0, top_k=50)

    def seeded(prompts, compile: bool):
        g = torch.Generator().manual_seed(3)
        r = sample(m, prompts, s, -1, tok.pad_token_id, generator=g, backend="fast", compile=compile)
        return r.response_ids

    longer = [p + [7] for p in short]  # Tp 9 -> 10: the same 64-column bucket
    assert torch.equal(seeded(short, True), seeded(short, False))
    assert torch.equal(seeded(longer, True), seeded(longer, False))
    assert dynamo_utils.counters["stats"]["unique_graphs"] == 1  # one graph for every layer and step
    assert decode_compile.cache_length(9 + 10) == 64 and decode_compile.cache_length(65) == 128


@pytest.mark.parametrize("section, recipe", [("online", "online_tiny.yaml"), ("ppo", "ppo_tiny.yaml")])
def test_compile_decode_recipe_key(section, recipe):
    from pathlib import Path

    from align.methods import load_recipe
    from align.util.errors import RecipeError

    path = Path(__file__).parent / recipe
    assert getattr(load_recipe(path), section).compile_decode is False  # off unless asked for
    on = load_recipe(path, [f"{section}.compile_decode=true", f"{section}.backend=fast"])
    assert getattr(on, section).compile_decode is True
    with pytest.raises(RecipeError, match=rf"{section}\.compile_decode .*backend 'hf'"):
        load_recipe(path, [f"{section}.compile_decode=true", f"{section}.backend=hf"])


@pytest.mark.parametrize("backend", ["fast", "hf"])
def test_sampler_log_probs_equal_the_training_forward(model, prompts, tok, backend):
    """sample(logps=True): each token's log-prob and entropy under softmax(logits / T), unfiltered
    by top-k / top-p, as the update's forward computes them (PPO's `old_logps: sampler`)."""
    s = Sampling(max_new_tokens=10, temperature=0.8, top_k=50, top_p=0.95)
    g = torch.Generator().manual_seed(1)
    r = sample(
        model, prompts, s, tok.eos_token_id, tok.pad_token_id, generator=g, backend=backend, logps=True
    )
    ids, att, pos = r.sequences()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=att, position_ids=pos).logits.float()
    tr = r.response_ids.shape[1]
    lp = torch.log_softmax(logits[:, -tr - 1 : -1] / s.temperature, -1)
    want = lp.gather(-1, r.response_ids[..., None])[..., 0]
    ent = -(lp.exp() * lp).sum(-1)
    m = r.response_mask()
    assert r.logp.shape == r.entropy.shape == m.shape and int(m.sum()) > 20
    # fp32 logits from two code paths differ by ~1e-4 (ATOL); a log-prob moves by as much
    torch.testing.assert_close(r.logp[m], want[m], rtol=0, atol=ATOL)
    torch.testing.assert_close(r.entropy[m], ent[m], rtol=0, atol=ATOL)
    assert (want[m] < -0.05).any()  # not all near-certain tokens: the comparison has something to see
    with pytest.raises(ValueError, match="greedy"):
        sample(model, prompts, Sampling(max_new_tokens=2, temperature=0), 2, 2, logps=True)
