"""Human-readable before/after report for a finished run (the quickstart's last screen)."""

from __future__ import annotations

import torch

from align.models.reference import adapter_off

SHOWN = [
    ("policy/accuracy", "preference accuracy (policy log-prob, chosen > rejected)", "{:.1%}"),
    ("policy/logp_margin", "mean per-token log-prob margin (chosen - rejected)", "{:+.4f}"),
    ("rewards/accuracies", "implicit-reward accuracy (beta * log-ratio)", "{:.1%}"),
    ("rewards/margins", "implicit-reward margin", "{:+.4f}"),
    ("reward_gap", "reward gap (desirable - undesirable, beta * log-ratio)", "{:+.4f}"),
    ("rewards/desirable", "mean reward of desirable completions", "{:+.4f}"),
    ("rewards/undesirable", "mean reward of undesirable completions", "{:+.4f}"),
    ("kl", "KL estimate z0 (mismatched prompt/completion pairs)", "{:.4f}"),
    ("accuracy", "pairwise accuracy (score of chosen > rejected)", "{:.1%}"),
    ("margin", "mean score margin (chosen - rejected)", "{:+.4f}"),
    ("score", "mean reward score of sampled responses", "{:+.4f}"),
    ("kl_ref", "KL to the reference (k1, summed per response)", "{:+.4f}"),
    ("kl_ref/k3", "KL to the reference (k3, summed per response)", "{:.4f}"),
    ("response_length", "mean response length (tokens)", "{:.1f}"),
    ("eos", "responses that ended with EOS", "{:.1%}"),
    ("perplexity", "perplexity (exp of the per-token loss)", "{:.3f}"),
    ("loss", "loss", "{:.4f}"),
]


# The sampling methods (ppo, rloo, grpo) log `accuracy` for prompts with checkable answers
SAMPLED = {"accuracy": "answer accuracy (greedy reply's final answer right)"}


def metrics_table(before: dict[str, float], after: dict[str, float]) -> str:
    lines = [f"{'held-out metric':58s} {'before':>10s} {'after':>10s}"]
    sampled = "eval/score" in after
    for key, label, fmt in SHOWN:
        label = SAMPLED.get(key, label) if sampled else label
        b, a = before.get(f"eval/{key}"), after.get(f"eval/{key}")
        if a is None:
            continue
        lines.append(f"{label:58s} {fmt.format(b) if b is not None else '-':>10s} {fmt.format(a):>10s}")
    return "\n".join(lines)


@torch.no_grad()
def generate(peft_model, tokenizer, prompt: str, max_new_tokens: int, adapter: bool) -> str:
    """Greedy completion of a single user turn, with the adapter on (after) or off (before)."""
    msgs = [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None):
        enc = tokenizer.apply_chat_template(
            msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
    else:
        enc = tokenizer(prompt, return_tensors="pt")
    device = next(peft_model.parameters()).device
    enc = {k: v.to(device) for k, v in enc.items()}
    was_training = peft_model.training
    peft_model.eval()
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    if adapter:
        out = peft_model.generate(**enc, **kwargs)
    else:
        with adapter_off(peft_model):
            out = peft_model.generate(**enc, **kwargs)
    peft_model.train(was_training)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
