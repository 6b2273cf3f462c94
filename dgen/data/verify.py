"""`dgen verify DIR`: check every shard against manifest.json.

    dgen verify shards/mnist            # exit 0: all good; exit 1: the bad shards, first one first

Per shard: the file exists, its sha256 matches, the tar reads to the end, it holds exactly the
manifest's number of samples with unique dot-free keys, every sample has its image (and `cls` /
`json` where the dataset has labels / attributes), and every image decodes with the manifest's
channels and size. Tar files in the folder that the manifest does not list are reported too.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import webdataset as wds
from PIL import Image

from dgen.data.images import MODES, npy_image
from dgen.data.manifest import Manifest, dataset_location, is_remote, load_manifest, shard_url


def verify(location: str | Path, *, decode: bool = True) -> list[str]:
    """Problems found, one line each, in manifest order (empty list: everything checks out)."""
    manifest = load_manifest(location)
    location = dataset_location(location)  # a manifest.json path means its folder
    problems = []
    for split, info in manifest.splits.items():
        if info.samples == 0:
            why = f" (its {info.skipped} items were unreadable when it was sharded)" if info.skipped else ""
            problems.append(f"split {split!r} holds no samples{why}")
        for shard in info.shards:
            url = shard_url(location, shard.name)
            problem = check_shard(url, shard.samples, shard.sha256, manifest, decode=decode)
            if problem:
                problems.append(f"{shard.name}: {problem}")
    if not is_remote(str(location)):
        listed = {sh.name for info in manifest.splits.values() for sh in info.shards}
        folder = Path(location)
        for extra in sorted(p.name for p in folder.glob("*.tar") if p.name not in listed):
            problems.append(f"{extra}: not listed in the manifest (left over from another run?)")
    return problems


def check_shard(url: str, samples: int, sha256: str, manifest: Manifest, *, decode: bool) -> str | None:
    try:
        with wds.gopen(url, "rb") as f:
            data = f.read()
    except Exception as e:
        return f"cannot be read ({e})"
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        return f"sha256 {digest[:12]}... does not match the manifest's {sha256[:12]}... (corrupt or rewritten)"
    keys = set()
    try:
        files = wds.tariterators.tar_file_expander([{"url": url, "stream": io.BytesIO(data)}], handler=_reraise)
        for sample in wds.tariterators.group_by_keys(files, handler=_reraise):
            problem = check_sample(sample, manifest, decode=decode)
            if problem:
                return f"sample {sample['__key__']}: {problem}"
            if sample["__key__"] in keys:
                return f"sample key {sample['__key__']} appears twice"
            keys.add(sample["__key__"])
    except Exception as e:
        return f"the tar cannot be read to the end after {len(keys)} samples ({e})"
    if len(keys) != samples:
        return f"holds {len(keys)} samples, the manifest says {samples}"
    return None


def check_sample(sample: dict, manifest: Manifest, *, decode: bool) -> str | None:
    if "." in sample["__key__"]:
        return "key contains a dot"
    data = sample.get(manifest.image_format)
    if data is None:
        return f"no {manifest.image_format} member"
    if manifest.classes is not None:
        try:
            label = int(sample["cls"])
        except (KeyError, ValueError):
            return "missing or non-integer cls member"
        if not 0 <= label < len(manifest.classes):
            return f"label {label} outside the {len(manifest.classes)} classes"
    if manifest.attributes is not None:
        try:
            attrs = json.loads(sample["json"])
        except (KeyError, ValueError):
            return "missing or malformed json member"
        if set(attrs) != set(manifest.attributes):
            return "attributes differ from the manifest's"
    if decode:
        try:
            mode, size = _decoded_mode_size(data, manifest.image_format)
        except Exception as e:
            return f"image does not decode ({e})"
        if mode != MODES[manifest.channels]:
            return f"image mode {mode}, the manifest says {manifest.channels} channels"
        if manifest.image_size is not None and size != manifest.image_size:
            return f"image is {size[0]}x{size[1]}, the manifest says {manifest.image_size[0]}x{manifest.image_size[1]}"
    return None


def _reraise(e: Exception) -> bool:
    raise e


def _decoded_mode_size(data: bytes, image_format: str) -> tuple[str, list[int]]:
    """(PIL-style mode, [height, width]) of a stored image, decoding it fully."""
    if image_format == "npy":
        arr = npy_image(data)
        return MODES[arr.shape[2]], [arr.shape[0], arr.shape[1]]
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.mode, [im.height, im.width]
