"""Images from files, for scoring any generator's samples (`dgen eval --images PATH --data SHARDS`): a folder
of PNG/JPEG files or a .npy/.npz array, as uint8 [N, C, H, W] in the channels and size asked for (the feature
classifier's), converted and resized exactly as the shard stream converts and resizes (dgen.data.stream.Decoder).

    from dgen.data.stream import to_float
    from dgen.eval.image_files import load_images
    images, found = load_images("samples/", image_size=32, channels=1, limit=2000)  # the first 2000 of `found`
    fid.fake_stats(to_float(images).split(256))                                      # [-1, 1], as FID expects

Folders are searched recursively for *.png, *.jpg and *.jpeg (any case) and read in sorted path order, so
"the first N" is deterministic (name files with zero-padded numbers: 0009.png sorts before 0010.png); every
file may have its own size and mode. Arrays are uint8 in 0..255, or float in [0, 1] (rounded to 8 bits, as
saving them as PNG would), shaped N x H x W, N x H x W x C or N x C x H x W with C = 1 or 3; a .npz gives its
array named `images`, or its only array. Anything else is a DataError naming the file and the problem.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import UnidentifiedImageError

from dgen.data.stream import Decoder
from dgen.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy", ".npz")
ARRAY_SHAPES = "N x H x W, N x H x W x C or N x C x H x W with C = 1 or 3"


def load_images(path, *, image_size: int, channels: int, limit: int | None = None) -> tuple[torch.Tensor, int]:
    """The first `limit` images of `path` (all if None or fewer) as uint8 [N, channels, image_size, image_size],
    and how many images `path` holds."""
    path = Path(path)
    if limit is not None and limit < 1:
        raise DataError(f"the number of images to read must be >= 1, got {limit}")
    decoder = Decoder(image_size, channels, labelled=False, attributes=None)
    if path.is_dir():
        files = image_files(path)
        return torch.stack([_read(f, decoder) for f in files[:limit]]), len(files)
    if path.is_file() and path.suffix.lower() in ARRAY_SUFFIXES:
        arr = _nhwc(_array(path), path)
        return torch.stack([decoder.fit(a) for a in _uint8(arr[:limit], path)]), len(arr)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    raise DataError(f"{path}: expected a folder of PNG/JPEG images, a .npy or a .npz file")


def image_files(folder: Path) -> list[Path]:
    """The PNG and JPEG files below `folder`, in sorted path order; DataError if there are none."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{folder}: no PNG or JPEG images in it (searched recursively)")
    return files


def _read(path: Path, decoder: Decoder) -> torch.Tensor:
    try:
        return decoder.image(path.read_bytes())
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable PNG or JPEG image") from None
    except Exception as e:  # truncated or damaged image data: PIL raises OSError, ValueError, SyntaxError...
        raise DataError(f"{path}: cannot read the image ({e})") from None


def _array(path: Path) -> np.ndarray:
    """The images array of a .npy (memory-mapped: only the images used are read) or .npz file."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            if "images" in keys:
                return npz["images"]
            if len(keys) != 1:
                held = f"arrays {', '.join(keys)}" if keys else "no arrays"
                raise DataError(f"{path} holds {held} and none named 'images': save the images under that key")
            return npz[keys[0]]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable NumPy file ({e})") from None


def _nhwc(arr: np.ndarray, path: Path) -> np.ndarray:
    """N x H x W x C (a view) from any of the shapes accepted."""
    if arr.ndim == 3:
        arr = arr[..., None]
    elif arr.ndim == 4 and arr.shape[3] not in (1, 3) and arr.shape[1] in (1, 3):
        arr = arr.transpose(0, 2, 3, 1)
    if arr.ndim != 4 or arr.shape[3] not in (1, 3):
        raise DataError(f"{path}: an array of shape {arr.shape}; expected {ARRAY_SHAPES}")
    if arr.shape[0] == 0 or 0 in arr.shape[1:3]:
        raise DataError(f"{path}: an array of shape {arr.shape} holds no images")
    return arr


def _uint8(arr: np.ndarray, path: Path) -> np.ndarray:
    """The images as contiguous uint8: uint8 as they are, floats in [0, 1] times 255, rounded."""
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{path}: images of dtype {arr.dtype}; expected uint8 (0..255) or float in [0, 1]")
    arr = np.asarray(arr)
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: float images hold NaN or infinite values; expected values in [0, 1]")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 1:
        raise DataError(f"{path}: float images must be in [0, 1], these span [{lo:.4g}, {hi:.4g}] "
                        f"(images in [-1, 1]: save (x + 1) / 2; in 0..255: save them as uint8)")
    return np.rint(arr * 255).astype(np.uint8)
