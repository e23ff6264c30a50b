"""Recipes: every shipped YAML validates; unknown keys, wrong types and bad method options fail early."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

import align.models.load
import align.train
from align.cli import main
from align.methods import METHODS, load_recipe
from align.recipe import Recipe, dump_recipe
from align.util.errors import RecipeError

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
TINY = ROOT / "tests" / "tiny.yaml"
ACCELERATE = RECIPES / "accelerate"


def _yaml_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml"))


RECIPE_FILES = [p for p in _yaml_files(RECIPES) if ACCELERATE not in p.parents]
ACCELERATE_FILES = _yaml_files(ACCELERATE) if ACCELERATE.is_dir() else []


def test_recipes_exist():
    names = {p.relative_to(RECIPES).as_posix() for p in RECIPE_FILES}
    assert {"smollm2/dpo.yaml", "smollm2/ipo.yaml", "smollm2/cdpo.yaml"} <= names


@pytest.mark.parametrize("path", [*RECIPE_FILES, TINY], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_recipe_loads_and_validates(path, tmp_path):
    r = load_recipe(path)
    assert isinstance(r, Recipe)
    assert r.method in METHODS
    assert (r.data.card is None) != (r.data.path is None)
    # the dumped recipe (what a run directory stores as recipe.yaml) loads back to the same recipe
    dumped = tmp_path / "recipe.yaml"
    dumped.write_text(dump_recipe(r))
    assert load_recipe(dumped) == r


@pytest.mark.parametrize("path", ACCELERATE_FILES, ids=lambda p: p.name)
def test_accelerate_configs_are_mappings(path):
    cfg = yaml.safe_load(path.read_text())
    assert isinstance(cfg, dict) and "distributed_type" in cfg


def test_shipped_method_recipes_match_their_names():
    for name in ("dpo", "ipo", "cdpo", "simpo", "sft"):
        r = load_recipe(RECIPES / "smollm2" / f"{name}.yaml")
        assert r.method == name
    assert load_recipe(RECIPES / "smollm2" / "cdpo.yaml").label_smoothing > 0


# -- unknown keys ------------------------------------------------------------------------------


def test_unknown_nested_key_suggests(tmp_path):
    with pytest.raises(RecipeError, match=r"optim.lrr: unknown key \(did you mean 'lr'\?\)"):
        load_recipe(TINY, ["optim.lrr=1e-5"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("  lr: 1.0e-3", "  lrr: 1.0e-3"))
    with pytest.raises(RecipeError) as err:
        load_recipe(bad)
    assert str(bad) in str(err.value) and "did you mean 'lr'" in str(err.value)


def test_unknown_top_level_key_suggests(tmp_path):
    with pytest.raises(RecipeError, match=r": betta: unknown key \(did you mean 'beta'\?\)"):
        load_recipe(TINY, ["betta=0.2"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text() + "\nlearning_rate: 1.0e-5\n")
    with pytest.raises(RecipeError, match="learning_rate: unknown key"):
        load_recipe(bad)


def test_unknown_key_without_close_match_lists_known_keys():
    with pytest.raises(
        RecipeError, match=r"lora.zzz: unknown key \(known keys: alpha, dropout, r, target_modules\)"
    ):
        load_recipe(TINY, ["lora.zzz=1"])


# -- overrides and types -----------------------------------------------------------------------


def test_overrides_apply_with_types():
    r = load_recipe(TINY, ["beta=0.2", "optim.lr=1e-5", "train.max_steps=3", "log.trackers=[tensorboard]"])
    assert r.beta == 0.2 and type(r.beta) is float
    assert yaml.safe_load("1e-5") == "1e-5"  # YAML 1.1: a string...
    assert r.optim.lr == 1e-5 and type(r.optim.lr) is float  # ...that the float field still accepts
    assert r.train.max_steps == 3 and type(r.train.max_steps) is int
    assert r.log.trackers == ["tensorboard"]
    # untouched values come from the file
    assert r.model.name == "tiny-smollm2" and r.lora.r == 4
    # an int for a float field becomes a float; `key=` means None
    r = load_recipe(TINY, ["beta=1", "train.max_steps="])
    assert type(r.beta) is float and r.beta == 1.0 and r.train.max_steps is None


def test_float_written_as_1e_minus_5_in_yaml_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(TINY.read_text().replace("lr: 1.0e-3", "lr: 1e-5"))
    r = load_recipe(p)
    assert r.optim.lr == 1e-5 and type(r.optim.lr) is float


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("beta=abc", "beta"),
        ("optim.lr=fast", "optim.lr"),
        ("train.per_device_batch_size=abc", "train.per_device_batch_size"),
        ("train.per_device_batch_size=2.5", "train.per_device_batch_size"),
        ("train.per_device_batch_size=true", "train.per_device_batch_size"),
        ("train.max_steps=1.5", "train.max_steps"),
        ("train.progress=maybe", "train.progress"),
        ("optim.adam_betas=0.9", "optim.adam_betas"),
        ("optim.scheduler=cosinus", "optim.scheduler"),
        ("model.dtype=fp32", "model.dtype"),
        ("model=tiny-smollm2", "model"),
        ("data.columns.prompt=3", "data.columns.prompt"),
        ("data.on_bad_record=ignore", "data.on_bad_record"),
        ("seed=0.5", "seed"),
    ],
)
def test_wrong_types_name_the_key(override, key):
    with pytest.raises(RecipeError) as err:
        load_recipe(TINY, [override])
    assert f"{key}:" in str(err.value)
    assert str(TINY) in str(err.value)


@pytest.mark.parametrize("override", ["beta=nan", "optim.lr=.nan", "label_smoothing=NaN"])
def test_nan_numbers_rejected(override):
    key = override.split("=")[0]
    with pytest.raises(RecipeError, match=f"{key}: expected a number, got"):
        load_recipe(TINY, [override])


def test_override_syntax_errors():
    with pytest.raises(RecipeError, match="key=value"):
        load_recipe(TINY, ["beta"])
    with pytest.raises(RecipeError, match="'beta' is not a section"):
        load_recipe(TINY, ["beta.x=1"])


def test_bad_files(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- method: dpo\n")
    with pytest.raises(RecipeError, match="mapping at the top level"):
        load_recipe(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("method: [dpo\n")
    with pytest.raises(RecipeError, match="invalid YAML"):
        load_recipe(tmp_path / "broken.yaml")


# -- methods and cross-field checks ------------------------------------------------------------


def test_unknown_method_suggests():
    with pytest.raises(RecipeError, match=r"unknown method 'dpoo' \(did you mean 'dpo'\?\)"):
        load_recipe(TINY, ["method=dpoo"])


def _no_model(*args, **kwargs):
    raise AssertionError("a model/tokenizer was loaded before the recipe was validated")


def test_cli_rejects_unknown_method_before_any_model_loads(monkeypatch, capsys):
    for module in (align.models.load, align.train):
        monkeypatch.setattr(module, "load_model", _no_model)
        monkeypatch.setattr(module, "load_tokenizer", _no_model)
    monkeypatch.setattr(align.train, "run", _no_model)
    code = main(["train", str(TINY), "method=dpoo", "beta=0.2"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("align: error:")]
    assert lines == [f"align: error: {TINY}: method: unknown method 'dpoo' (did you mean 'dpo'?)"]
    assert "Traceback" not in err


def test_cli_rejects_unknown_key_with_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(align.train, "run", _no_model)
    assert main(["train", str(TINY), "optim.lrr=1e-5"]) == 2
    assert "did you mean 'lr'" in capsys.readouterr().err


def test_label_smoothing_only_for_dpo():
    with pytest.raises(RecipeError, match="label_smoothing applies to dpo/cdpo only, not 'ipo'"):
        load_recipe(TINY, ["method=ipo", "label_smoothing=0.1"])
    assert load_recipe(TINY, ["method=dpo", "label_smoothing=0.1"]).label_smoothing == 0.1
    with pytest.raises(RecipeError, match=r"label_smoothing: 0.5 is out of range \[0, 0.5\)"):
        load_recipe(TINY, ["label_smoothing=0.5"])


def test_cdpo_needs_label_smoothing():
    with pytest.raises(RecipeError, match="'cdpo' needs label_smoothing > 0"):
        load_recipe(TINY, ["method=cdpo"])
    assert load_recipe(TINY, ["method=cdpo", "label_smoothing=0.1"]).method == "cdpo"


def test_ipo_normalization_only_for_ipo():
    with pytest.raises(RecipeError, match="ipo_normalization applies to ipo only"):
        load_recipe(TINY, ["ipo_normalization=sum"])
    assert load_recipe(TINY, ["method=ipo", "ipo_normalization=sum"]).ipo_normalization == "sum"


@pytest.mark.parametrize(
    ("recipe", "method"),
    [
        (TINY, "kto"),
        (TINY, "reward"),
        (ROOT / "tests" / "ppo_tiny.yaml", "ppo"),
        (ROOT / "tests" / "online_tiny.yaml", "rloo"),
        (ROOT / "tests" / "online_tiny.yaml", "grpo"),
    ],
)
def test_ipo_normalization_is_refused_by_the_methods_that_would_ignore_it(recipe, method):
    assert load_recipe(recipe, [f"method={method}"]).method == method  # the recipe is good without it
    with pytest.raises(RecipeError, match=rf"ipo_normalization applies to ipo only, not '{method}'"):
        load_recipe(recipe, [f"method={method}", "ipo_normalization=sum"])


def test_data_card_and_path_both_or_neither_rejected():
    with pytest.raises(RecipeError, match="set exactly one of data.card or data.path"):
        load_recipe(TINY, ["data.path=prefs.jsonl"])
    with pytest.raises(RecipeError, match="set exactly one of data.card or data.path"):
        load_recipe(TINY, ["data.card="])
    r = load_recipe(TINY, ["data.card=", "data.path=prefs.jsonl"])
    assert r.data.card is None and r.data.path == "prefs.jsonl"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["beta=0"], r"beta: must be > 0 for 'dpo'"),
        (["beta=-1"], r"beta: -1.0 is out of range \[0, 1000\]"),
        (["data.max_prompt_length=128"], r"data.max_prompt_length: 128 must be < data.max_length \(128\)"),
        (["train.gradient_accumulation_steps=0"], r"train.gradient_accumulation_steps: 0 is out of range"),
        (["log.trackers=[mlflow]"], r"log.trackers\[0\]: 'mlflow' is not one of \['tensorboard', 'wandb'\]"),
        (["hub.push=true"], r"hub.repo_id: hub.push is true but no repo id is given"),
        (["hub.repo_id=just-a-name"], r"hub.repo_id: 'just-a-name' is not a repo id like namespace/name"),
        (["hub.repo_id=/tmp/x/y"], r"hub.repo_id: '/tmp/x/y' is not a repo id"),
        (
            ["hub.repo_id=a/b", "hub.endpoint=localhost:8080"],
            r"hub.endpoint: 'localhost:8080' is not an http",
        ),
    ],
)
def test_cross_field_checks(overrides, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe(TINY, overrides)


def test_hub_section_loads():
    r = load_recipe(TINY, ["hub.push=true", "hub.repo_id=alice/tiny", "hub.private=true", "hub.revision=dev"])
    assert (r.hub.push, r.hub.repo_id, r.hub.private, r.hub.revision, r.hub.endpoint) == (
        True,
        "alice/tiny",
        True,
        "dev",
        None,
    )
    assert load_recipe(TINY).hub.push is False


def test_defaults_alone_need_a_data_source():
    with pytest.raises(RecipeError, match="set exactly one of data.card or data.path"):
        load_recipe(None)
    r = load_recipe(None, ["data.card=align_prefs_v1"])
    assert r.method == "dpo" and math.isclose(r.beta, 0.1)
