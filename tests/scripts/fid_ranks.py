"""Run under torchrun with 2 processes (gloo): each rank feeds its part of fixed real and fake "images" to
dgen.eval.fid.FID (torchmetrics syncs the states in score()), and rank 0 writes what every rank got to a JSON file.

    python -m torch.distributed.run --nproc_per_node 2 tests/scripts/fid_ranks.py OUT.json

Cases: uneven splits with kid_max above the totals (KID sees every row), with kid_max below them (KID's
samples are subsampled and merged), and rank 1 given no images at all (it must still join the collectives).
"""

import sys

import torch
import torch.distributed as dist
from torch import nn

from dgen.eval.fid import FID
from tests.scripts.gather import write_all_ranks

N_REAL, N_FAKE, CUT_REAL, CUT_FAKE = 301, 257, 120, 200  # rank 0 gets rows [0, CUT), rank 1 the rest
SIDE = 4  # images [1, 4, 4]: features are the 16 pixels


class Pixels(nn.Module):
    """A feature extractor that returns the pixels, so the features are known exactly."""

    feature_dim = SIDE * SIDE

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    scale, shift = torch.linspace(0.5, 2.0, SIDE * SIDE), torch.arange(SIDE * SIDE) / 4
    real = torch.randn(N_REAL, SIDE * SIDE, generator=g) * scale + shift
    fake = torch.randn(N_FAKE, SIDE * SIDE, generator=g) * scale.flip(0) + shift + 0.3
    return real.reshape(-1, 1, SIDE, SIDE), fake.reshape(-1, 1, SIDE, SIDE)


def score(real: torch.Tensor, fake: torch.Tensor, kid_max: int) -> dict:
    """FID/KID of these images (several batches, as they come; none on an empty rank) and KID's samples."""
    fid = FID(Pixels(), kid_max=kid_max, kid_subset_size=200)
    fid.real_stats(real.split(50))
    fid.fake_stats(fake.split(64))
    out = fid.score()
    with fid.kid.sync_context():  # what compute() saw: the samples merged across ranks
        out["real_sample"], out["fake_sample"] = fid.kid.sample(True).tolist(), fid.kid.sample(False).tolist()
    return out


def main():
    out = sys.argv[1]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world == 2
    real, fake = images()
    mine = (real[:CUT_REAL], fake[:CUT_FAKE]) if rank == 0 else (real[CUT_REAL:], fake[CUT_FAKE:])
    everything = (real, fake) if rank == 0 else (real[:0], fake[:0])
    result = {"rank": rank, "world": world,
              "all_rows": score(*mine, kid_max=1000),
              "subsampled": score(*mine, kid_max=100),
              "one_empty": score(*everything, kid_max=100)}
    write_all_ranks(result, out)


if __name__ == "__main__":
    main()
