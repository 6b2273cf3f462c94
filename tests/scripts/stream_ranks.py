"""Run under torchrun with 2+ processes (gloo): each rank streams the digits shards, trains a tiny
DDP model on every training batch (unequal batch counts would hang DDP), and rank 0 writes what
every rank saw to a JSON file.

    python -m torch.distributed.run --nproc_per_node 2 tests/scripts/stream_ranks.py SHARDS OUT.json WORKERS
"""

import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from dgen.data.stream import eval_loader, train_loader
from tests.scripts.gather import write_all_ranks


def main():
    data, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    train = train_loader(data, batch_size=32, seed=0, num_workers=workers)
    model = DDP(torch.nn.Linear(32 * 32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    train_keys, steps = [], 0
    for batch in train:
        loss = torch.nn.functional.cross_entropy(model(batch["image"].flatten(1)), batch["label"])
        opt.zero_grad()
        loss.backward()  # an all-reduce per step: every rank must reach every step
        opt.step()
        train_keys += batch["key"]
        steps += 1

    test = eval_loader(data, "test", batch_size=50, num_workers=workers)
    eval_keys = [k for b in test for k in b["key"]]

    mine = {"rank": rank, "world": world, "train_len": len(train), "train_steps": steps, "train_keys": train_keys,
            "eval_len": len(test), "eval_keys": eval_keys,
            "weights": [p.detach().sum().item() for p in model.parameters()]}
    write_all_ranks(mine, out)


if __name__ == "__main__":
    main()
