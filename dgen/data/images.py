"""Image conversions shared by the shard writer and the sources: channels, crop, resize, stored bytes."""

from __future__ import annotations

import io

import numpy as np

from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from dgen.errors import DataError

MODES = {1: "L", 3: "RGB"}
IMAGE_FORMATS = ("png", "npy")


def convert_channels(img: Image.Image, channels: int) -> Image.Image:
    """Grayscale <-> RGB (luma ITU-R 601-2 for RGB -> L; L -> RGB repeats the channel)."""
    if channels not in MODES:
        raise DataError(f"channels must be 1 or 3, got {channels}")
    mode = MODES[channels]
    return img if img.mode == mode else img.convert(mode)


def fit_image(img: Image.Image, size: int | None, channels: int, crop: int | None = None) -> Image.Image:
    """Convert channels, center-crop (to `crop` px, else to the largest square) and resize to size x size.

    size=None keeps the native size (no crop either). Resizing uses PIL's bilinear filter, which
    widens its support when downscaling, so large photos are antialiased rather than aliased.
    """
    img = convert_channels(img, channels)
    if size is None:
        return img
    w, h = img.size
    side = crop if crop is not None else min(w, h)
    if side > min(w, h):
        raise DataError(f"crop {side}px is larger than the image ({w}x{h})")
    if (w, h) != (side, side):
        img = TF.center_crop(img, [side, side])
    if side != size:
        img = TF.resize(img, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return img


def encode_png(img: Image.Image) -> bytes:
    """Deterministic PNG bytes: same pixels -> same bytes (no timestamps or text chunks)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def encode_npy(img: Image.Image) -> bytes:
    """The pixels as an H x W x C uint8 NumPy array (.npy bytes; deterministic)."""
    arr = np.asarray(img, dtype=np.uint8)
    buf = io.BytesIO()
    np.save(buf, arr if arr.ndim == 3 else arr[:, :, None], allow_pickle=False)
    return buf.getvalue()


def encode_image(img: Image.Image, image_format: str) -> bytes:
    return encode_png(img) if image_format == "png" else encode_npy(img)


# -- decoding stored bytes (the stream's hot path) ---------------------------------------------------
_NPY_LAYOUTS: dict[bytes, tuple[np.dtype, tuple[int, ...], int]] = {}  # header bytes -> (dtype, shape, offset)


def decode_npy(data: bytes) -> np.ndarray:
    """.npy bytes -> array. All images of a shard share one header, so it is parsed once (np.load's
    header parse costs ~10x the copy of a 64 px image) and later arrays are read straight from the bytes."""
    if data[:6] == b"\x93NUMPY" and len(data) > 12:
        offset = (10 + int.from_bytes(data[8:10], "little")) if data[6] == 1 else (12 + int.from_bytes(data[8:12], "little"))
        head = bytes(data[:offset])
        layout = _NPY_LAYOUTS.get(head)
        if layout is not None:
            dtype, shape, offset = layout
            return np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=offset).reshape(shape)
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        if b"'fortran_order': False" in head and len(_NPY_LAYOUTS) < 64:
            _NPY_LAYOUTS[head] = (arr.dtype, arr.shape, offset)
        return arr
    return np.load(io.BytesIO(data), allow_pickle=False)  # raises a clear "not a .npy file" error


def npy_image(data: bytes) -> np.ndarray:
    """A stored npy image: uint8, H x W x 1 or 3 (a ValueError naming what it is otherwise)."""
    arr = decode_npy(data)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in MODES:
        raise ValueError(f"npy image is {arr.dtype} {arr.shape}, expected uint8 H x W x 1|3")
    return arr


def npy_to_pil(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
