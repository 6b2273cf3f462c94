# Two commands set everything up on a fresh machine:
#   make test    create/reuse .venv, install dgen with its dev extras, run the test suite
#   make bench   the loader benchmark of the README (shard stream vs torchvision files)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test bench clean

install: $(STAMP)

# Reinstall when the dependencies change; torch/torchvision come pinned as a CPU-importable pair.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/dgen bench loader

clean:
	rm -rf $(VENV) bench .pytest_cache
