# Two commands do everything on a fresh machine: `make demo` (the main job) and `make test`.
# Both create or refresh the local virtual environment .venv with plain pip.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/crossneuron sites --model resnet18 --input-shape 3,32,32 --num-classes 10

lint: venv
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/pytest

bench: venv
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
