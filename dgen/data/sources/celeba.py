"""CelebA: 202,599 aligned celebrity faces with 40 binary attributes and the official train/valid/test split.

    dgen shard celeba --root ~/data/celeba --out shards/celeba

Expected layout (the official release, extracted; torchvision's ROOT/celeba/... works too):

    ~/data/celeba/
        img_align_celeba/000001.jpg ... 202599.jpg   # 178x218 JPEGs
        list_attr_celeba.txt                          # count, 40 names, then "000001.jpg -1  1 ..."
        list_eval_partition.txt                       # "000001.jpg 0": 0 = train, 1 = valid, 2 = test

Images are center-cropped to 148x148 and then resized (64x64 by default), the usual CelebA preprocessing.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dgen.data.sources.base import Sample, Source, register, require_files
from dgen.data.sources.folder import load_image
from dgen.errors import DataError

IMAGES = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
PARTITIONS = {"0": "train", "1": "valid", "2": "test"}
HINT = (
    f"; expected {IMAGES}/, {ATTR_FILE} and {PARTITION_FILE} from the official CelebA release "
    "(https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html) in ROOT or in ROOT/celeba"
)


def read_attributes(path: Path) -> tuple[list[str], dict[str, bytes]]:
    """The attribute names and, per image file name, its values as bytes of 0/1."""
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise DataError(f"{path}: expected a count line and a line of attribute names")
    try:
        count = int(lines[0])
    except ValueError:
        raise DataError(f"{path}: line 1 should be the number of images, got {lines[0][:40]!r}") from None
    names = lines[1].split()
    rows = {}
    for lineno, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        values = fields[1:]
        if len(values) != len(names):
            raise DataError(f"{path}:{lineno}: {len(values)} values for {len(names)} attributes")
        if values.count("1") + values.count("-1") != len(values):
            raise DataError(f"{path}:{lineno}: attribute values must be -1 or 1")
        rows[fields[0]] = bytes(v == "1" for v in values)  # compact: 40 bytes a row, 202,599 rows
    if count != len(rows):
        raise DataError(f"{path}: line 1 says {count} images but the file has {len(rows)} rows")
    return names, rows


def read_partition(path: Path) -> dict[str, list[str]]:
    """Split name -> image file names, in file order."""
    files = {split: [] for split in PARTITIONS.values()}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in PARTITIONS:
            raise DataError(f"{path}:{lineno}: expected 'FILE 0|1|2' (train|valid|test), got {line.strip()!r}")
        files[PARTITIONS[fields[1]]].append(fields[0])
    return files


@register
@dataclass
class CelebA(Source):
    name = "celeba"
    help = "CelebA aligned faces (178x218) with 40 binary attributes; the official train/valid/test split"
    default_size = 64
    default_channels = 3
    default_crop = 148  # the face fills the center 148x148; the rest is mostly background

    root: Path
    _files: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)
    _attrs: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)  # split -> (n, 40) 0/1

    def __post_init__(self):
        root = Path(self.root).expanduser()
        if not (root / IMAGES).exists() and (root / "celeba").is_dir():
            root = root / "celeba"  # torchvision.datasets.CelebA keeps its files in ROOT/celeba
        require_files(root, [IMAGES, ATTR_FILE, PARTITION_FILE], "celeba", HINT)
        self.root = root

        self.attributes, rows = read_attributes(root / ATTR_FILE)
        files = read_partition(root / PARTITION_FILE)
        unknown = [f for names in files.values() for f in names if f not in rows]
        if unknown:
            raise DataError(
                f"celeba: {len(unknown)} images of {PARTITION_FILE} have no row in {ATTR_FILE} "
                f"(first: {', '.join(unknown[:3])})"
            )
        for split, names in files.items():
            if names:  # only non-empty splits
                self._files[split] = names
                flat = np.frombuffer(b"".join(rows[f] for f in names), dtype=np.uint8)
                self._attrs[split] = flat.reshape(len(names), len(self.attributes))

    def splits(self) -> dict[str, int]:
        return {split: len(names) for split, names in self._files.items()}

    def read(self, split: str, index: int) -> Sample:
        filename = self._files[split][index]
        image = load_image(self.root / IMAGES / filename)  # a missing file is skipped, not fatal
        attrs = dict(zip(self.attributes, self._attrs[split][index].tolist()))
        return Sample(Path(filename).stem, image.convert("RGB"), attrs=attrs)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--root", type=Path, required=True, help="extracted CelebA folder (or the folder holding celeba/)"
        )
        parser.add_argument(
            "--download", action="store_true",
            help="first fetch CelebA into ROOT/celeba with torchvision (Google Drive; often over its quota)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "CelebA":
        if args.download:
            download(Path(args.root).expanduser())
        return cls(root=args.root)


def download(root: Path) -> None:
    from torchvision.datasets import CelebA as TorchvisionCelebA

    try:
        TorchvisionCelebA(str(root), download=True)
    except Exception as e:  # network, quota, missing gdown, bad checksum: all mean "get the files yourself"
        raise DataError(f"celeba: download into {root / 'celeba'} failed ({e}){HINT}") from e
