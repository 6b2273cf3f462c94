"""Where a run's data comes from: `--data NAME` means SHARDS_ROOT/NAME; the embedded datasets
(digits, digits-m) are sharded there on first use, so `accelerate launch dgen/train.py --model vae`
works on a fresh machine. Other names must have been sharded with `dgen shard NAME`; a folder path
or URL is used as given.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from dgen.data.manifest import MANIFEST, is_remote
from dgen.errors import DataError

log = logging.getLogger(__name__)

EMBEDDED = {"digits": dict(size=32, channels=1), "digits-m": dict(size=32, channels=3)}


def data_location(data: str, shards_root: str) -> str:
    if is_remote(data) or "/" in data or Path(data).is_dir():
        return data
    return str(Path(shards_root) / data)


def check_data(data: str, shards_root: str) -> str:
    """The location a run would stream from; DataError if there is nothing there and nothing to make."""
    location = data_location(data, shards_root)
    if is_remote(location) or (Path(location) / MANIFEST).is_file():
        return location
    name = Path(location).name
    if name in EMBEDDED and location == str(Path(shards_root) / name):
        return location
    hint = f"shard it first: dgen shard {name} --out {location}" if "/" not in data else "check the path"
    raise DataError(f"no shards at {location} ({hint})")


def ensure_shards(data: str, shards_root: str) -> str:
    """Return the location to stream from, sharding an embedded dataset first if needed. Processes that start
    together (the ranks of a `--dry-run`, two runs) take turns on a lock file: one shards, the others find it."""
    location = check_data(data, shards_root)
    name = Path(location).name
    if not is_remote(location) and not (Path(location) / MANIFEST).is_file():
        import fcntl

        from dgen.data.shard import write_shards
        from dgen.data.sources import get_source

        Path(location).parent.mkdir(parents=True, exist_ok=True)
        with open(f"{location}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
            if not (Path(location) / MANIFEST).is_file():
                opts = EMBEDDED[name]
                source = get_source(name)(size=opts["size"]) if name == "digits-m" else get_source(name)()
                log.info("first use of %s: sharding it into %s (once)", name, location)
                write_shards(source, location, per_shard=500, progress=sys.stderr.isatty(), **opts)
    return location
