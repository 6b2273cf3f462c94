"""`dgen bench`: how fast dgen reads and trains, next to a plain PyTorch script doing the same work.

    dgen bench                          # loader + training tables, bench/results.json (~5 min on 2 CPU cores)
    dgen bench loader                   # shard stream vs torchvision files, per worker count
    dgen bench train --models dcgan     # training images/s only
    dgen bench loader --data shards/celeba --images 50000    # your own shards

The bench set is digits-m (embedded MNIST-M-style digits on photo textures) at 64x64 RGB, the
size of the CelebA-64 models, sharded on first use twice (`--format npy` and `png`, under
shards/bench/) and written once more as PNG files for the file loader (bench/files/). The
networks and hyper-parameters are the CelebA-64 recipes' (DCGAN nz 100, ngf = ndf = 64; conv VAE,
latent 128), batch 128. Results: a table on stdout and JSON (`--json`) with the machine, the
library versions, every measurement and the ratios. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

BENCH_SIZE, BENCH_CHANNELS = 64, 3


def add_arguments(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", default=f"bench/{what}.json", help=f"where to write the results (default: bench/{what}.json)")
    if what in ("results", "loader"):
        p.add_argument("--data", help="a shard folder to read instead of the bench set (its own format only)")
        p.add_argument("--images", type=int, default=20000, help="images per loader measurement (default: 20000)")
        p.add_argument("--loader-batch-size", type=int, default=64)
        p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="loader worker counts (default: 0 1 2)")
    if what in ("results", "train"):
        p.add_argument("--models", nargs="+", default=["dcgan", "vae"], choices=("dcgan", "lsgan", "wgan-gp", "vae"),
                       help="default: dcgan vae (DCGAN-64, VAE-64); lsgan, wgan-gp (seed 003's MLPs) too")
        p.add_argument("--batch-size", type=int, default=128, help="per step (default: 128, the CelebA-64 recipes')")
        p.add_argument("--image-size", type=int, default=BENCH_SIZE)
        p.add_argument("--window", type=int, help="steps per timing window (default: 4 on CPU, 50 on a GPU)")
        p.add_argument("--windows", type=int, default=5, help="timed windows after one of warm-up (default: 5)")
        p.add_argument("--train-workers", type=int, help="loader workers for end-to-end runs (default: dgen's)")
        p.add_argument("--compile", action="store_true", help="dgen with torch.compile")
        p.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, for MFU on unlisted GPUs")


def bench_set(image_format: str, size: int = BENCH_SIZE) -> Path:
    """shards/bench/digits-m-SIZE-FORMAT, written on first use."""
    from dgen.data.manifest import MANIFEST
    from dgen.data.shard import write_shards
    from dgen.data.sources import get_source

    out = Path("shards/bench") / f"digits-m-{size}-{image_format}"
    if not (out / MANIFEST).exists():
        write_shards(get_source("digits-m")(), out, size=size, channels=BENCH_CHANNELS, image_format=image_format,
                     progress=False)
    return out


def environment() -> dict:
    import accelerate
    import torch
    import torchvision
    import webdataset

    env = {"time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(), "python": platform.python_version(),
           "torch": torch.__version__, "torchvision": torchvision.__version__, "accelerate": accelerate.__version__,
           "webdataset": webdataset.__version__, "cpu": _cpu_model(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        env.update(device=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), gpu_count=torch.cuda.device_count())
    else:
        env["device"] = f"CPU ({os.cpu_count()} cores)"
    return env


def _check(args: argparse.Namespace) -> None:
    from dgen.errors import DgenError

    for name in ("images", "loader_batch_size", "batch_size", "image_size", "window", "windows", "peak_tflops"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            raise DgenError(f"--{name.replace('_', '-')} must be positive, got {value}")
    for name in ("workers", "train_workers"):
        values = getattr(args, name, None)
        if values is not None and min(values if isinstance(values, list) else [values]) < 0:
            raise DgenError(f"--{name.replace('_', '-')} must be >= 0, got {values}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(args: argparse.Namespace, what: str) -> dict:
    """`what`: results (everything), loader or train."""
    from dgen.bench.loader import export_files, loader_rows, print_loader_rows
    from dgen.bench.train import peak_flops, print_train_rows, train_rows
    from dgen.data.manifest import load_manifest

    _check(args)
    env = environment()
    print(f"dgen bench on {env['device']}: torch {env['torch']}, {env['cpu_count']} CPUs, {env['torch_threads']} threads")
    result: dict = {"environment": env}
    size = getattr(args, "image_size", BENCH_SIZE)
    if what != "loader" or not args.data:  # the training half always uses the bench set
        npy = bench_set("npy", size)
        files = export_files(str(npy), "train", Path(f"bench/files/digits-m-{size}"))
    if what in ("results", "loader"):
        if args.data:
            m = load_manifest(args.data)
            sets = {m.image_format: args.data}
            files = export_files(args.data, "train", Path(f"bench/files/{Path(args.data).name}"))
            channels = m.channels
        else:
            sets, channels = {"npy": str(npy), "png": str(bench_set("png", size))}, BENCH_CHANNELS
        print(f"\nloader: {', '.join(sets.values())} vs {files}; batch {args.loader_batch_size}, {args.images} images each")
        rows = loader_rows(sets, files, channels, args.loader_batch_size, args.images, args.workers)
        print_loader_rows(rows)
        result["loader"] = {"shards": sets, "files": str(files), "batch_size": args.loader_batch_size,
                            "images": args.images, "rows": rows}
    if what in ("results", "train"):
        import torch

        cuda = torch.cuda.is_available()
        window = args.window or (50 if cuda else 4)
        peak = args.peak_tflops * 1e12 if args.peak_tflops else (peak_flops(env["device"]) if cuda else None)
        print(f"\ntraining: {', '.join(args.models)} at {args.image_size}x{args.image_size}x{BENCH_CHANNELS}, batch "
              f"{args.batch_size}; median of {args.windows} windows of {window} steps after one of warm-up")
        rows = train_rows(args.models, data=str(npy), files=str(files), image_size=args.image_size,
                          channels=BENCH_CHANNELS, batch_size=args.batch_size, window=window, windows=args.windows,
                          num_workers=args.train_workers, compile=args.compile, peak=peak)
        print_train_rows(rows)
        result["train"] = {"window": window, "windows": args.windows, "peak_flops": peak, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.json}")
    return result
