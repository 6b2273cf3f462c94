"""Run under torchrun with 2 processes (gloo): each rank feeds its part of one fixed feature matrix to
FeatureStats, merges across ranks, and rank 0 writes what every rank ended up with to a JSON file.

    python -m torch.distributed.run --nproc_per_node 2 tests/scripts/fid_ranks.py OUT.json

Cases: an uneven split with kid_max below the total (the KID rows are subsampled), kid_max above the
total (all rows kept), and rank 1 seeing no features at all (it must still join the collectives).
"""

import sys

import torch
import torch.distributed as dist

from dgen.eval.fid import FeatureStats
from tests.scripts.gather import write_all_ranks

N, D, CUT = 301, 16, 120  # rank 0 gets rows [0, CUT), rank 1 the rest


def matrix() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, D, generator=g) * torch.linspace(0.5, 2.0, D) + torch.arange(D)


def run(rows: torch.Tensor, kid_max: int) -> dict:
    stats = FeatureStats(kid_max=kid_max)
    for chunk in rows.split(50) if len(rows) else ():  # several updates, as batches come; none on an empty rank
        stats.update(chunk)
    stats.merge_across_ranks()
    mu, cov = stats.mean_cov()
    return {"count": stats.count, "mu": mu.tolist(), "cov": cov.tolist(), "rows": stats.rows.tolist()}


def main():
    out = sys.argv[1]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world == 2
    x = matrix()
    mine = x[:CUT] if rank == 0 else x[CUT:]
    result = {"rank": rank, "world": world,
              "subsampled": run(mine, kid_max=100),
              "all_rows": run(mine, kid_max=1000),
              "one_empty": run(x if rank == 0 else x[:0], kid_max=1000)}
    write_all_ranks(result, out)


if __name__ == "__main__":
    main()
