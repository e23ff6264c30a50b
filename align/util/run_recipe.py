"""Read back the recipe.yaml a run wrote, for the code that builds on a finished run.

Starting from an earlier run (align/models/earlier_run.py), scoring with a reward run
(align/models/reward_model.py) and pushing a run (align/hub/files.py) each read another run's
recipe as plain data, and each must say which file is wrong when it is missing, is no YAML or holds
something other than a mapping. One reader gives the three the same checks; each caller passes its
own error class, so a push still fails as a PushError and a bad start as a RecipeError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from align.util.errors import AlignError

RECIPE_FILE = "recipe.yaml"


def read_run_recipe(
    run_dir: Path, error: type[AlignError], where: str | None = None, tail: str = ""
) -> dict[str, Any]:
    """The recipe mapping in `run_dir`/recipe.yaml, or `error` naming the file and what is wrong.

    `where` (e.g. the recipe key that named the run) leads the message; `tail` ends it (e.g.
    "; nothing was uploaded")."""
    path = run_dir / RECIPE_FILE
    lead = f"{where}: {path}" if where else str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise error(f"{lead}: missing, so {run_dir} is no finished run directory{tail}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{lead}: cannot read it ({type(e).__name__}: {e}){tail}") from None
    try:
        recipe = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise error(f"{lead}: not valid YAML ({' '.join(str(e).split())}){tail}") from None
    if not isinstance(recipe, dict):
        got = "an empty file" if recipe is None else f"a {type(recipe).__name__}"
        raise error(f"{lead}: not a recipe mapping (the top level is {got}, not `key: value` lines){tail}")
    return recipe
