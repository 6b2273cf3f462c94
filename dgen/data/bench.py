"""`dgen bench loader`: images/s of the shard stream against torchvision reading the same images
from individual files, side by side, with 0, 1 and 2 loader workers.

    dgen bench loader                                   # digits (sharded on first use)
    dgen bench loader --data shards/celeba --images 50000 --batch-size 128

Both readers decode PNGs into float tensors in [-1, 1] with the same batch size and shuffle; the
files are the shard's own images written once to an ImageFolder tree (`--files`, default
bench/files/DATASET), so both read identical bytes from the page cache. Timing starts after the
first batch (worker start-up is reported separately) and runs until `--images` have been read.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import torch
import webdataset as wds
from torch.utils.data import DataLoader

from dgen.data.manifest import MANIFEST, load_manifest, shard_url
from dgen.data.stream import train_loader


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="shards/digits", help="shard folder (default: shards/digits, created if missing)")
    p.add_argument("--split", default="train")
    p.add_argument("--files", help="where to write the same images as individual files (default: bench/files/DATASET)")
    p.add_argument("--images", type=int, default=20000, help="images read per measurement (default: 20000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--json", default="bench/loader.json", help="where to write the results")


def export_files(data: str, split: str, out: Path) -> Path:
    """Write the split's images as out/<label>/<key>.png (an ImageFolder tree); reused if complete."""
    manifest = load_manifest(data)
    info = manifest.split(split)
    done = out / ".complete"
    if done.exists() and done.read_text() == str(info.samples):
        return out
    for shard in info.shards:
        for s in wds.tariterators.tarfile_samples([{"url": shard_url(data, shard.name)}]):
            folder = out / (s["cls"].decode() if "cls" in s else "all")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{s['__key__']}.png").write_bytes(_png_bytes(s, manifest.image_format))
    done.write_text(str(info.samples))
    return out


def _png_bytes(sample: dict, image_format: str) -> bytes:
    """The sample's image as PNG file bytes (PNG shards: the stored bytes themselves)."""
    if image_format == "png":
        return sample["png"]
    from PIL import Image

    from dgen.data.images import decode_npy, encode_png

    arr = decode_npy(sample[image_format])
    return encode_png(Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr))


def _time(batches, images: int) -> tuple[float, float]:
    """(seconds to the first batch, steady images/s after it)."""
    t0 = time.perf_counter()
    it = iter(batches)
    next(it)
    t1 = time.perf_counter()
    n = 0
    while n < images:
        try:
            b = next(it)
        except StopIteration:
            it = iter(batches)
            continue
        n += len(b["image"]) if isinstance(b, dict) else len(b[0])
    t2 = time.perf_counter()
    return t1 - t0, n / (t2 - t1)


def _folder_loader(root: Path, channels: int, batch_size: int, workers: int) -> DataLoader:
    from PIL import Image
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    mode = "L" if channels == 1 else "RGB"

    def load(path: str):
        with open(path, "rb") as f:
            return Image.open(io.BytesIO(f.read())).convert(mode)

    tf = T.Compose([T.PILToTensor(), T.ConvertImageDtype(torch.float32), T.Normalize([0.5] * channels, [0.5] * channels)])
    ds = ImageFolder(str(root), transform=tf, loader=load)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                      persistent_workers=workers > 0)


def run_loader_bench(args: argparse.Namespace) -> dict:
    data = args.data
    if data == "shards/digits" and not (Path(data) / MANIFEST).exists():
        from dgen.data.shard import write_shards
        from dgen.data.sources import get_source

        write_shards(get_source("digits")(), data, size=32, channels=1)
    manifest = load_manifest(data)
    files = export_files(data, args.split, Path(args.files or f"bench/files/{manifest.dataset}"))
    size = "x".join(map(str, manifest.image_size or ["?"]))
    print(f"{manifest.dataset}/{args.split}: {manifest.split(args.split).samples} images {size}x{manifest.channels}, "
          f"batch {args.batch_size}, {args.images} images per measurement, torch threads {torch.get_num_threads()}")
    print(f"{'reader':<34}{'workers':>8}{'start s':>9}{'images/s':>11}")
    rows = []
    for w in args.workers:
        stream = train_loader(data, args.split, batch_size=args.batch_size, num_workers=w,
                              epoch_batches=max(1, args.images // args.batch_size + 1), rank=0, world_size=1)
        folder = _folder_loader(files, manifest.channels, args.batch_size, w)
        for name, loader in (("dgen shards (webdataset)", stream), ("torchvision ImageFolder (files)", folder)):
            start, rate = _time(loader, args.images)
            rows.append({"reader": name, "workers": w, "startup_s": round(start, 3), "images_per_s": round(rate, 1)})
            print(f"{name:<34}{w:>8}{start:>9.2f}{rate:>11.0f}")
    for w in args.workers:
        a, b = (r["images_per_s"] for r in rows if r["workers"] == w)
        print(f"workers {w}: shards / files = {a / b:.2f}x")
    result = {"dataset": manifest.dataset, "split": args.split, "batch_size": args.batch_size, "images": args.images,
              "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")
    return result
