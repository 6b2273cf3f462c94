"""Any folder of images: photos, a scraped collection, or an ImageFolder tree with one folder per class.

    dgen shard folder --root ~/data/faces --out shards/faces

Accepted layouts (jpg/jpeg/png/bmp/webp/tif/tiff, any letter case, searched recursively):

    ~/data/faces/                        # no split folders: dgen makes a reproducible split,
        a.jpg  more/b.png ...            #   --test-fraction (0.1) of the images become `test`

    ~/data/pets/                         # train/ and test/ (and optionally valid/ or val/) are the
        train/cat/001.jpg ...            #   splits; when every image sits in a first-level folder
        train/dog/...   test/cat/...     #   of its split (ImageFolder layout) the folders are classes

Files with other extensions and hidden files or folders (".DS_Store", macOS "._x.jpg") are ignored.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from dgen.data.sources.base import Sample, Source, register
from dgen.errors import DataError, UnreadableSample

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
SPLIT_FOLDERS = {"train": ("train",), "valid": ("valid", "val"), "test": ("test",)}

# What PIL raises for files that are not images, truncated or corrupt (it is not consistent about it).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, Image.DecompressionBombError)


def load_image(path: Path) -> Image.Image:
    """Decode `path` completely into an "L" or "RGB" image, or raise UnreadableSample naming it."""
    if not path.is_file():
        raise UnreadableSample(f"{path}: file is missing")
    try:
        with Image.open(path) as img:
            img.load()  # Image.open only reads the header; truncation shows up while decoding
            # Phone photos store their rotation in EXIF. This also returns a copy that outlives the file.
            return _to_l_or_rgb(ImageOps.exif_transpose(img))
    except DECODE_ERRORS as e:
        raise UnreadableSample(f"{path}: cannot decode image ({e})") from e


def _to_l_or_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("L", "RGB"):
        return img
    if img.mode in ("I", "I;16", "I;16L", "I;16B"):
        # 16-bit grayscale PNG/TIFF: PIL's convert("L") would clip at 255, so rescale 0..65535 -> 0..255
        wide = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("1", "LA", "La"):
        return img.convert("L")
    return img.convert("RGB")  # P, RGBA, CMYK, ...: alpha is dropped, as torchvision's loader does


def list_images(top: Path) -> list[str]:
    """Relative POSIX paths of the image files under `top`, sorted so the order is the same on every OS."""
    found, seen_dirs = [], set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop: this folder was listed already
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(top)
        for f in filenames:
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in EXTENSIONS:
                found.append((rel / f).as_posix())
    return sorted(found)


def make_keys(paths: list[str]) -> list[str]:
    """Dot-free keys from relative paths ("cat/img.001.jpg" -> "cat__img_001"), unique among `paths`."""
    keys, used = [], set()
    for p in paths:
        key = os.path.splitext(p)[0].replace("/", "__").replace(".", "_")
        base, n = key, 1
        while key in used:  # "x.jpg" next to "x.png": later ones get a numbered suffix
            n += 1
            key = f"{base}_{n}"
        used.add(key)
        keys.append(key)
    return keys


def split_order(path: str, seed: int) -> str:
    # A hash rather than random.shuffle: the same on every Python version, and adding one image
    # does not move any other image between train and test.
    return hashlib.sha256(f"{seed}:{path}".encode()).hexdigest()


@dataclass
class _Split:
    paths: list[str]  # relative to the source root
    keys: list[str]
    folders: list[str | None]  # first-level folder under the split root (the class), None for loose files


@register
@dataclass
class Folder(Source):
    name = "folder"
    help = "any folder of images; train/ valid/ test/ subfolders are the splits, class subfolders the labels"
    default_size = 64
    default_channels = 3
    default_crop = None  # photos come in any aspect ratio: take the largest center square

    root: Path
    test_fraction: float = 0.1
    split_seed: int = 0
    presplit: bool = field(default=False, init=False)  # True when the folders fix the split
    _splits: dict[str, _Split] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.root = Path(self.root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"folder: root folder {self.root} does not exist")
        if not 0 <= self.test_fraction < 1:
            raise DataError(f"folder: --test-fraction must be in [0, 1), got {self.test_fraction}")

        split_roots = self._split_roots()
        self.presplit = split_roots is not None
        if self.presplit:
            for split, sub in split_roots.items():
                self._splits[split] = self._index(sub)
        else:
            self._splits = self._random_split(self._index(self.root))
        self._splits = {s: v for s, v in self._splits.items() if v.paths}
        if not self._splits:
            raise DataError(f"folder: no images ({', '.join(sorted(EXTENSIONS))}) under {self.root}")

        # ImageFolder layout only if it holds for every image of every split; one list for all splits
        folders = {f for s in self._splits.values() for f in s.folders}
        if None not in folders:
            self.classes = sorted(folders)

    def _split_roots(self) -> dict[str, Path] | None:
        found = {}
        for split, candidates in SPLIT_FOLDERS.items():
            present = [self.root / c for c in candidates if (self.root / c).is_dir()]
            if len(present) > 1:
                raise DataError(f"folder: both {' and '.join(str(p) for p in present)} exist; keep one")
            if present:
                found[split] = present[0]
        return found if "train" in found and "test" in found else None

    def _index(self, top: Path) -> _Split:
        paths = list_images(top)
        prefix = top.relative_to(self.root).as_posix()
        return _Split(
            paths=[p if prefix == "." else f"{prefix}/{p}" for p in paths],
            keys=make_keys(paths),  # from the path under the split root: "cat__001", not "train__cat__001"
            folders=[p.split("/")[0] if "/" in p else None for p in paths],
        )

    def _random_split(self, everything: _Split) -> dict[str, _Split]:
        n = len(everything.paths)
        n_test = 0
        if n >= 2 and self.test_fraction > 0:
            n_test = min(max(1, round(n * self.test_fraction)), n - 1)  # keep at least one for training
        shuffled = sorted(range(n), key=lambda i: split_order(everything.paths[i], self.split_seed))
        test = set(shuffled[:n_test])

        def subset(members: list[int]) -> _Split:  # keeps the sorted path order within each split
            columns = (everything.paths, everything.keys, everything.folders)
            return _Split(*([column[i] for i in members] for column in columns))

        return {"train": subset([i for i in range(n) if i not in test]), "test": subset(sorted(test))}

    def splits(self) -> dict[str, int]:
        return {split: len(s.paths) for split, s in self._splits.items()}

    def read(self, split: str, index: int) -> Sample:
        s = self._splits[split]
        label = self.classes.index(s.folders[index]) if self.classes is not None else None
        return Sample(s.keys[index], load_image(self.root / s.paths[index]), label)

    def options(self) -> dict:
        if self.presplit:
            return {}
        return {"test_fraction": self.test_fraction, "split_seed": self.split_seed}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--root", type=Path, required=True, help="folder of images (searched recursively)")
        parser.add_argument(
            "--test-fraction", type=float, default=0.1,
            help="share of images that become `test` when ROOT has no train/ and test/ folders (default 0.1)",
        )
        parser.add_argument("--split-seed", type=int, default=0, help="seed of that split (default 0)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Folder":
        return cls(root=args.root, test_fraction=args.test_fraction, split_seed=args.split_seed)
