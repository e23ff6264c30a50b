"""Tiny models, non-trivial LoRA adapters and synthetic pair batches for log-prob tests."""

from __future__ import annotations

import torch

from align.data.batches import PairBatch, collate_pairs
from align.models.load import add_lora
from align.recipe import LoraConfig

VOCAB, PAD, EOS = 256, 0, 2


def tiny_causal_lm(config_class: str, seed: int = 0, **overrides):
    """A seeded 2-layer CausalLM of any transformers architecture (e.g. "GraniteConfig")."""
    import transformers

    sizes = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=PAD,
        bos_token_id=1,
        eos_token_id=EOS,
    )
    config = getattr(transformers, config_class)(**{**sizes, **overrides})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def nontrivial_lora(base, dropout: float = 0.0, seed: int = 0):
    """Wrap with a LoRA adapter whose B is random (a fresh adapter, B = 0, changes nothing)."""
    torch.manual_seed(seed)
    model = add_lora(base, LoraConfig(r=4, dropout=dropout))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    return model


def random_pairs(n: int = 4, vocab: int = VOCAB, seed: int = 0) -> PairBatch:
    """n pairs of random token ids with uneven prompt/completion lengths (padding exercised)."""
    g = torch.Generator().manual_seed(seed)

    def ids(k: int) -> list[int]:
        return torch.randint(3, vocab, (k,), generator=g).tolist()

    examples = [
        {
            "index": i,
            "prompt_ids": ids(4 + 2 * i),
            "chosen_ids": ids(3 + i) + [EOS],
            "rejected_ids": ids(2 + 2 * (n - i)) + [EOS],
        }
        for i in range(n)
    ]
    return collate_pairs(examples, PAD)


def naive_logps(model, batch) -> torch.Tensor:
    """Oracle: full logits at every position, log_softmax, gather, mask, sum."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
    lp = logits.log_softmax(-1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    return (lp * batch.loss_mask[:, 1:]).sum(-1)


def lora_grads(model, value: torch.Tensor) -> torch.Tensor:
    """Gradient of value.sum() w.r.t. the trainable (LoRA) parameters, flattened."""
    model.zero_grad()
    value.sum().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


def randomize_lora_b(model, seed: int = 1234, scale: float = 0.2) -> None:
    """Make LoRA B non-zero, deterministically (a fresh adapter leaves policy == reference)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(scale * torch.randn(p.shape, generator=g))


def write_steerable_model(out, low: int = 4096, seed: int = 0) -> str:
    """A tiny llama (SmolLM2's vocabulary and tokenizer files) saved to `out`, whose token ids below
    `low` share one extra embedding direction: a policy can raise their total probability by moving
    its hidden state along one direction, so a reward for them is learnable in a few PPO steps
    (random embeddings alone have no such direction). Returns the directory as a `model:` name."""
    import shutil
    from pathlib import Path

    from align.models.embedded import embedded_model_dir
    from align.models.load import tiny_model

    out = Path(out)
    model = tiny_model(seed=seed, initializer_range=0.1)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        shared = torch.randn(emb.shape[1], generator=torch.Generator().manual_seed(seed + 1))
        emb[:low] += shared / shared.norm()
    model.save_pretrained(out, safe_serialization=True)
    for f in embedded_model_dir().iterdir():
        if f.is_file() and f.name != "config.json" and f.suffix != ".safetensors":
            shutil.copy(f, out / f.name)
    return str(out)
