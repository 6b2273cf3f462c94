"""The MNIST-M recipe (Ganin & Lempitsky, 2015): |photo patch - digit| per channel.

A grayscale digit (white on black, 0..255) is combined with a random crop of a natural photo of
the same size by taking the absolute difference per RGB channel: where the digit is dark the photo
shows through, where it is bright the photo's colours are inverted. Randomness is drawn per item
from (seed, split, index), so any process can build any item and the result never depends on
how the work was split.
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from dgen.errors import DataError

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def item_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def blend(digit: np.ndarray, photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """digit: HxW uint8; photo: h x w x 3 uint8 with h >= H, w >= W. Returns HxWx3 uint8."""
    H, W = digit.shape
    ph, pw = photo.shape[:2]
    if ph < H or pw < W:
        raise DataError(f"background photo {pw}x{ph} is smaller than the digit {W}x{H}")
    y = int(rng.integers(0, ph - H + 1))
    x = int(rng.integers(0, pw - W + 1))
    patch = photo[y : y + H, x : x + W].astype(np.int16)
    return np.abs(patch - digit.astype(np.int16)[:, :, None]).astype(np.uint8)


def blend_item(digit: np.ndarray, photos: "PhotoSet", seed: int, split: str, index: int) -> Image.Image:
    rng = item_rng(seed, split, index)
    photo = photos.get(int(rng.integers(0, len(photos))))
    return Image.fromarray(blend(digit, photo, rng), mode="RGB")


class PhotoSet:
    """Background photos, loaded lazily and cached per process (workers never pickle pixel data)."""

    def __init__(self, paths: list[Path]):
        self.paths = sorted(Path(p) for p in paths)
        if not self.paths:
            raise DataError("no background photos given")

    @classmethod
    def from_folder(cls, folder: str | Path) -> "PhotoSet":
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"background folder {folder} does not exist")
        paths = [p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES]
        if not paths:
            raise DataError(f"background folder {folder} holds no images ({', '.join(sorted(PHOTO_SUFFIXES))})")
        return cls(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, i: int) -> np.ndarray:
        return _load_photo(str(self.paths[i]))


@lru_cache(maxsize=64)
def _load_photo(path: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        raise DataError(f"cannot read background photo {path}: {e}") from e
