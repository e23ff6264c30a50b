"""A finished run's recipe.yaml, read back by the code that builds on the run.

The one reader (align/util/run_recipe.py) names the file for each way it can be wrong (missing, not
YAML, not a mapping) and raises the error class its caller gives; the three callers (a start from
an earlier run, a reward run, a push) keep their own error types. No model is trained or loaded:
the run directories are written by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.hub.card import ADAPTER_FILES
from align.hub.files import read_run
from align.models.adapters import HEAD_FILE
from align.models.earlier_run import resolve_chain
from align.models.reward_model import read_reward_run
from align.util.errors import AlignError, PushError, RecipeError
from align.util.run_recipe import read_run_recipe

BAD = {
    "bad-yaml": ("method: [dpo\n", "not valid YAML"),
    "a-list": ("- method: dpo\n", "not a recipe mapping (the top level is a list"),
    "empty": ("", "not a recipe mapping (the top level is an empty file"),
}


class _OwnError(AlignError):
    """Stands for a caller's own error class."""


def _run(tmp_path: Path, recipe: str | None, *files: str) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    if recipe is not None:
        (run / "recipe.yaml").write_text(recipe)
    for name in files:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("{}")
    return run


def test_a_good_recipe_reads_as_its_mapping(tmp_path):
    run = _run(tmp_path, "method: reward\nmodel:\n  name: tiny-smollm2\n")
    assert read_run_recipe(run, _OwnError) == {"method": "reward", "model": {"name": "tiny-smollm2"}}


def test_a_missing_recipe_names_the_file_in_the_callers_error(tmp_path):
    run = _run(tmp_path, None)
    with pytest.raises(_OwnError) as e:
        read_run_recipe(run, _OwnError, "ppo.reward_run", tail="; nothing happened")
    assert str(e.value) == (
        f"ppo.reward_run: {run / 'recipe.yaml'}: missing, so {run} is no finished run directory; "
        "nothing happened"
    )


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_recipe_names_the_file_and_what_is_wrong(tmp_path, case):
    text, reason = BAD[case]
    run = _run(tmp_path, text)
    with pytest.raises(_OwnError) as e:
        read_run_recipe(run, _OwnError)
    assert str(e.value).startswith(f"{run / 'recipe.yaml'}: {reason}")


def test_a_yaml_error_says_where_in_the_file(tmp_path):
    run = _run(tmp_path, "method: dpo\nbeta: [0.1\n")
    with pytest.raises(_OwnError, match=r"not valid YAML \(.*line \d+, column \d+"):
        read_run_recipe(run, _OwnError)


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_reward_run_with_a_bad_recipe_is_a_recipe_error(tmp_path, case):
    text, reason = BAD[case]
    run = _run(tmp_path, text, "adapter/adapter_config.json", f"adapter/{HEAD_FILE}")
    with pytest.raises(RecipeError) as e:
        read_reward_run(run, "r.yaml")
    assert str(e.value).startswith(f"r.yaml: ppo.reward_run: {run / 'recipe.yaml'}: {reason}")


def test_a_reward_run_without_a_recipe_says_it_is_missing(tmp_path):
    run = _run(tmp_path, None, "adapter/adapter_config.json", f"adapter/{HEAD_FILE}")
    with pytest.raises(
        RecipeError, match=r"online\.reward_run: .* is not a finished reward run \(missing recipe\.yaml\)"
    ):
        read_reward_run(run, "r.yaml", "online.reward_run")


def test_a_reward_run_with_a_good_recipe_still_reads(tmp_path):
    run = _run(tmp_path, "method: reward\n", "adapter/adapter_config.json", f"adapter/{HEAD_FILE}")
    assert read_reward_run(run, "r.yaml") == (run / "adapter", {"method": "reward"})


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_start_from_a_run_with_a_bad_recipe_is_a_recipe_error(tmp_path, case):
    text, reason = BAD[case]
    run = _run(tmp_path, text)
    with pytest.raises(RecipeError) as e:
        resolve_chain("tiny-smollm2", None, 0, str(run), "r.yaml")
    assert str(e.value).startswith(f"r.yaml: model.adapter: {run / 'recipe.yaml'}: {reason}")


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_push_of_a_run_with_a_bad_recipe_is_a_push_error(tmp_path, case):
    text, reason = BAD[case]
    run = _run(tmp_path, text, "manifest.json", "summary.json", *(f"adapter/{n}" for n in ADAPTER_FILES))
    with pytest.raises(PushError) as e:
        read_run(run)
    message = str(e.value)
    assert message.startswith(f"{run / 'recipe.yaml'}: {reason}")
    assert message.endswith("; nothing was uploaded")


def test_a_push_of_a_run_with_a_good_recipe_reads_its_records(tmp_path):
    run = _run(tmp_path, "method: dpo\n", "summary.json", *(f"adapter/{n}" for n in ADAPTER_FILES))
    (run / "manifest.json").write_text(json.dumps({"total_steps": 2}))
    (run / "summary.json").write_text(json.dumps({"steps": 2}))
    record = read_run(run)
    assert record.recipe == {"method": "dpo"} and record.manifest == {"total_steps": 2}
