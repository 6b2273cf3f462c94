"""Randomness that belongs to the training step only.

Training draws from the process-wide generators (torch's CPU and device generators for weights,
noise, dropout and augmentation; the loader's worker seeds come from torch's too). Everything outside
the step (evaluation, fixed-noise samples, FID and its feature classifier, reports, t-SNE) runs inside
`outside_the_step(seed)`: the generators are saved, seeded with `seed` (so that work is itself
reproducible) and restored afterwards. Whether an evaluation ran, or a cache existed, then cannot
change the training trajectory, and a checkpoint's saved RNG state is the one training alone reached.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


@contextlib.contextmanager
def outside_the_step(seed: int, device: torch.device | str = "cpu"):
    device = torch.device(device)
    python, numpy = random.getstate(), np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)


def tick_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of the work done at one tick: fixed by the run's seed, the step and the rank."""
    return (seed * 1_000_003 + step) * 1_009 + rank
