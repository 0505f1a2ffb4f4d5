# Two entry points (see README): `make run` and `make test`. Both create .venv/ on first use.
# `make docs` builds the docs site into site/ (git-ignored) with --strict.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test lint docs clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the builds that lie on this machine's disk
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev,docs]'
	touch $@

setup: $(BIN)/.installed

run: setup
	$(BIN)/python run.py $(ARGS)

test: setup
	$(BIN)/ruff check claid tests experiments examples run.py
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: setup
	$(BIN)/ruff check claid tests experiments examples run.py

clean:
	rm -rf $(VENV) site
