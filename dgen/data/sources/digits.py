"""Embedded data that needs no download: scikit-learn's handwritten digits, and a coloured
target domain built from them with the MNIST-M recipe and photos shipped in scikit-learn and
scikit-image.

    dgen shard digits   --out shards/digits      # 1,797 digits, 8x8 upsampled to 32x32 gray
    dgen shard digits-m --out shards/digits-m    # same split and labels, blended on photos, RGB
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from dgen.data.sources.base import Sample, Source, register
from dgen.data.sources.blend import blend_item

TEST_FRACTION = 0.2  # 360 of 1,797 digits, stratified by class
SPLIT_SEED = 0


@register
@dataclass
class Digits(Source):
    name = "digits"
    help = "scikit-learn's 1,797 handwritten digits (embedded; fixed stratified 80/20 split)"
    default_size = 32
    default_channels = 1

    def __post_init__(self):
        self.classes = [str(i) for i in range(10)]

    @cached_property
    def _data(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 ink -> 0..255
        labels = digits.target.astype(np.int64)
        train, test = train_test_split(
            np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
        )
        return images, labels, {"train": np.sort(train), "test": np.sort(test)}

    def splits(self) -> dict[str, int]:
        return {split: len(idx) for split, idx in self._data[2].items()}

    def digit(self, split: str, index: int) -> tuple[str, np.ndarray, int]:
        images, labels, order = self._data
        i = int(order[split][index])
        return f"{i:05d}", images[i], int(labels[i])

    def read(self, split: str, index: int) -> Sample:
        key, image, label = self.digit(split, index)
        return Sample(key, Image.fromarray(image, mode="L"), label)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Digits":
        return cls()


class EmbeddedPhotos:
    """Natural RGB photos that ship inside scikit-learn and scikit-image (no download)."""

    SKIMAGE = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")

    def __len__(self) -> int:
        return len(self._photos)

    @cached_property
    def _photos(self) -> list[np.ndarray]:
        import skimage.data
        from sklearn.datasets import load_sample_images

        photos = list(load_sample_images().images)  # china.jpg, flower.jpg
        photos += [getattr(skimage.data, name)() for name in self.SKIMAGE]
        return [np.ascontiguousarray(p[..., :3]) for p in photos]

    def get(self, i: int) -> np.ndarray:
        return self._photos[i]

    def __getstate__(self):  # workers reload the photos rather than receive them pickled
        return {}


@register
@dataclass
class DigitsM(Source):
    name = "digits-m"
    help = "digits blended with embedded photos the way MNIST-M is built (same split and labels)"
    default_size = 32
    default_channels = 3

    size: int | None = 32  # the blend happens at the final size so photo texture is not blurred
    seed: int = 0
    digits: Digits = field(default_factory=Digits, repr=False)
    photos: EmbeddedPhotos = field(default_factory=EmbeddedPhotos, repr=False)

    def __post_init__(self):
        self.classes = self.digits.classes

    def splits(self) -> dict[str, int]:
        return self.digits.splits()

    def read(self, split: str, index: int) -> Sample:
        key, image, label = self.digit(split, index)
        return Sample(key, blend_item(image, self.photos, self.seed, split, index), label)

    def digit(self, split: str, index: int) -> tuple[str, np.ndarray, int]:
        key, image, label = self.digits.digit(split, index)
        if self.size is not None and image.shape != (self.size, self.size):
            resized = TF.resize(Image.fromarray(image, mode="L"), [self.size, self.size], InterpolationMode.BILINEAR)
            image = np.asarray(resized)
        return key, image, label

    def options(self) -> dict:
        return {"seed": self.seed, "photos": "sklearn+skimage:" + ",".join(EmbeddedPhotos.SKIMAGE)}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--seed", type=int, default=0, help="seed of the photo choice and crop position")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DigitsM":
        return cls(size=args.size, seed=args.seed)
