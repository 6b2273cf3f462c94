"""Two-domain data for domain adaptation: `--data SOURCE:TARGET`.

    accelerate launch dgen/train.py --model dann --data digits:digits-m      # embedded pair, CPU ok
    accelerate launch dgen/train.py --model dann --data usps:mnist-m         # after `dgen shard usps` etc.
    accelerate launch dgen/train.py --model source-only --data shards/svhn:shards/usps

Each side is a dataset name (SHARDS_ROOT/NAME, embedded ones sharded on first use) or a shard
folder or URL. A method says which domains it trains on (`Method.domains`): "source" (labelled
source only: the lower bound), "target" (labelled target only: the upper bound) or "both"
(labelled source zipped with the *unlabelled* target: DANN, GTA, and any method registered with
`domains = "both"`). For "both" the target's labels are
never decoded, so an unsupervised method cannot use them by mistake: its batches hold "image" and
"label" (source) and "target_image" only. Every method is evaluated on the target's test split.

Both sides are brought to one size and channel count: by default the larger image size of the
two, and RGB if either side is RGB (a grayscale image is repeated over the three channels; seed
002's note on USPS->MNIST-M). `--image-size` and `--channels` override (e.g. `--channels 1`
converts an RGB side to luma, seed 002's trick for MNIST-M->SVHN).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from dgen.data.auto import ensure_shards
from dgen.data.manifest import Manifest, absent_shards, load_manifest
from dgen.data.stream import StreamLoader
from dgen.errors import ConfigError, DataError

# Colons that belong to a location, not between two: "://", a port ("host:8000/"), an IPv6 host's
# ("[::1]"), and the one of a "pipe:" prefix. Every other colon is a candidate SOURCE:TARGET split.
_KEPT = (re.compile(r":(?=//)"), re.compile(r"(?<=://)[^/\s:\[\]]*(:)\d+(?=[/:\s]|$)"),
         re.compile(r"(?<=://\[)[0-9A-Fa-f:.]*\](:)\d+(?=[/:\s]|$)"), re.compile(r"(?:^|(?<=:))pipe(:)"))
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
EXPLICIT = "::"  # --data 'SOURCE::TARGET': the split the user wrote, for strings a single colon leaves ambiguous


def _kept_colons(text: str) -> set[int]:
    kept = {m.start() for m in _KEPT[0].finditer(text)}
    for rx in _KEPT[1:]:
        kept |= {m.start(1) for m in rx.finditer(text)}
    for m in re.finditer(r"\[[^\]]*\]", text):  # inside an IPv6 address
        kept |= {i for i in range(m.start(), m.end()) if text[i] == ":"}
    return kept


def is_location(text: str) -> bool:
    """A dataset name, shard folder, `scheme://host[:port]/path` or `pipe:COMMAND` with {name}, as one string."""
    if not text or text != text.strip():
        return False
    if text.startswith("pipe:"):
        return "{name}" in text and bool(text[5:].strip())
    free = [i for i, c in enumerate(text) if c == ":" and i not in _kept_colons(text)]
    if free:
        return False
    if "://" in text:
        return bool(_URL.fullmatch(text))
    return "{" not in text


def readings(data: str) -> tuple[bool, list[tuple[str, str]]]:
    """(whether `data` reads as one location, every way it reads as SOURCE:TARGET)."""
    brackets = [range(m.start(), m.end()) for m in re.finditer(r"\[[^\]]*\]", data)]  # IPv6 "[::1]" is not one
    written = [i for i in range(len(data) - 1) if data.startswith(EXPLICIT, i) and not any(i in b for b in brackets)]
    if written:  # the split the user wrote wins
        return False, [(data[:i], data[i + 2:]) for i in written[:1]]
    kept = _kept_colons(data)
    pairs = [(data[:i], data[i + 1:]) for i, c in enumerate(data) if c == ":" and i not in kept]
    return is_location(data), [(a, b) for a, b in pairs if is_location(a) and is_location(b)]


def split_pair(data: str, adaptation: bool | None = None) -> tuple[str, str] | None:
    """("usps", "mnist-m") for "usps:mnist-m"; None for one location; DataError if malformed or ambiguous.

    Locations keep their own colons: "http://host:8000/a:pipe:curl -s http://host:8000/b/{name}" is a pair of
    two remote locations. `adaptation` (the model trains on two domains, or not) decides the rare string
    that reads both as one location and as a pair (a pipe: command with a colon in it)."""
    single, pairs = readings(data)
    if len(pairs) > 1 or (single and pairs and adaptation is None):
        ways = [f"{a!r} + {b!r}" for a, b in pairs] + ([f"{data!r} alone"] if single else [])
        raise DataError(f"--data {data!r} reads several ways ({'; '.join(ways)}): write the pair with "
                        f"'{EXPLICIT}' between source and target, e.g. --data 'SOURCE{EXPLICIT}TARGET'")
    if pairs and not (single and adaptation is False):
        if not all(pairs[0]):
            raise DataError(f"--data {data!r}: expected SOURCE:TARGET (two dataset names or shard locations)")
        return pairs[0]
    if single:
        return None
    if EXPLICIT in data:
        raise DataError(f"--data {data!r}: expected SOURCE{EXPLICIT}TARGET (two dataset names or shard locations)")
    raise DataError(f"--data {data!r}: expected a dataset name, shard folder, URL or pipe: command with {{name}}, "
                    "or SOURCE:TARGET (two of them)")


def dataset_name(data: str, adaptation: bool | None = None) -> str:
    """"celeba" for shards/celeba/ (and for http://host:8000/celeba, pipe:... celeba/{name}); "usps:mnist-m"
    for a domain pair (each side's last path part)."""
    pair = split_pair(str(data), adaptation)
    if pair is not None:
        return ":".join(dataset_name(p, False) for p in pair)
    text = str(data).rstrip("/")
    if "{name}" in text:  # a template: the folder part that holds the shards
        text = text.split("{name}")[0].rstrip("/").split()[-1] if text.split("{name}")[0].strip() else text
    return Path(text).name


@dataclass
class DataPlan:
    """Where a run trains and evaluates, and at which image size and channels."""

    train: str  # the labelled training data (the source, or the target for the upper bound)
    target: str | None  # the unlabelled target zipped into training ("both" methods), else None
    eval: str  # the data whose test split is evaluated (the target for domain-adaptation runs)
    eval_split: str | None  # "test" (or "valid"); None when the evaluated data has neither
    source: str | None  # the source of a domain-adaptation run (its test split is reported too)
    manifest: Manifest  # of `train`
    image_size: int
    channels: int

    @property
    def adaptation(self) -> bool:
        return self.source is not None


def plan_data(data: str, shards_root: str, domains: str | None, model: str, image_size: int | None,
              channels: int | None, pair_models: list[str] = ()) -> DataPlan:
    """Resolve --data for a method that trains on `domains` (None: one dataset). Shards embedded
    datasets on first use, so call it on one rank first (`main_process_first`)."""
    pair = split_pair(data, domains is not None)
    if domains is None:
        if pair is not None:
            which = f" ({', '.join(pair_models)})" if pair_models else ""
            raise ConfigError(f"--data {data}: SOURCE:TARGET pairs are for the domain-adaptation models{which}, "
                              f"not {model}")
        location = ensure_shards(data, shards_root)
        manifest = load_manifest(location)
        if manifest.image_size is None and image_size is None:
            raise ConfigError(f"images in {location} vary in size: pass --image-size")
        split = next((s for s in ("test", "valid") if s in manifest.splits), None)
        for name in ("train", split):  # caught here, before the first step, not at the final evaluation
            if name is not None and (name not in manifest.splits or manifest.split(name).samples == 0):
                skipped = manifest.splits[name].skipped if name in manifest.splits else 0
                why = f" (its {skipped} items were unreadable when it was sharded)" if skipped else ""
                raise DataError(f"split {name!r} of {location} holds no samples{why}: a run needs train samples "
                                "and evaluates on the test split; re-shard the data")
        _check_present(location, manifest, ["train", split])
        return DataPlan(location, None, location, split, None, manifest, image_size or manifest.image_size[0],
                        channels or manifest.channels)
    if pair is None:
        raise ConfigError(f"{model} adapts between two domains: pass --data SOURCE:TARGET "
                          f"(e.g. --data digits:digits-m), got --data {data}")
    src, tgt = (ensure_shards(p, shards_root) for p in pair)
    ms, mt = load_manifest(src), load_manifest(tgt)
    for m, loc, side in ((ms, src, "source"), (mt, tgt, "target")):
        if not m.classes:
            raise DataError(f"the {side} {loc} has no class labels: domain adaptation needs labelled classes on "
                            "both sides (the target's are used only to evaluate, and by target-only)")
        if m.image_size is None and image_size is None:
            raise ConfigError(f"images in the {side} {loc} vary in size: pass --image-size")
        for split in ("train", "test"):
            if split not in m.splits or m.split(split).samples == 0:
                raise DataError(f"the {side} {loc} has no {split!r} samples: both domains need a train and a test split")
    if len(ms.classes) != len(mt.classes):
        raise DataError(f"the domains have different classes: source {src} has {len(ms.classes)} "
                        f"({', '.join(ms.classes[:12])}), target {tgt} has {len(mt.classes)} "
                        f"({', '.join(mt.classes[:12])})")
    for m, loc in ((ms, src), (mt, tgt)):
        _check_present(loc, m, ["train", "test"])
    size = image_size or max(ms.image_size[0], mt.image_size[0])
    ch = channels or max(ms.channels, mt.channels)
    train, manifest = (tgt, mt) if domains == "target" else (src, ms)
    return DataPlan(train, tgt if domains == "both" else None, tgt, "test", src, manifest, size, ch)


def _check_present(location: str, manifest: Manifest, splits: list) -> None:
    """Before the first step: every shard the run will read is there, at its size (`absent_shards`); a shard
    lost from the disk would otherwise be found only when a stream reaches it, at an evaluation hours later."""
    absent = absent_shards(location, manifest, [s for s in splits if s])
    if absent:
        more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
        raise DataError(f"{len(absent)} shard(s) of {location} are not as its manifest says: {', '.join(absent[:5])}"
                        f"{more}; restore them (or re-shard the data with `dgen shard`), then start again")


class PairedLoader:
    """A labelled source stream zipped with an unlabelled target stream of the same epoch length:
    batches {"image", "label", "key"} of the source plus {"target_image", "target_key"}."""

    def __init__(self, source: StreamLoader, target: StreamLoader):
        if len(source) != len(target):
            raise DataError(f"paired streams must have equal epochs, got {len(source)} and {len(target)} batches")
        if target.stream.decoder.labelled:
            raise DataError("the target stream of an unsupervised method must not decode labels")
        self.source, self.target = source, target

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.source.set_epoch(epoch, start_batch)
        self.target.set_epoch(epoch, start_batch)

    def __len__(self) -> int:
        return len(self.source)

    def close(self) -> None:
        self.source.close()
        self.target.close()

    def __iter__(self) -> Iterator[dict]:
        for s, t in zip(self.source, self.target):
            yield {**s, "target_image": t["image"], "target_key": t["key"], "skipped": s["skipped"] + t["skipped"]}
