# Two commands set everything up on a fresh machine:
#   make train   create/reuse .venv with what training needs, then the main job (a VAE on the embedded digits)
#   make test    create/reuse .venv, add the test and DeepSpeed extras, run the test suite
#   make test-fast   the same without the end-to-end tests (a few minutes)
#   make bench   the benchmark of docs/performance.md (dgen bench: loader and training vs plain PyTorch)
#   make figures the pictures in docs/images, redrawn from the run folders of docs/results.md
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV    := $(VENV)/.installed-dev

.PHONY: install install-dev train test test-fast bench figures slurm-deps clean

install: $(STAMP)
install-dev: $(DEV)

# Reinstall when the dependencies change; torch/torchvision come pinned as a CPU-importable pair.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

$(DEV): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEV)

# ARGS="--max-steps 100" etc. are passed through to the trainer. The launcher's settings are spelled
# out (no `accelerate config` needed, no warning about defaults; without a thread count Accelerate
# runs a CPU process on one thread); -q: an error is dgen's one line.
THREADS := $(shell nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 1)
train: $(STAMP)
	$(BIN)/accelerate launch -q --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		--num_cpu_threads_per_process $(THREADS) dgen/train.py --model vae $(ARGS)

# One pytest worker per CPU (at most 4), a test file per worker: most of a test's time is a training process
# starting on one thread, and a file's module-wide fixtures (the Slurm cluster, the adaptation runs) stay in one worker.
XDIST := -n logical --maxprocesses 4 --dist loadfile
test: $(DEV)
	$(BIN)/pytest -q $(XDIST) --durations=15

# The fast loop while editing: everything but the end-to-end tests (pytest -m "not slow").
test-fast: $(DEV)
	$(BIN)/pytest -q $(XDIST) -m "not slow"

# Debian's Slurm and munge, for the tests that run a real Slurm cluster on this machine (root only;
# without them those tests are skipped).
slurm-deps:
	@if command -v slurmctld >/dev/null && command -v munged >/dev/null; then echo "slurm and munge: installed"; \
	else apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; fi

bench: $(STAMP)
	$(BIN)/dgen bench $(ARGS)

# The pictures in docs/images, redrawn from the run folders docs/results.md trains (RUNS=... for others).
RUNS ?= runs/mnist
figures: $(STAMP)
	$(BIN)/python -m dgen.eval.figures --runs $(RUNS) --out docs/images

clean:
	rm -rf $(VENV) bench shards/bench .pytest_cache
