# Two commands set everything up on a fresh machine:
#   make train   create/reuse .venv, then the main job: accelerate launch dgen/train.py --model vae
#   make test    create/reuse .venv, install dgen with its dev extras, run the test suite
#   make bench   the benchmark of the README (dgen bench: loader and training vs plain PyTorch)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install train test bench slurm-deps clean

install: $(STAMP)

# Reinstall when the dependencies change; torch/torchvision come pinned as a CPU-importable pair.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# ARGS="--max-steps 100" etc. are passed through to the trainer.
train: $(STAMP)
	$(BIN)/accelerate launch dgen/train.py --model vae $(ARGS)

test: $(STAMP)
	$(BIN)/pytest -q

# Debian's Slurm and munge, for the tests that run a real Slurm cluster on this machine (root only;
# without them those tests are skipped).
slurm-deps:
	@if command -v slurmctld >/dev/null && command -v munged >/dev/null; then echo "slurm and munge: installed"; \
	else apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; fi

bench: $(STAMP)
	$(BIN)/dgen bench $(ARGS)

clean:
	rm -rf $(VENV) bench shards/bench .pytest_cache
