"""train.compile: each decoder layer compiled in place trains to the same adapter as eager."""

from __future__ import annotations

import torch

from tests.run_helpers import adapter, max_abs_diff, run_tiny


def test_compiled_layers_train_like_eager(tmp_path):
    torch.set_num_threads(1)
    args = ("train.max_steps=2", "report.eval_before=false", "data.max_eval_examples=0")
    eager = run_tiny(tmp_path / "eager", *args)
    compiled = run_tiny(tmp_path / "compiled", *args, "train.compile=true")
    layers = compiled["peft_model"].get_base_model().model.layers
    assert all(getattr(layer, "_compiled_call_impl", None) is not None for layer in layers)
    assert adapter(tmp_path / "compiled").keys() == adapter(tmp_path / "eager").keys()  # names unchanged
    assert max_abs_diff(adapter(tmp_path / "compiled"), adapter(tmp_path / "eager")) < 1e-4
    assert compiled["after"] == {} and eager["steps"] == compiled["steps"] == 2
