"""Real multi-process runs (torchrun, gloo on CPU): the stream's guarantees across ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves it out

SCRIPT = Path(__file__).parent / "scripts" / "stream_ranks.py"
TRAIN, TEST = 1437, 360


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, *args, timeout: int = 180) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.parametrize("workers", [0, 2])
def test_two_ranks(digits_shards, tmp_path, workers):
    out = tmp_path / "ranks.json"
    torchrun(2, SCRIPT, digits_shards, out, workers)
    r0, r1 = json.loads(out.read_text())
    assert r0["world"] == r1["world"] == 2
    # training: the same number of batches on both ranks (DDP stepped through all of them): one pass is
    # TRAIN // global batch whole global batches (the last TRAIN % 64 samples open the next pass) ...
    expected = TRAIN // (32 * 2)
    assert r0["train_len"] == r1["train_len"] == r0["train_steps"] == r1["train_steps"] == expected
    assert r0["weights"] == r1["weights"]  # gradients were all-reduced every step
    # ... and different samples: each rank takes its own slice of every global batch
    # of one pass, so no sample twice within it and none on both ranks
    seen = r0["train_keys"] + r1["train_keys"]
    assert len(seen) == len(set(seen)) == expected * 64
    # evaluation: every test sample exactly once across ranks (and workers)
    assert r0["eval_len"] + r1["eval_len"] >= 2
    keys = r0["eval_keys"] + r1["eval_keys"]
    assert len(keys) == TEST and len(set(keys)) == TEST
    assert r0["eval_keys"] and r1["eval_keys"]
