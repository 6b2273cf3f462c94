"""Shared fixtures: real shards of the embedded digits, written once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dgen.data.shard import write_shards
from dgen.data.sources import get_source


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
