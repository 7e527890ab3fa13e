# The two README commands: `make demo` (install + the main job) and `make test` (install + tests).
# They create .venv with the CPU build of torch pinned below; on a GPU machine pass e.g.
# `make demo TORCH_SPEC=torch` to take your platform's default build instead.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
# Datasets: $RETHINK_DATA if set, else the shared offline copies beside this checkout.
export RETHINK_DATA ?= $(firstword $(wildcard ../shared/data) $(HOME)/.cache/rethink/data)
OUT ?= runs

.PHONY: install demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# The main job: the paper's headline experiments with MLP 1x512 on 10,000 real CIFAR-10 images
# (true vs random labels vs the pixel tests, label corruption p = 0 ... 1), then the report.
# --download: where $RETHINK_DATA holds no CIFAR-10 yet (a fresh machine), fetch the official
# cifar-10-python.tar.gz (170 MB, www.cs.toronto.edu) into it and check its md5 first; CIFAR-10
# already there, in any form the loader reads, is used as is, without touching the network.
demo: install
	$(BIN)/rethink reproduce --preset demo --download --out $(OUT)

test: install
	$(BIN)/ruff check src tests scripts
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) runs .pytest_cache
