"""`manifest.json`: what a shard folder holds, and where its shards live.

One folder per dataset: `{split}-NNNNNN.tar` plus `manifest.json` with the dataset, the reader's
version and options, image size and channels, class and attribute names, and per split the sample
count and every shard's name, sample count and sha256. The manifest is the source of truth: the
stream reads only the shards it lists, and `dgen verify` checks them against it.

A location is a local folder, or a remote prefix the stream opens with WebDataset's `gopen`:
`https://host/shards/mnist` (shards at `.../mnist/train-000000.tar`) or a template with `{name}`,
e.g. `pipe:aws s3 cp s3://bucket/mnist/{name} -`, for any command that writes a file to stdout.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dgen.atomic import atomic_write_text
from dgen.errors import DataError

FORMAT = "dgen-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


@dataclass
class ShardInfo:
    name: str
    samples: int
    sha256: str
    bytes: int | None = None  # the file's size (manifests written before dgen recorded it have None)


@dataclass
class SplitInfo:
    samples: int
    shards: list[ShardInfo]
    skipped: int = 0  # source items that could not be read (see `skipped_keys`)
    skipped_keys: list[str] = field(default_factory=list)  # first 100, with the reason


@dataclass
class Manifest:
    dataset: str
    version: str  # the reader's version: bumped when its output changes for the same input
    channels: int
    image_size: list[int] | None  # [height, width] shared by every image, None if sizes vary
    image_format: str
    samples_per_shard: int
    classes: list[str] | None
    attributes: list[str] | None
    options: dict
    splits: dict[str, SplitInfo]
    part: list[int] | None = None  # [I, N] in a part manifest written by `dgen shard --part I/N`
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    # -- serialisation ------------------------------------------------------------------------
    def to_json(self) -> str:
        d = asdict(self)
        if d["part"] is None:
            del d["part"]
        return json.dumps(d, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "manifest") -> "Manifest":
        try:
            d = json.loads(text)
            if d.get("format") != FORMAT:
                raise DataError(f"{where} is not a dgen shard manifest (format {d.get('format')!r})")
            if d.get("format_version") != FORMAT_VERSION:
                raise DataError(f"{where}: unsupported manifest format_version {d.get('format_version')}")
            d["splits"] = {
                name: SplitInfo(**{**s, "shards": [ShardInfo(**sh) for sh in s["shards"]]})
                for name, s in d["splits"].items()
            }
            m = cls(**d)
        except (ValueError, TypeError, KeyError) as e:
            raise DataError(f"{where} is malformed: {e}") from None
        m.check_counts(where)
        return m

    def check_counts(self, where: str = "manifest") -> None:
        for name, s in self.splits.items():
            total = sum(sh.samples for sh in s.shards)
            if total != s.samples:
                raise DataError(f"{where}: split {name!r} says {s.samples} samples but its shards hold {total}")

    def save(self, folder: Path, name: str = MANIFEST) -> Path:
        return atomic_write_text(Path(folder) / name, self.to_json())

    # -- access ----------------------------------------------------------------------------------
    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            raise DataError(f"dataset {self.dataset!r} has no split {name!r} (it has {', '.join(self.splits)})")
        return self.splits[name]


# -- locations --------------------------------------------------------------------------------------
def is_remote(location: str) -> bool:
    return location.startswith("pipe:") or "://" in location


def shard_url(location: str | Path, name: str) -> str:
    """Where shard (or manifest) `name` of the dataset at `location` is read from."""
    location = str(location)
    if "{name}" in location:
        return location.replace("{name}", name)
    if location.startswith("pipe:"):
        raise DataError(f"a pipe: location needs a {{name}} placeholder for the file name: {location!r}")
    if is_remote(location):
        return location.rstrip("/") + "/" + name
    return str(Path(location) / name)


def load_manifest(location: str | Path) -> Manifest:
    """Read the manifest of a shard folder, a manifest.json path, or a remote location."""
    location = str(location)
    if is_remote(location):
        from dgen.data.remote import fetch

        url = shard_url(location, MANIFEST)
        try:
            text = fetch(url).decode()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read the manifest at {url}: {e}") from None
        return Manifest.from_json(text, url)
    path = Path(location)
    if path.name == MANIFEST and path.is_file():
        path = path.parent
    if not path.is_dir():
        raise DataError(f"shard folder {path} does not exist (create it with `dgen shard SOURCE --out {path}`)")
    file = path / MANIFEST
    if not file.is_file():
        parts = sorted(path.glob("manifest.part-*.json"))
        hint = f"; it holds {len(parts)} part manifests: run `dgen merge {path}`" if parts else ""
        raise DataError(f"{file} does not exist{hint}")
    return Manifest.from_json(file.read_text(), str(file))


def dataset_location(location: str | Path) -> str:
    """The folder/prefix shards are resolved against (a manifest.json path means its folder)."""
    location = str(location)
    if not is_remote(location) and Path(location).name == MANIFEST:
        return str(Path(location).parent)
    return location


def absent_shards(location: str | Path, manifest: Manifest, splits: list[str]) -> list[str]:
    """One line per shard of `splits` that is not where the manifest says, or not of its recorded size: local
    files by stat, http(s) ones by a HEAD request (16 at a time); `pipe:` commands cannot be asked cheaply and
    are left to the sha256 check when they are read."""
    location = str(dataset_location(location))
    shards = [sh for split in dict.fromkeys(splits) if split in manifest.splits
              for sh in manifest.splits[split].shards if sh.samples > 0]
    if location.startswith("pipe:"):
        return []

    def problem(sh: ShardInfo) -> str | None:
        url = shard_url(location, sh.name)
        if is_remote(url):
            from dgen.data.remote import head_size

            try:
                size = head_size(url)
            except OSError as e:
                return f"{sh.name} ({e})"
        else:
            try:
                size = Path(url).stat().st_size
            except FileNotFoundError:
                return f"{sh.name} (missing)"
            except OSError as e:
                return f"{sh.name} ({e.strerror})"
        if sh.bytes is not None and size is not None and size != sh.bytes:
            return f"{sh.name} ({size:,} bytes, the manifest says {sh.bytes:,})"
        return None

    if is_remote(location):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(16) as pool:
            found = list(pool.map(problem, shards))
    else:
        found = [problem(sh) for sh in shards]
    return [p for p in found if p]
