"""Shared by the torchrun test scripts: collect every rank's result on rank 0 and write them as JSON."""

import json

import torch.distributed as dist


def write_all_ranks(result: dict, out: str) -> None:
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, result)
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump(everyone, f)
    dist.destroy_process_group()
