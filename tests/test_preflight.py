"""Preflight: what needs the model's config (not its weights) is checked before anything loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import align.engine.preflight as preflight
import align.models.load
from align.methods import load_recipe
from align.recipe import LoraConfig, ModelConfig
from align.util.errors import ModelError, RecipeError

TINY = Path(__file__).resolve().parent / "tiny.yaml"
EMBEDDED = ModelConfig("smollm2-135m-instruct")
LINEAR = "down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"


@pytest.fixture(autouse=True)
def no_weights(monkeypatch):
    """Preflight may read config.json, never weights: loading a real model here fails the test."""

    def boom(*args, **kwargs):
        raise AssertionError("weights loaded during preflight")

    monkeypatch.setattr(align.models.load, "load_model", boom)
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", boom)
    monkeypatch.setattr(preflight, "_passed", set())  # each test checks afresh


@pytest.mark.parametrize("spec", [ModelConfig("tiny-smollm2"), EMBEDDED], ids=["tiny", "embedded"])
def test_meta_model_has_no_storage(spec):
    model = preflight.meta_model(spec)
    assert all(p.device == torch.device("meta") for p in model.parameters())
    assert ", ".join(preflight.linear_module_names(model)) == LINEAR


@pytest.mark.parametrize(
    ("targets", "reason"),
    [
        (["q_proj", "v_prj"], r"\['v_prj'\]: no module of this model has that name"),
        (["mlp"], "'mlp'\\]: it selects LlamaMLP modules, which LoRA cannot wrap"),
        ("q_proj", "'q_proj': no module of this model matches \\(a string other than all-linear is a regex"),
        ([], r"\[\]: no module of this model matches"),
    ],
)
def test_bad_target_modules_list_the_available_names(targets, reason):
    with pytest.raises(
        RecipeError, match=rf"^lora.target_modules: .*{reason}.*; available linear module names: {LINEAR}$"
    ):
        preflight.check_model(EMBEDDED, LoraConfig(target_modules=targets))


@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj"], ".*\\.(q|k)_proj", ["embed_tokens"]])
def test_good_target_modules_pass(targets):
    preflight.check_model(EMBEDDED, LoraConfig(target_modules=targets))


def test_attention_implementation_this_install_cannot_run():
    from transformers.utils import is_flash_attn_2_available

    spec = ModelConfig("smollm2-135m-instruct", attn_implementation="flash_attention_2")
    if is_flash_attn_2_available():  # a machine with flash-attn: the check must let it through
        preflight.check_model(spec, LoraConfig())
        return
    with pytest.raises(
        RecipeError, match="^model.attn_implementation: 'flash_attention_2' cannot be used here: "
    ):
        preflight.check_model(spec, LoraConfig())
    preflight.check_model(ModelConfig("smollm2-135m-instruct", attn_implementation="eager"), LoraConfig())


def test_model_dir_without_a_config(tmp_path):
    with pytest.raises(ModelError, match=rf"^model.name: could not read the config of model '{tmp_path}': "):
        preflight.check_model(ModelConfig(str(tmp_path)), LoraConfig())


def test_model_dir_that_is_not_a_causal_lm(tmp_path):
    from transformers import ViTConfig

    ViTConfig(num_hidden_layers=1).save_pretrained(tmp_path)
    with pytest.raises(
        ModelError, match=rf"^model.name: could not build model '{tmp_path}' from its config: "
    ):
        preflight.check_model(ModelConfig(str(tmp_path)), LoraConfig())


def test_output_dir(tmp_path):
    preflight.check_output_dir(str(tmp_path))  # existing directory
    preflight.check_output_dir(str(tmp_path / "a" / "b"))  # creatable
    (tmp_path / "f").write_text("")
    with pytest.raises(RecipeError, match="^output_dir: .*/f exists and is not a directory$"):
        preflight.check_output_dir(str(tmp_path / "f"))
    with pytest.raises(RecipeError, match="^output_dir: .*/f is a file, so .*/f/a/b cannot be created$"):
        preflight.check_output_dir(str(tmp_path / "f" / "a" / "b"))
    with pytest.raises(RecipeError, match="^output_dir: .*File name too long"):
        preflight.check_output_dir(str(tmp_path / ("x" * 300)))
    assert not (tmp_path / "a").exists()  # checking creates nothing


def test_a_checked_recipe_is_not_checked_again(monkeypatch):
    r = load_recipe(TINY)
    preflight.check(r)
    monkeypatch.setattr(preflight, "meta_model", lambda spec: pytest.fail("checked twice"))
    preflight.check(r)  # train.run calls it again after the CLI did


def test_recipe_check_covers_output_dir_and_model(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(RecipeError, match="^output_dir:"):
        preflight.check(load_recipe(TINY, [f"output_dir={tmp_path / 'f'}"]))
    with pytest.raises(RecipeError, match="^lora.target_modules:"):
        preflight.check(load_recipe(TINY, [f"output_dir={tmp_path}", "lora.target_modules=[nope]"]))


def test_preflight_leaves_the_global_rng_alone():
    """train.run may call it after seeding: it must not shift what the run draws."""
    r = load_recipe(TINY)
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    preflight.check(r)
    assert torch.equal(state, torch.random.get_rng_state())
