"""USPS handwritten digits from the libsvm files torchvision downloads (7,291 train / 2,007 test, 16x16 gray).

    dgen shard usps --root data/usps --out shards/usps

Layout: ROOT/usps.bz2 (train) and ROOT/usps.t.bz2 (test), bzip2-compressed text with one digit per
line, `LABEL 1:V 2:V ... 256:V`, labels 1..10 for digits 0..9 and pixel values in [-1, 1].
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dgen.data.sources.base import ArraySource, Sample, register, require_files
from dgen.errors import DataError

FILES = {"train": "usps.bz2", "test": "usps.t.bz2"}
DOWNLOAD_HINT = " (pass --download where a network exists)"


@register
@dataclass
class Usps(ArraySource):
    name = "usps"
    help = "USPS handwritten digits (libsvm files; 7,291 train / 2,007 test, 16x16 gray)"
    default_size = None
    default_channels = 1

    root: Path

    def __post_init__(self):
        self.classes = [str(d) for d in range(10)]
        self.root = Path(self.root)
        require_files(self.root, list(FILES.values()), "usps", DOWNLOAD_HINT)


    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 N x 16 x 16 images, int64 N labels 0..9), parsed on first use."""
        if split not in self._loaded:
            from torchvision.datasets import USPS

            # torchvision's parser defines the reference pixel mapping ((v + 1) / 2 * 255, truncated),
            # so shards match what torchvision users see
            try:
                data = USPS(str(self.root), train=split == "train")
            except Exception as e:  # ValueError on bad numbers, EOFError/OSError on bad bz2, ...
                raise DataError(f"usps: cannot parse {self.root / FILES[split]}: {e}") from e
            self._loaded[split] = (np.asarray(data.data, dtype=np.uint8), np.asarray(data.targets, dtype=np.int64))
        return self._loaded[split]

    def splits(self) -> dict[str, int]:
        return {split: len(self.arrays(split)[1]) for split in FILES}

    def read(self, split: str, index: int) -> Sample:
        images, labels = self.arrays(split)
        return Sample(f"{index:05d}", Image.fromarray(images[index], mode="L"), int(labels[index]))

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--root", type=Path, required=True, metavar="DIR", help="folder with usps.bz2, usps.t.bz2")
        parser.add_argument("--download", action="store_true", help="fetch the two files into DIR first")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Usps":
        if args.download:
            from torchvision.datasets import USPS

            try:
                for train in (True, False):
                    USPS(str(args.root), train=train, download=True)
            except Exception as e:  # network and checksum errors come in many types
                raise DataError(f"usps: download into {args.root} failed: {e}") from e
        return cls(root=args.root)
