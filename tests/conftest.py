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
