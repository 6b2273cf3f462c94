"""The training stream's global sample order: a pure function of (seed, the split's shard sample counts, the
global batch size). Global batch K holds the same samples on any number of processes and loader workers.

    order = GlobalOrder(counts=[1000] * 60, seed=0, global_batch=128)
    shard, position, lane = order.batch(7)          # global batch 7, lane-major: arrays of 128
    shard, position, lane = order.part(7, rank=1, world_size=2)     # rank 1's 64 of them

A pass shows every sample once. Pass p deals the shards, shuffled by (seed, p), round-robin to `lanes` lanes
(16, or fewer when there are fewer shards); a lane reads its shards in that order, each shard's samples in a
permutation drawn from (seed, p, shard). The pass's sequence merges the lanes in proportion to their sizes
(sample i of a lane of n samples sits at (i + 0.5) / n), so each global batch holds about G / lanes samples of
every lane: samples of up to `lanes` shards at once. A pass has N // G global batches; its last N % G samples
(a different few each pass) are left out, so no sample repeats within a pass. Global batch K is batch K % per_pass
of pass K // per_pass, whatever the epoch length a loader uses.

Inside a global batch the samples are ordered by lane, and rank r takes the r-th slice of G / world_size: a rank
needs the current shards of about lanes / world_size lanes, and a loader worker those of its own lanes (lane %
workers), so each shard is read by about one worker of one rank per pass, from start to end.
"""

from __future__ import annotations

import hashlib

import numpy as np

from dgen.errors import DataError

LANES = 16


def _rng(*parts) -> np.random.RandomState:
    """A generator fixed by `parts` for good: NumPy's legacy RandomState stream never changes between versions."""
    digest = hashlib.sha256("/".join(map(str, ("dgen-order", *parts))).encode()).digest()
    return np.random.RandomState(np.frombuffer(digest[:16], dtype=np.uint32))


class GlobalOrder:
    def __init__(self, counts: list[int], seed: int, global_batch: int, lanes: int = LANES):
        self.counts, self.seed, self.global_batch = list(counts), seed, global_batch
        self.total = sum(self.counts)
        if global_batch < 1 or lanes < 1:
            raise DataError(f"global batch and lanes must be >= 1, got {global_batch} and {lanes}")
        if self.total < global_batch:
            raise DataError(f"the split holds {self.total} samples, fewer than one global batch of {global_batch} "
                            "(batch size x processes): use a smaller --batch-size")
        self.per_pass = self.total // global_batch
        self.lanes = min(lanes, len(self.counts))
        self._passes: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _pass(self, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(shard, position in shard, lane) of every sample of pass p, in the pass's order."""
        if p not in self._passes:
            shards = _rng(self.seed, p).permutation(len(self.counts))
            parts = []
            for lane in range(self.lanes):
                mine = shards[lane::self.lanes]
                shard = np.concatenate([np.full(self.counts[s], s, dtype=np.int64) for s in mine])
                pos = np.concatenate([_rng(self.seed, p, s).permutation(self.counts[s]) for s in mine])
                where = (np.arange(len(shard)) + 0.5) / len(shard)
                parts.append((shard, pos, np.full(len(shard), lane, dtype=np.int64), where))
            shard, pos, lane, where = (np.concatenate(x) for x in zip(*parts))
            merged = np.lexsort((lane, where))  # by place in its lane, ties by lane
            self._passes = {q: v for q, v in self._passes.items() if q == p - 1}  # the pass before, for a boundary
            self._passes[p] = (shard[merged], pos[merged], lane[merged])
        return self._passes[p]

    def batch(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(shard, position, lane) of the samples of global batch k, ordered by lane."""
        p, i = divmod(k, self.per_pass)
        shard, pos, lane = (a[i * self.global_batch:(i + 1) * self.global_batch] for a in self._pass(p))
        by_lane = np.argsort(lane, kind="stable")
        return shard[by_lane], pos[by_lane], lane[by_lane]

    def part(self, k: int, rank: int, world_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rank `rank`'s slice of global batch k (global batch / world_size samples)."""
        if self.global_batch % world_size:
            raise DataError(f"a global batch of {self.global_batch} does not split over {world_size} processes")
        size = self.global_batch // world_size
        return tuple(a[rank * size:(rank + 1) * size] for a in self.batch(k))
