"""The training stream alone, in images/s: what the loader delivers with no step to feed (uint8 batches).

    python -m dgen.bench.stream shards/bench/digits-m-64-npy --workers 2 --images 40000
    python -m dgen.bench.stream http://HOST:PORT/bench/digits-m-64-npy --workers 0

Run it at two commits, in turn, to compare loaders (docs/performance.md).
"""

from __future__ import annotations

import argparse
import time

from dgen.data.stream import train_loader


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m dgen.bench.stream", description=__doc__.splitlines()[0])
    p.add_argument("location", help="a shard folder, URL or manifest")
    p.add_argument("--workers", type=int, default=2, help="loader worker processes (default: 2)")
    p.add_argument("--images", type=int, default=40000, help="images to time, after the first batch (default: 40000)")
    p.add_argument("--batch-size", type=int, default=128, help="(default: 128)")
    args = p.parse_args(argv)
    loader = train_loader(args.location, "train", batch_size=args.batch_size, num_workers=args.workers, uint8=True,
                          epoch_batches=args.images // args.batch_size + 2, rank=0, world_size=1)
    t0 = time.perf_counter()
    batches = iter(loader)
    next(batches)
    t1, n = time.perf_counter(), 0
    while n < args.images:
        n += len(next(batches)["image"])
    t2 = time.perf_counter()
    loader.close()
    print(f"{args.location}: {args.workers} workers, first batch {t1 - t0:.2f} s, {n / (t2 - t1):,.0f} images/s")


if __name__ == "__main__":
    main()
