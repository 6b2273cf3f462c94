"""MNIST from its official idx files, and MNIST-M either pre-built or built with the recipe.

    dgen shard mnist   --root data/mnist --out shards/mnist      # 60,000 + 10,000 digits, 28x28 gray
    dgen shard mnist-m --root data/mnist_m --out shards/mnist-m  # pre-built MNIST-M, 28x28 RGB
    dgen shard mnist-m --mnist-root data/mnist --backgrounds data/BSR/BSDS500/data/images/train \\
                       --out shards/mnist-m                      # the recipe: MNIST blended on photos
    dgen shard mnist-m --mnist-root data/mnist --backgrounds embedded --out shards/mnist-m
                       # the recipe on the 7 photos that ship in scikit-learn and scikit-image (no download;
                       # not the paper's BSDS500 target, so not comparable with its numbers)

MNIST layout: the four idx files, gzipped or not, in ROOT, ROOT/raw or ROOT/MNIST/raw (the last
is what torchvision's downloader writes, so `--download` and an existing torchvision cache both work):

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

Mirrors that write a dot before `idx` (`train-images.idx3-ubyte`) are read as well.

Pre-built MNIST-M layouts (ROOT may also be the folder that holds `mnist_m/`):

    mnist_m_train/00000000.png ...  mnist_m_train_labels.txt   ("00000000.png 5" per line)
    mnist_m_test/00000000.png ...   mnist_m_test_labels.txt
  or
    mnist_m_train.pt  mnist_m_test.pt    each torch.save'd (uint8 N x 28 x 28 x 3, int64 N)
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from dgen.data.sources.base import ArraySource, Sample, Source, register, require_files
from dgen.data.sources.blend import PhotoSet, blend_item
from dgen.data.sources.digits import EmbeddedPhotos
from dgen.errors import DataError, UnreadableSample

DIGITS = [str(d) for d in range(10)]
DOWNLOAD_HINT = " (pass --download where a network exists)"

# split -> (images file, labels file), names without .gz
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# idx magic = 0x08 (uint8) << 8 | number of dimensions
IMAGES_MAGIC, LABELS_MAGIC = 0x0803, 0x0801


# ---- idx files ------------------------------------------------------------------------------
def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _idx_dims(head: bytes, path: Path, magic: int) -> tuple[int, ...]:
    """Parse the idx header: 4 magic bytes, then one big-endian uint32 per dimension."""
    ndim = magic & 0xFF
    if len(head) < 4:
        raise DataError(f"{path}: truncated idx file ({len(head)} bytes)")
    found = int.from_bytes(head[:4], "big")
    if found != magic:
        raise DataError(f"{path}: not an idx {'image' if magic == IMAGES_MAGIC else 'label'} file "
                        f"(magic number {found}, expected {magic})")
    if len(head) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated idx header")
    return tuple(int(d) for d in np.frombuffer(head, ">u4", count=ndim, offset=4))


def idx_shape(path: Path, magic: int) -> tuple[int, ...]:
    """Dimensions from the header alone, so counting items does not decompress the pixels."""
    try:
        with _open(path) as f:
            head = f.read(4 + 4 * (magic & 0xFF))
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from e
    return _idx_dims(head, path, magic)


def read_idx(path: Path, magic: int) -> np.ndarray:
    try:
        with _open(path) as f:
            data = f.read()
    except (OSError, EOFError) as e:  # bad or truncated gzip stream
        raise DataError(f"cannot read {path}: {e}") from e
    dims = _idx_dims(data, path, magic)
    offset = 4 + 4 * len(dims)
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise DataError(f"{path}: truncated or corrupt idx file ({len(data) - offset} data bytes, "
                        f"header {'x'.join(map(str, dims))} needs {expected})")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def _variants(name: str) -> list[str]:
    """The spellings a distributed idx file goes by, plain before gzipped (torchvision keeps both, and the plain
    file needs no decompression): `train-images-idx3-ubyte` as on LeCun's page and torchvision, and
    `train-images.idx3-ubyte`, a dot before `idx`, as several mirrors ship it."""
    dotted = name.replace("-idx", ".idx")
    return [name, dotted, name + ".gz", dotted + ".gz"]


def find_mnist_files(root: Path) -> dict[str, Path]:
    """Locate each idx file (either spelling, plain or .gz) in ROOT, ROOT/raw, ROOT/MNIST/raw; one DataError naming
    every missing file and listing what those folders do hold."""
    root = Path(root)
    names = [n for pair in MNIST_FILES.values() for n in pair]
    if not root.is_dir():
        require_files(root, names, "mnist", DOWNLOAD_HINT)  # says the root is missing and what belongs in it
    folders = [root, root / "raw", root / "MNIST" / "raw"]
    found, missing = {}, []
    for name in names:
        hits = [d / n for d in folders for n in _variants(name) if (d / n).is_file()]
        if hits:
            found[name] = hits[0]
        else:
            missing.append(name + "[.gz]")
    if missing:
        where = ", ".join(str(d) for d in folders)
        present = sorted(str(p.relative_to(root)) for d in folders if d.is_dir() for p in d.iterdir() if p.is_file())
        held = (f"; found only: {', '.join(present[:12])}{' ...' if len(present) > 12 else ''}" if present
                else "; those folders hold no files")
        raise DataError(f"mnist: missing {', '.join(missing)} (looked in {where}; '.idx' for '-idx' is accepted too)"
                        f"{held}{DOWNLOAD_HINT}")
    return found


@register
@dataclass
class Mnist(ArraySource):
    name = "mnist"
    help = "MNIST handwritten digits from the official idx files (60,000 train / 10,000 test, 28x28 gray)"
    default_size = None
    default_channels = 1

    root: Path

    def __post_init__(self):
        self.classes = DIGITS
        self.root = Path(self.root)
        self.files = find_mnist_files(self.root)


    @cached_property
    def _counts(self) -> dict[str, int]:
        counts = {}
        for split, (images, labels) in MNIST_FILES.items():
            n_images = idx_shape(self.files[images], IMAGES_MAGIC)[0]
            n_labels = idx_shape(self.files[labels], LABELS_MAGIC)[0]
            if n_images != n_labels:
                raise DataError(f"mnist: {self.files[images]} holds {n_images} images but "
                                f"{self.files[labels]} holds {n_labels} labels")
            counts[split] = n_images
        return counts

    def splits(self) -> dict[str, int]:
        return dict(self._counts)

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 N x H x W images, uint8 N labels) of one split, loaded on first use."""
        if split not in self._loaded:
            images_name, labels_name = MNIST_FILES[split]
            images = read_idx(self.files[images_name], IMAGES_MAGIC)
            labels = read_idx(self.files[labels_name], LABELS_MAGIC)
            if len(images) != len(labels):
                raise DataError(f"mnist: {self.files[images_name]} holds {len(images)} images but "
                                f"{self.files[labels_name]} holds {len(labels)} labels")
            self._loaded[split] = (images, labels)
        return self._loaded[split]

    def digit(self, split: str, index: int) -> tuple[str, np.ndarray, int]:
        images, labels = self.arrays(split)
        return f"{index:05d}", images[index], int(labels[index])

    def read(self, split: str, index: int) -> Sample:
        key, image, label = self.digit(split, index)
        return Sample(key, Image.fromarray(image, mode="L"), label)

    @staticmethod
    def download(root: Path) -> None:
        from torchvision.datasets import MNIST

        try:
            for train in (True, False):
                MNIST(str(root), train=train, download=True)  # writes ROOT/MNIST/raw
        except Exception as e:  # network and checksum errors come in many types
            raise DataError(f"mnist: download into {root} failed: {e}") from e

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--root", type=Path, required=True, metavar="DIR",
                            help="folder with the idx files (also searched: DIR/raw, DIR/MNIST/raw)")
        parser.add_argument("--download", action="store_true", help="fetch MNIST into DIR/MNIST/raw first")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Mnist":
        if args.download:
            cls.download(args.root)
        return cls(root=args.root)


# ---- MNIST-M --------------------------------------------------------------------------------
MNISTM_SPLITS = ("train", "test")
EMBEDDED = "embedded"  # --backgrounds embedded: dgen.data.sources.digits.EmbeddedPhotos
MNISTM_USAGE = (
    "mnist-m needs either --root DIR with pre-built MNIST-M (mnist_m_train/ + mnist_m_train_labels.txt "
    "and the same for test, or mnist_m_train.pt + mnist_m_test.pt), or --mnist-root DIR (MNIST idx files) "
    "with --backgrounds DIR (e.g. BSDS500 photos, or 'embedded') to build it with the recipe"
)


def _key(stem: str) -> str:
    return stem.replace(".", "_")  # WebDataset splits member names at the first dot


class MnistMFolder:
    """The original distribution: one PNG per digit plus a labels file per split."""

    mode = "prebuilt-png"

    def __init__(self, root: Path):
        self.root = root

    @staticmethod
    def files(split: str) -> list[str]:
        return [f"mnist_m_{split}", f"mnist_m_{split}_labels.txt"]

    @cached_property
    def index(self) -> dict[str, list[tuple[str, int]]]:
        """split -> [(png name, label)] in labels-file order (small, so fine to pickle)."""
        index = {}
        for split in MNISTM_SPLITS:
            path = self.root / f"mnist_m_{split}_labels.txt"
            rows = []
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) != 2 or not parts[1].isdigit() or not 0 <= int(parts[1]) <= 9:
                    raise DataError(f"{path}:{n}: expected 'NAME.png LABEL', got {line!r}")
                rows.append((parts[0], int(parts[1])))
            index[split] = rows
        return index

    def splits(self) -> dict[str, int]:
        return {split: len(rows) for split, rows in self.index.items()}

    def read(self, split: str, index: int) -> Sample:
        name, label = self.index[split][index]
        path = self.root / f"mnist_m_{split}" / name
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")  # convert() loads the pixels, so corruption shows up here
        except (OSError, SyntaxError, ValueError) as e:  # missing file, unknown format, truncated data
            raise UnreadableSample(f"mnist-m: cannot read {path}: {e}") from e
        return Sample(_key(Path(name).stem), image, label)


class MnistMTensors:
    """The torch-saved variant: (uint8 N x 28 x 28 x 3 images, int64 N labels) per split."""

    mode = "prebuilt-pt"

    def __init__(self, root: Path):
        self.root = root
        self._loaded: dict = {}

    @staticmethod
    def files(split: str) -> list[str]:
        return [f"mnist_m_{split}.pt"]

    def __getstate__(self):  # workers load the tensors themselves rather than receive them pickled
        return {**self.__dict__, "_loaded": {}}

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in self._loaded:
            import torch

            path = self.root / f"mnist_m_{split}.pt"
            try:
                try:  # memory-mapped where the file allows it: workers then share the pages
                    data = torch.load(path, weights_only=True, mmap=True)
                except RuntimeError:  # saved in the legacy (non-zip) format
                    data = torch.load(path, weights_only=True)
                images, labels = data
                images, labels = images.numpy(), labels.numpy()
            except Exception as e:  # pickle, zip and unpacking errors all mean the same here
                raise DataError(f"mnist-m: cannot read {path} as (images, labels) tensors: {e}") from e
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 or len(labels) != len(images):
                raise DataError(f"mnist-m: {path} holds images {images.dtype} {tuple(images.shape)} and "
                                f"{len(labels)} labels; expected uint8 N x H x W x 3 and N labels")
            self._loaded[split] = (images, labels)
        return self._loaded[split]

    def splits(self) -> dict[str, int]:
        return {split: len(self.arrays(split)[1]) for split in MNISTM_SPLITS}

    def read(self, split: str, index: int) -> Sample:
        images, labels = self.arrays(split)
        return Sample(f"{index:05d}", Image.fromarray(np.ascontiguousarray(images[index]), mode="RGB"),
                      int(labels[index]))


def find_prebuilt(root: Path) -> MnistMFolder | MnistMTensors:
    """The first complete layout in ROOT, ROOT/mnist_m or ROOT/MNISTM/raw; DataError listing what is missing."""
    folders = [root, root / "mnist_m", root / "MNISTM" / "raw"]
    for layout in (MnistMFolder, MnistMTensors):
        for folder in folders:
            if all((folder / n).exists() for split in MNISTM_SPLITS for n in layout.files(split)):
                return layout(folder)
    # report against the layout that is most nearly present, so the message names the right files
    present = {(layout, folder): sum((folder / n).exists() for s in MNISTM_SPLITS for n in layout.files(s))
               for layout in (MnistMFolder, MnistMTensors) for folder in folders}
    layout, folder = max(present, key=present.get)
    require_files(folder, [n for s in MNISTM_SPLITS for n in layout.files(s)], "mnist-m",
                  ". " + MNISTM_USAGE + "; MNIST-M has no official download")
    raise AssertionError("unreachable: require_files raises when a file is missing")


@register
@dataclass
class MnistM(Source):
    name = "mnist-m"
    help = "MNIST-M: pre-built (--root) or built from MNIST and photos (--mnist-root, --backgrounds), 28x28 RGB"
    default_size = None
    default_channels = 3

    root: Path | None = None  # pre-built MNIST-M
    mnist_root: Path | None = None  # the recipe: MNIST idx files ...
    backgrounds: Path | str | None = None  # ... and a folder of photos, or "embedded"
    seed: int = 0  # recipe only: photo choice and crop position

    def __post_init__(self):
        self.classes = DIGITS
        embedded = self.backgrounds == EMBEDDED
        self.root, self.mnist_root, self.backgrounds = (
            None if p is None else Path(p) for p in (self.root, self.mnist_root, self.backgrounds))
        if embedded:
            self.backgrounds = EMBEDDED
        recipe = self.mnist_root is not None or self.backgrounds is not None
        if self.root is not None and recipe:
            raise DataError(MNISTM_USAGE + ", not both")
        if self.root is not None:
            self.prebuilt = find_prebuilt(self.root)
            self.mode = self.prebuilt.mode
        elif self.mnist_root is not None and self.backgrounds is not None:
            self.mnist = Mnist(self.mnist_root)
            self.photos = EmbeddedPhotos() if self.backgrounds == EMBEDDED else PhotoSet.from_folder(self.backgrounds)
            self.mode = "recipe"
        else:
            raise DataError(MNISTM_USAGE)

    def splits(self) -> dict[str, int]:
        return self.mnist.splits() if self.mode == "recipe" else self.prebuilt.splits()

    def read(self, split: str, index: int) -> Sample:
        if self.mode != "recipe":
            return self.prebuilt.read(split, index)
        key, digit, label = self.mnist.digit(split, index)
        return Sample(key, blend_item(digit, self.photos, self.seed, split, index), label)

    def options(self) -> dict:
        if self.mode != "recipe":
            return {"mode": self.mode}
        if self.backgrounds == EMBEDDED:
            return {"mode": "recipe", "seed": self.seed, "photos": "sklearn+skimage:" + ",".join(EmbeddedPhotos.SKIMAGE)}
        # which photos were used changes the output; their folder's location does not
        names = "\n".join(p.relative_to(self.backgrounds).as_posix() for p in self.photos.paths)
        return {"mode": "recipe", "seed": self.seed, "photos": len(self.photos.paths),
                "photo_names_sha1": hashlib.sha1(names.encode()).hexdigest()[:12]}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--root", type=Path, metavar="DIR", help="pre-built MNIST-M (png folders or .pt files)")
        parser.add_argument("--mnist-root", type=Path, metavar="DIR", help="recipe: MNIST idx files (as for `mnist`)")
        parser.add_argument("--backgrounds", metavar="DIR", help="recipe: folder of photos, e.g. BSDS500's, or "
                            "'embedded': the 7 photos that ship in scikit-learn and scikit-image")
        parser.add_argument("--seed", type=int, default=0, help="recipe: seed of the photo choice and crop position")
        parser.add_argument("--download", action="store_true",
                            help="recipe: fetch MNIST into --mnist-root first (photos and pre-built MNIST-M "
                                 "have no download)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "MnistM":
        if args.download:
            if args.mnist_root is None:
                raise DataError("mnist-m: --download only fetches MNIST for the recipe (--mnist-root); "
                                "pre-built MNIST-M has no official download")
            Mnist.download(args.mnist_root)
        return cls(root=args.root, mnist_root=args.mnist_root, backgrounds=args.backgrounds, seed=args.seed)
