"""SVHN cropped digits from the official .mat files (73,257 train / 26,032 test [/ 531,131 extra], 32x32 RGB).

    dgen shard svhn --root data/svhn --out shards/svhn

Layout: ROOT/train_32x32.mat, ROOT/test_32x32.mat and, optionally, ROOT/extra_32x32.mat (written
only if present). Each holds X, uint8 32 x 32 x 3 x N, and y, N x 1 labels where 10 stands for digit 0.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from dgen.data.sources.base import ArraySource, Sample, register, require_files
from dgen.errors import DataError

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
REQUIRED = ("train", "test")
DOWNLOAD_HINT = " (pass --download where a network exists)"


@register
@dataclass
class Svhn(ArraySource):
    name = "svhn"
    help = "SVHN cropped house-number digits (.mat files; train, test and extra if present; 32x32 RGB)"
    default_size = None
    default_channels = 3

    root: Path

    def __post_init__(self):
        self.classes = [str(d) for d in range(10)]
        self.root = Path(self.root)
        require_files(self.root, [FILES[s] for s in REQUIRED], "svhn", DOWNLOAD_HINT)


    @cached_property
    def _counts(self) -> dict[str, int]:
        # whosmat reads the variable headers only: extra_32x32.mat is 1.3 GB and need not be loaded to count it
        from scipy.io import whosmat

        counts = {}
        for split, name in FILES.items():
            path = self.root / name
            if split not in REQUIRED and not path.exists():
                continue
            try:
                shapes = {var: shape for var, shape, _ in whosmat(path)}
            except Exception as e:  # scipy raises ValueError, TypeError, OSError... on a damaged file
                raise DataError(f"svhn: cannot read {path}: {e}") from e
            x, y = shapes.get("X", ()), shapes.get("y", ())
            if len(x) != 4 or x[:3] != (32, 32, 3) or len(y) != 2 or y[0] != x[3]:
                raise DataError(f"svhn: {path} holds X {x} and y {y}; expected X 32x32x3xN and y Nx1")
            counts[split] = int(x[3])
        return counts

    def splits(self) -> dict[str, int]:
        return dict(self._counts)

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 32 x 32 x 3 x N images as stored, int64 N labels 0..9), loaded on first use."""
        if split not in self._loaded:
            from scipy.io import loadmat

            path = self.root / FILES[split]
            try:
                mat = loadmat(path, variable_names=["X", "y"])
                images, labels = mat["X"], mat["y"].reshape(-1).astype(np.int64)
            except Exception as e:  # damaged file or missing variable
                raise DataError(f"svhn: cannot read {path}: {e}") from e
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != len(labels):
                raise DataError(f"svhn: {path} holds X {images.dtype} {images.shape} and {len(labels)} labels")
            # images stay 32x32x3xN: copying a 1.3 GB array to N-first would double memory for nothing
            self._loaded[split] = (images, labels % 10)  # label 10 is digit 0
        return self._loaded[split]

    def read(self, split: str, index: int) -> Sample:
        images, labels = self.arrays(split)
        image = np.ascontiguousarray(images[:, :, :, index])  # rows x columns x RGB
        return Sample(f"{index:06d}", Image.fromarray(image, mode="RGB"), int(labels[index]))

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--root", type=Path, required=True, metavar="DIR",
                            help="folder with train_32x32.mat, test_32x32.mat (extra_32x32.mat optional)")
        parser.add_argument("--download", action="store_true",
                            help="fetch train and test into DIR first (extra, 1.3 GB, is left to you)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Svhn":
        if args.download:
            from torchvision.datasets import SVHN

            try:
                for split in REQUIRED:
                    SVHN(str(args.root), split=split, download=True)
            except Exception as e:  # network and checksum errors come in many types
                raise DataError(f"svhn: download into {args.root} failed: {e}") from e
        return cls(root=args.root)
