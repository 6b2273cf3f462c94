"""Image conversions shared by the shard writer and the sources: channels, crop, resize, PNG bytes."""

from __future__ import annotations

import io

from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from dgen.errors import DataError

MODES = {1: "L", 3: "RGB"}


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
