"""The interface every dataset reader implements, and the registry `dgen shard` looks names up in.

A source is random access: `count(split)` items per split and `read(split, i)` for any i. That lets
the shard writer split work over processes (`--workers`) and over independent jobs (`--part I/N`)
without coordination, and keeps the output independent of how the work was split.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from PIL import Image

from dgen.errors import DataError


@dataclass
class Sample:
    """One item as the source stores it; the writer resizes and converts channels afterwards."""

    key: str  # unique within its split, no dots (WebDataset splits member names at the first dot)
    image: Image.Image  # mode "L" or "RGB", native size
    label: int | None = None
    attrs: dict[str, int] | None = None  # e.g. CelebA's 40 binary attributes as 0/1


@dataclass
class Source:
    """Base class of dataset readers. Subclasses set the class variables and implement the methods."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"  # bump when the reader's output changes for the same input
    default_size: ClassVar[int | None] = None  # None keeps the native size
    default_channels: ClassVar[int] = 3
    default_crop: ClassVar[int | None] = None  # center-crop side (px) before resizing, None = largest square
    help: ClassVar[str] = ""

    classes: list[str] | None = field(default=None, init=False)
    attributes: list[str] | None = field(default=None, init=False)

    # ---- to implement -------------------------------------------------------------------
    def splits(self) -> dict[str, int]:
        """Split name -> number of items, in writing order (e.g. {"train": 60000, "test": 10000})."""
        raise NotImplementedError

    def read(self, split: str, index: int) -> Sample:
        """Item `index` of `split`. Raise UnreadableSample for one corrupt item (it is skipped and counted)."""
        raise NotImplementedError

    def options(self) -> dict:
        """Options that change the output, recorded in the manifest (paths are not: moving data is fine)."""
        return {}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Source-specific `dgen shard NAME ...` flags."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Source":
        raise NotImplementedError


@dataclass
class ArraySource(Source):
    """A source that reads each split's arrays on first use and keeps them in `_loaded`; pickling
    (to shard-writer workers) drops them, so each worker reads the files itself."""

    _loaded: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __getstate__(self):
        return {**self.__dict__, "_loaded": {}}


DIGIT_CLASSES = [str(d) for d in range(10)]

SOURCES: dict[str, type[Source]] = {}


def register(cls: type[Source]) -> type[Source]:
    SOURCES[cls.name] = cls
    return cls


def get_source(name: str) -> type[Source]:
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(f"unknown source {name!r}; known sources: {', '.join(sorted(SOURCES))}") from None


def require_files(root: Path, names: list[str], what: str, hint: str = "") -> None:
    """Fail with one message listing every expected file that is missing under `root`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what}: root folder {root} does not exist (expected {', '.join(names)} in it){hint}")
    missing = [n for n in names if not (root / n).exists()]
    if missing:
        raise DataError(f"{what}: missing under {root}: {', '.join(missing)}{hint}")
