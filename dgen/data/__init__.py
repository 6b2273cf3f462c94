"""Datasets: source readers, the shard writer, `dgen verify`, and the streaming loader.

    dgen shard digits --out shards/digits          # pack a source into WebDataset shards
    dgen verify shards/digits                      # check shards against manifest.json

    from dgen.data import train_loader, eval_loader
    loader = train_loader("shards/digits", batch_size=64, num_workers=2)
"""

from dgen.data.manifest import Manifest, load_manifest
from dgen.data.stream import eval_loader, train_loader

__all__ = ["Manifest", "load_manifest", "train_loader", "eval_loader"]
