"""Loader images/s: dgen's shard stream against torchvision's ImageFolder reading one PNG file per
image, side by side, for each number of loader worker processes.

    dgen bench loader                                   # the bench set: digits-m, 64x64 RGB (made on first use)
    dgen bench loader --data shards/celeba --images 50000 --batch-size 128

Every reader delivers shuffled batches. The shard stream is measured as the trainer reads it (uint8
pixels; the trainer moves them to the device and makes them float in [-1, 1] there, a quarter of
the bytes to copy) and, for the first format, also with that conversion done in the main process
(what a CPU run pays inside its step). torchvision delivers float32 in [-1, 1]. The files are the shards' own images written once as PNGs to an ImageFolder
tree (bench/files/...), so all readers start from identical pixels in the page cache. Timing starts
after the first batch (worker start-up is reported separately) and runs until `--images` are read.
"""

from __future__ import annotations

import time
from pathlib import Path

import webdataset as wds

from dgen.bench.plain import folder_loader
from dgen.data.manifest import load_manifest, shard_url
from dgen.data.stream import train_loader


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
    from dgen.data.images import encode_png, npy_image, npy_to_pil

    return encode_png(npy_to_pil(npy_image(sample[image_format])))


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


def loader_rows(shard_sets: dict[str, str], files: Path, channels: int, batch_size: int, images: int,
                workers: list[int], split: str = "train") -> list[dict]:
    """Rows {reader, workers, startup_s, images_per_s, vs_files} for each worker count: every shard set
    as the trainer reads it (uint8 batches, made float on the device), the first also with the float
    conversion done here in the main process, and the file loader (float32 from its workers)."""
    rows = []
    for w in workers:
        readers = {}
        for i, (name, path) in enumerate(shard_sets.items()):
            for uint8 in (True, False) if i == 0 else (True,):
                label = f"dgen shards ({name}, {'uint8' if uint8 else 'float32'})"
                readers[label] = train_loader(path, split, batch_size=batch_size, num_workers=w, uint8=uint8,
                                              epoch_batches=images // batch_size + 2, rank=0, world_size=1)
        readers["torchvision ImageFolder (png files)"] = folder_loader(files, channels, batch_size, w)
        mine = []
        for name, loader in readers.items():
            start, rate = _time(loader, images)
            mine.append({"reader": name, "workers": w, "startup_s": round(start, 3), "images_per_s": round(rate, 1)})
        for r in mine:
            r["vs_files"] = round(r["images_per_s"] / mine[-1]["images_per_s"], 2)
        rows += mine
    return rows


def print_loader_rows(rows: list[dict]) -> None:
    print(f"{'reader':<38}{'workers':>8}{'start s':>9}{'images/s':>11}{'vs files':>10}")
    for r in rows:
        print(f"{r['reader']:<38}{r['workers']:>8}{r['startup_s']:>9.2f}{r['images_per_s']:>11.0f}{r['vs_files']:>9.2f}x")
