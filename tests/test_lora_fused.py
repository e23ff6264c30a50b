"""The fused LoRA forward (align/models/lora_fused.py) equals PEFT's own, in values and gradients."""

from __future__ import annotations

import pytest
import torch
from model_helpers import nontrivial_lora, random_pairs

from align.models.load import tiny_model
from align.models.logprobs import SequenceScorer


def _logps_and_grads(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    out = SequenceScorer(model, layout="padded")(**batch.model_inputs()).sum
    out.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return out.detach(), grads


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fused_equals_peft(dropout):
    from peft.tuners.lora.layer import Linear

    model = nontrivial_lora(tiny_model(seed=0), dropout=dropout).train()
    layers = [m for m in model.modules() if type(m) is Linear]
    assert layers and all("forward" in vars(m) for m in layers)  # add_lora fused them all
    batch = random_pairs(n=3, vocab=49152)
    torch.manual_seed(5)
    fused = _logps_and_grads(model, batch)
    for m in layers:
        del m.forward  # back to PEFT's class forward
    torch.manual_seed(5)  # the same dropout masks
    plain = _logps_and_grads(model, batch)
    torch.testing.assert_close(fused[0], plain[0], rtol=1e-5, atol=1e-4)
    for name, g in plain[1].items():
        torch.testing.assert_close(fused[1][name], g, rtol=1e-4, atol=1e-6, msg=name)
    assert max(float(g.abs().max()) for g in plain[1].values()) > 1e-3  # gradients that could differ


def test_adapter_off_and_bf16_autocast_paths():
    model = nontrivial_lora(tiny_model(seed=0)).eval()
    batch = random_pairs(n=2, vocab=49152)
    scorer = SequenceScorer(model, layout="padded")
    with torch.no_grad(), model.disable_adapter():
        off = scorer(**batch.model_inputs()).sum
    with torch.no_grad():
        on = scorer(**batch.model_inputs()).sum
    assert (on - off).abs().max() > 1e-3  # the adapter is really switched off, then on
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = scorer(**batch.model_inputs()).sum
    assert torch.isfinite(low).all() and (low - on).abs().max() < 0.5 * on.abs().max()
