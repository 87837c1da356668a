# Two commands do everything on a fresh machine: `make demo` (the main job) and `make test`.
# Both create or refresh the local virtual environment .venv with plain pip.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv data browser demo test lint bench clean
FASHION := /usr/share/datasets/fashion-mnist
DEMO_CKPT := checkpoints/resnet18-w0.25-fashion-mnist
QUIET := $(if $(filter 1 yes true,$(CN_QUIET)),--quiet,)  # make demo CN_QUIET=1: no progress bars (CI logs)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Fashion-MNIST comes from Debian's package dataset-fashion-mnist (installed when missing, as root).
data:
	@if [ ! -f $(FASHION)/t10k-labels-idx1-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing dataset-fashion-mnist"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	  else \
	    echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (or set CROSSNEURON_DATA)"; \
	  fi; \
	fi

# Headless Chromium for the report's browser test (installed when missing, as root; else that test skips).
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium (for the report's browser test)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	      || echo "could not install chromium: the browser test will skip"; \
	  else \
	    echo "chromium is missing and this is not root: the browser test will skip ('sudo apt-get install chromium')"; \
	  fi; \
	fi

# one folder per version: a rerun resumes, and an upgrade never meets a search database it must refuse
DEMO_OUT := runs/demo-$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

demo: venv data
	@test -f $(DEMO_CKPT)/meta.json || $(BIN)/crossneuron train --model resnet18 --width 0.25 \
	  --dataset fashion-mnist --epochs 8 --batch-size 128 --lr 0.05 --out $(DEMO_CKPT) $(QUIET)
	$(BIN)/crossneuron sites --model resnet18 --width 0.25 --input-shape 1,28,28 --num-classes 10
	$(BIN)/crossneuron baseline --checkpoint $(DEMO_CKPT) --patch-size 2
	$(BIN)/crossneuron optimize --checkpoint $(DEMO_CKPT) --out $(DEMO_OUT) --mode uniform-layer,uniform-patch \
	  --screen --optimizer milp --budget flips --engine fast --patch-size 2 --ones 1-2 --eps 0,0.5,1,1.5,2,3 --calib 1000 $(QUIET)
	$(BIN)/crossneuron report $(DEMO_OUT)

lint: venv
	$(BIN)/ruff check src tests benchmarks

test: lint data browser
	$(BIN)/pytest

bench: venv
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
