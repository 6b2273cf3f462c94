"""Shared fixtures: real shards of the embedded digits, written once per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from dgen.data.shard import write_shards
from dgen.data.sources import get_source


# Inception FID is on by default where torchvision's weights are in torch's hub cache: the tests must not depend
# on what a machine's cache holds (or spend minutes on Inception where it holds them), so they start with an
# empty one and no downloads; tests/test_inception.py places weights where it needs them.
os.environ["TORCH_HOME"] = str(Path(os.environ.get("TMPDIR", "/tmp")) / f"dgen-tests-torch-home-{os.getpid()}")
os.environ["DGEN_INCEPTION_DOWNLOAD"] = "0"

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # `make test` runs a worker per CPU: split the CPUs between them
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


# `make test` deals the tests out to its workers one by one (--dist loadgroup), which keeps the workers equally
# busy; the files whose module-wide fixtures cost a lot (a Slurm cluster, trained runs, sharded data) keep all
# their tests on one worker, so those fixtures are built once.
ONE_WORKER = {"test_adapt", "test_eval_images", "test_eval_outputs", "test_fid", "test_inception", "test_mnist_real",
              "test_remote", "test_slurm"}


FIRST = ("test_slurm", "test_adapt")  # the longest groups start first (the Slurm jobs' waits overlap the rest)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
    for item in items:
        name = item.module.__name__.rsplit(".", 1)[-1]
        if name in ONE_WORKER:
            item.add_marker(pytest.mark.xdist_group(name))
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1], len(FIRST)))  # stable


@pytest.fixture(scope="session")
def digits_shards(tmp_path_factory) -> Path:
    """scikit-learn digits at 32 px: train 1437 samples in 5 shards, test 360 in 2 (300 per shard)."""
    out = tmp_path_factory.mktemp("shards") / "digits"
    write_shards(get_source("digits")(), out, size=32, channels=1, per_shard=300, progress=False)
    return out


@pytest.fixture
def digits_copy(digits_shards, tmp_path) -> Path:
    """A private copy the test may damage."""
    return Path(shutil.copytree(digits_shards, tmp_path / "digits"))
