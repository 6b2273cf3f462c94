"""Stream shards into training and evaluation loops, on any number of ranks and workers.

    from dgen.data import train_loader, eval_loader
    train = train_loader("shards/digits", batch_size=64, seed=0, num_workers=2)
    for epoch in range(3):
        train.set_epoch(epoch)
        for batch in train:             # batch["image"]: float32 [B, C, H, W] in [-1, 1]
            ...                         # batch["label"]: int64 [B]; batch["attrs"]: int64 [B, A]
    test = eval_loader("shards/digits", split="test", batch_size=256)

Training streams follow one global sample order (dgen.data.order), a pure function of the seed, the
split's shards and the global batch (batch_size x world_size): global batch K holds the same samples on any
number of ranks and loader workers, each rank takes its slice, and every sample appears once per pass. An
epoch is a fixed number of batches on every rank (by default one pass), so DDP ranks never wait on each
other. `set_epoch(e, start_batch=b)` continues exactly at batch b of epoch e, on any number of workers, and
on any world size that keeps the global batch.

Evaluation streams yield every sample of a split exactly once across all ranks and workers, in a
fixed order. Shards are dealt to the rank x worker slots round-robin; when there are fewer shards
than slots, every slot reads all shards and keeps every (slots)-th sample instead. Ranks may get
different numbers of batches (the last ones are partial), so reduce evaluation results once after
the loop, not per batch.

Bad data: in training, an undecodable sample or an unreadable shard is warned about with its name and
counted, and its samples are replaced by others of the same batch (the run goes on); if none of a batch's
samples can be read the stream fails.
In evaluation any such problem, or a shard holding a different number of samples than the
manifest says, is an error: an evaluation never runs on a silently short split.

The loaders move nothing to devices and are not passed to `accelerator.prepare` (which would read
on rank 0 and broadcast); rank and world size come from torch.distributed or the RANK/WORLD_SIZE
environment variables unless given.
"""

from __future__ import annotations

import atexit
import io
import itertools
import json
import logging
import math
import os
import signal
import weakref
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from dgen.data.images import MODES, npy_image, npy_to_pil
from dgen.data.manifest import Manifest, dataset_location, load_manifest, shard_url
from dgen.data.order import LANES, GlobalOrder
from dgen.data.tarread import shard_samples
from dgen.errors import DataError

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Decoder:
    """Raw tar members -> uint8 image tensors (C x H x W); `collate` makes the float batch. Resizing and
    channel conversion happen here, on request; shards written at the training size skip both."""

    image_size: int | None  # None keeps the stored size
    channels: int | None  # None keeps the stored channels
    labelled: bool
    attributes: tuple[str, ...] | None
    image_format: str = "png"

    def __call__(self, raw: dict) -> dict:
        data = raw.get(self.image_format)
        if data is None:
            raise ValueError(f"sample has no {self.image_format} member")
        out = {"image": self.image(data), "key": raw["__key__"]}
        if self.labelled:
            out["label"] = int(raw["cls"])
        if self.attributes:
            attrs = json.loads(raw["json"])
            out["attrs"] = [int(attrs[a]) for a in self.attributes]
        return out

    def image(self, data: bytes) -> torch.Tensor:
        """Stored image bytes (the decoder's format; png also reads jpg) -> uint8 [C, H, W]."""
        if self.image_format == "npy":
            return self.fit(npy_image(data))
        with Image.open(io.BytesIO(data)) as im:
            return self.fit(im)

    def fit(self, im: Image.Image | np.ndarray) -> torch.Tensor:
        """A PIL image or a uint8 H x W x 1|3 array -> uint8 [C, H, W] in the requested channels (PIL's rules: L -> RGB
        repeats the channel, RGB -> L is luma) and size (bilinear, antialiased)."""
        if isinstance(im, np.ndarray) and self.channels in (None, im.shape[2]):
            img = torch.from_numpy(im.copy()).permute(2, 0, 1)  # a copy: tar bytes and memory maps are read-only
        else:
            if isinstance(im, np.ndarray):
                im = npy_to_pil(im)
            if self.channels is not None and im.mode != MODES[self.channels]:
                im = im.convert(MODES[self.channels])
            arr = np.array(im)  # a writable copy that outlives the file
            img = torch.from_numpy(arr).unsqueeze(0) if arr.ndim == 2 else torch.from_numpy(arr).permute(2, 0, 1)
        if self.image_size is not None and tuple(img.shape[-2:]) != (self.image_size, self.image_size):
            img = TF.resize(img, [self.image_size, self.image_size], antialias=True)
        return img


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1] (any device; once per batch)."""
    return images.float().div_(127.5).sub_(1.0)


def collate(samples: list[dict]) -> dict:
    """A batch with uint8 images: a quarter of float32's bytes through the worker queue and to the GPU;
    the loader (or the trainer, on the device) makes them float."""
    batch = {"image": torch.stack([s["image"] for s in samples]), "key": [s["key"] for s in samples]}
    if "label" in samples[0]:
        batch["label"] = torch.tensor([s["label"] for s in samples], dtype=torch.int64)
    if "attrs" in samples[0]:
        batch["attrs"] = torch.tensor([s["attrs"] for s in samples], dtype=torch.int64)
    return batch


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def _share(total: int, parts: int, i: int) -> int:
    """Part i's share when `total` items are dealt round-robin to `parts` parts."""
    return total // parts + (1 if i < total % parts else 0)


class _LaneShards:
    """A worker's shards in memory: the current one of each lane it reads (a lane reads its shards one after
    another, so the previous one is dropped when the next is needed). A shard that cannot be read whole is
    warned about and counted once per load; the samples it gave before the error still serve."""

    def __init__(self, stream: "ShardStream", wid: int):
        self.stream, self.wid = stream, wid
        self.live: dict[int, tuple[int, list[dict]]] = {}
        self.skipped = 0  # undecodable samples this worker skipped so far, for the warnings

    def sample(self, lane: int, shard: int, pos: int, bad: list[int]) -> dict | None:
        current = self.live.get(lane)
        if current is None or current[0] != shard:
            current = self.live[lane] = (shard, self._load(shard, bad))
        samples = current[1]
        return samples[pos] if pos < len(samples) else None

    def _load(self, shard: int, bad: list[int]) -> list[dict]:
        url, samples = self.stream.urls[shard], []
        try:
            samples.extend(shard_samples(url, self.stream.hashes[shard]))
        except Exception as e:
            bad[1] += 1
            log.warning("unreadable shard %s (%s) after %d samples; its other samples are replaced in their "
                        "batches (rank %d worker %d)", url, e, len(samples), self.stream.rank, self.wid)
        return samples


class ShardStream(IterableDataset):
    """One rank's stream over one split; DataLoader workers split it further among themselves."""

    def __init__(self, urls: list[str], counts: list[int], decoder: Decoder, batch_size: int, *, train: bool,
                 rank: int, world_size: int, seed: int = 0, epoch_batches: int = 0, lanes: int = LANES,
                 num_workers: int = 0, hashes: list[str] | None = None):
        self.urls, self.counts, self.decoder = urls, counts, decoder
        self.hashes = hashes or [None] * len(urls)  # the manifest's sha256 per shard, checked on first read
        self.batch_size, self.train, self.rank, self.world_size = batch_size, train, rank, world_size
        self.seed, self.epoch_batches, self.lanes = seed, epoch_batches, lanes
        self.num_workers = max(1, num_workers)
        self.epoch, self.start_batch = 0, 0

    def __iter__(self) -> Iterator[dict]:
        return self._train() if self.train else self._eval()

    # -- training: the global order, a fixed number of batches ---------------------------------------
    def _train(self) -> Iterator[dict]:
        """This worker's parts of the rank's batches (the samples of its lanes, see dgen.data.order), `workers`
        batches per item: DataLoader takes one item from each worker in turn, and `StreamLoader._joined` makes
        `workers` batches of every `workers` items. An item holds one batch's worth of images in one tensor, so a
        batch costs one shared-memory transfer whatever the worker count (one per part cost a quarter of the
        images/s with 2 workers)."""
        wid, nw = _worker()
        order = GlobalOrder(self.counts, self.seed, self.batch_size * self.world_size, self.lanes)
        shards = _LaneShards(self, wid)
        first = self.epoch * self.epoch_batches
        for k0 in range(self.start_batch, self.epoch_batches, nw):
            parts, images = [], []
            for k in range(k0, min(k0 + nw, self.epoch_batches)):
                part, got = self._part(order, shards, first + k, wid, nw)
                parts.append({**part, "batch": k})
                images += got
            out = {"parts": parts}  # Python lists, pickled with the item; only the images need shared memory
            if images:
                out["image"] = torch.stack([g["image"] for g in images])
                out["key"] = [g["key"] for g in images]
                out.update({name: [g[name] for g in images] for name in ("label", "attrs") if name in images[0]})
            yield out

    def _part(self, order: GlobalOrder, shards: _LaneShards, k: int, wid: int, nw: int) -> tuple[dict, list[dict]]:
        """Worker wid's decoded samples of global batch k, with their places in the rank's batch."""
        shard, pos, lane = (a.tolist() for a in order.part(k, self.rank, self.world_size))
        bad, got, where = [0, 0], [], []
        for i in (range(len(lane)) if nw == 1 else [i for i, n in enumerate(lane) if n % nw == wid]):
            raw = shards.sample(lane[i], shard[i], pos[i], bad)
            if raw is None:
                continue
            try:
                got.append(self.decoder(raw))
            except Exception as e:
                bad[0] += 1
                shards.skipped += 1
                log.warning("skipping undecodable sample %s in %s (%s); %d skipped by rank %d worker %d so far",
                            raw.get("__key__"), raw.get("__url__"), e, shards.skipped, self.rank, wid)
                continue
            where.append(i)
        return {"where": where, "skipped": bad}, got

    # -- evaluation: every sample exactly once ---------------------------------------------------------
    def slot_samples(self, wid: int, nw: int) -> list[tuple[int, list[int] | None]]:
        """(shard index, None = all its samples / list of sample positions) assigned to slot (rank, wid)."""
        slots = self.world_size * nw
        slot = self.rank * nw + wid
        if len(self.urls) >= slots:
            return [(s, None) for s in range(slot, len(self.urls), slots)]
        plan, pos = [], 0
        for s, n in enumerate(self.counts):
            keep = [i for i in range(n) if (pos + i) % slots == slot]
            pos += n
            if keep:
                plan.append((s, keep))
        return plan

    def slot_batches(self, wid: int, nw: int) -> int:
        n = sum(self.counts[s] if keep is None else len(keep) for s, keep in self.slot_samples(wid, nw))
        return math.ceil(n / self.batch_size)

    def _decode_or_fail(self, raw: dict, url: str) -> dict:
        try:
            return self.decoder(raw)
        except Exception as e:
            raise DataError(f"evaluation stream: sample {raw.get('__key__')} in {url} cannot be decoded: {e}") from None

    def _eval(self) -> Iterator[dict]:
        wid, nw = _worker()
        batch = []
        for s, keep in self.slot_samples(wid, nw):
            url, wanted = self.urls[s], set(keep) if keep is not None else None
            n = 0
            try:
                for n, raw in enumerate(shard_samples(url, self.hashes[s]), start=1):
                    if wanted is None or (n - 1) in wanted:
                        batch.append(self._decode_or_fail(raw, url))
                        if len(batch) == self.batch_size:
                            yield collate(batch)
                            batch = []
            except DataError:
                raise
            except Exception as e:
                raise DataError(f"evaluation stream: shard {url} is unreadable after {n} samples: {e}") from None
            if n != self.counts[s]:
                raise DataError(f"evaluation stream: shard {url} holds {n} samples, the manifest says {self.counts[s]}")
        if batch:
            yield collate(batch)


class StreamLoader:
    """A DataLoader over a ShardStream, with the epoch/position and length a training loop needs."""

    def __init__(self, stream: ShardStream, manifest: Manifest, split: str, num_workers: int, pin_memory: bool,
                 uint8: bool = False):
        self.stream, self.manifest, self.split = stream, manifest, split
        self.num_workers, self.pin_memory, self.uint8 = num_workers, pin_memory, uint8
        self._live = None  # the current pass's DataLoader iterator, for close()
        _OPEN.add(self)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if self.stream.train and not 0 <= start_batch <= len(self):
            raise DataError(f"start_batch {start_batch} is outside the epoch of {len(self)} batches")
        self.stream.epoch, self.stream.start_batch = epoch, start_batch

    def __len__(self) -> int:
        """Batches this rank gets per epoch (training: the same on every rank)."""
        if self.stream.train:
            return self.stream.epoch_batches
        nw = max(1, self.num_workers)
        return sum(self.stream.slot_batches(w, nw) for w in range(nw))

    def __iter__(self) -> Iterator[dict]:
        # A fresh DataLoader per pass: non-persistent workers receive the current epoch and position.
        # Its own generator: creating the iterator must not draw from the global torch RNG, or a
        # resumed run (which creates it at another step) would see different training noise.
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                            prefetch_factor=4 if self.num_workers else None, worker_init_fn=_ignore_stop_signals,
                            generator=torch.Generator().manual_seed(0))
        self.close()  # a new pass: the previous one's workers are done with
        self._live = iter(loader)
        batches = self._joined(self._live) if self.stream.train else self._live
        return batches if self.uint8 else map(_float_images, batches)

    def _joined(self, items: Iterator[dict]) -> Iterator[dict]:
        """Training: each batch from one part per worker, in the global order's sequence; samples that could not be
        read are replaced by repeating the batch's others, so every batch has its full size."""
        nw = max(1, self.num_workers)
        while True:
            chunk = list(itertools.islice(items, nw))  # one item per worker: parts of the same batches
            if not chunk:
                return
            split = [_split(item) for item in chunk]
            for j in range(len(chunk[0]["parts"])):
                yield self._join([parts[j] for parts in split])

    def _join(self, group: list[dict]) -> dict:
        size = self.stream.batch_size
        have = [p for p in group if p["where"]]
        if not have:
            k, e = group[0]["batch"], self.stream.epoch
            raise DataError(f"no readable samples for batch {k} of epoch {e} on rank {self.stream.rank}: every "
                            f"shard it needs failed (see the warnings above; the split has {len(self.stream.urls)} "
                            "shards)")
        where = [i for p in have for i in p["where"]]
        names = [name for name in ("label", "attrs") if name in have[0]]
        if len(have) == 1 and where == list(range(size)):  # one worker, nothing missing: as it came
            p = have[0]
            batch = {"image": p["image"], "key": p["key"], **{n: torch.tensor(p[n]) for n in names}}
        elif len(where) == size:  # the workers' lanes interleave: each lane's run copied into its place
            first = have[0]["image"]
            images = torch.empty((size, *first.shape[1:]), dtype=first.dtype, pin_memory=self.pin_memory)
            batch = {"image": images, "key": [None] * size}
            extra = {n: [0] * size for n in names}
            for p in have:
                for j, i, n in _runs(p["where"]):
                    batch["image"][i:i + n] = p["image"][j:j + n]  # a slice: a plain copy, unlike indexing
                for j, i in enumerate(p["where"]):
                    batch["key"][i] = p["key"][j]
                    for n in names:
                        extra[n][i] = p[n][j]
            batch.update({n: torch.tensor(v) for n, v in extra.items()})
        else:  # samples missing: the batch's own again in their places
            pick = torch.argsort(torch.tensor(where))
            pick = pick[torch.arange(size) % len(pick)].tolist()
            images = torch.cat([p["image"] for p in have])
            flat = {n: [v for p in have for v in p[n]] for n in ("key", *names)}
            batch = {"image": images[pick], "key": [flat["key"][i] for i in pick],
                     **{n: torch.tensor([flat[n][i] for i in pick]) for n in names}}
        batch["skipped"] = torch.tensor([sum(p["skipped"][j] for p in group) for j in (0, 1)])
        return batch

    def close(self) -> None:
        """Stop the loader workers now. Left to garbage collection after an error (a full disk, a diverged
        loss), they were joined only at interpreter exit, where that join could hang the process for good."""
        shutdown = getattr(self._live, "_shutdown_workers", None)  # worker processes; nothing to do without them
        if shutdown is not None:
            shutdown()
        self._live = None


def _split(item: dict) -> list[dict]:
    """A worker's item as its parts, each with its own images (views), keys and labels."""
    parts, at = [], 0
    for part in item["parts"]:
        n = len(part["where"])
        mine = {name: item[name][at:at + n] for name in ("image", "key", "label", "attrs") if name in item}
        parts.append({**part, **mine})
        at += n
    return parts


def _runs(where: list[int]) -> Iterator[tuple[int, int, int]]:
    """(start in the part, start in the batch, length) of each run of consecutive places in `where`."""
    start = 0
    for j in range(1, len(where) + 1):
        if j == len(where) or where[j] != where[j - 1] + 1:
            yield start, where[start], j - start
            start = j


def _float_images(batch: dict) -> dict:
    batch["image"] = to_float(batch["image"])
    return batch


# Loaders left open when the interpreter exits (a script that stops iterating, a notebook): their workers ignore
# SIGTERM (below), so multiprocessing's exit handler, which terminates and joins them, would wait for good.
# Registered after torch imported multiprocessing, this handler runs before that one.
_OPEN: "weakref.WeakSet[StreamLoader]" = weakref.WeakSet()
atexit.register(lambda: [loader.close() for loader in list(_OPEN)])


def _ignore_stop_signals(worker_id: int) -> None:
    """Workers leave SIGTERM/SIGUSR1 to the main process, which checkpoints and then shuts them down."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        r, w = rank, world_size
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= r < w:
        raise DataError(f"rank {r} is not in [0, world size {w})")
    return r, w


def _open(data, split, batch_size, image_size, channels, labels: bool = True,
          verify: bool = True) -> tuple[Manifest, list[str], list[int], list[str] | None, Decoder]:
    if batch_size < 1:
        raise DataError(f"batch size must be >= 1, got {batch_size}")
    manifest = load_manifest(data)
    info = manifest.split(split)
    if info.samples == 0:
        raise DataError(f"split {split!r} of {manifest.dataset!r} holds no samples")
    if image_size is None and manifest.image_size is None:
        raise DataError(f"images of {manifest.dataset!r} vary in size; pass image_size to resize them")
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    location = dataset_location(data)
    shards = [sh for sh in info.shards if sh.samples > 0]
    urls = [shard_url(location, sh.name) for sh in shards]
    attributes = tuple(manifest.attributes) if manifest.attributes else None
    if manifest.image_format not in ("png", "jpg", "npy"):
        raise DataError(f"{manifest.dataset}: unsupported image format {manifest.image_format!r} (png, jpg, npy)")
    decoder = Decoder(image_size, channels, labels and manifest.classes is not None, attributes if labels else None,
                      manifest.image_format)
    hashes = [sh.sha256 for sh in shards] if verify else None
    return manifest, urls, [sh.samples for sh in shards], hashes, decoder


def train_loader(data, split: str = "train", *, batch_size: int, seed: int = 0, num_workers: int = 2,
                 image_size: int | None = None, channels: int | None = None, epoch_batches: int | None = None,
                 lanes: int = LANES, rank: int | None = None, world_size: int | None = None,
                 pin_memory: bool = False, labels: bool = True, uint8: bool = False, verify: bool = True) -> StreamLoader:
    """The training stream over `data` (a shard folder, manifest path or remote location) in the global order of
    dgen.data.order: batch k of epoch e is rank `rank`'s part of global batch e * epoch_batches + k, the same
    samples for any number of workers, and for any world size at the same global batch (batch_size x world_size).

    uint8=True: images stay uint8 [B, C, H, W] in 0..255 (the trainer converts them on the device).
    epoch_batches: batches per rank per epoch; default one pass over the split (its samples // global batch).
    lanes: shards read side by side (dgen.data.order); at most the split's number of shards.
    labels=False: never decode labels or attributes (an unsupervised method's target domain).
    verify: check each shard's sha256 against the manifest the first time a process reads it; a mismatch
    counts as an unreadable shard. A sample that cannot be read is replaced by another of its batch; batches
    carry "skipped": [undecodable samples, unreadable shards] since the last.
    """
    manifest, urls, counts, hashes, decoder = _open(data, split, batch_size, image_size, channels, labels, verify)
    rank, world_size = _rank_world(rank, world_size)
    order = GlobalOrder(counts, seed, batch_size * world_size, lanes)  # checks there is a global batch to make
    if epoch_batches is None:
        epoch_batches = order.per_pass
    if epoch_batches < 1:
        raise DataError(f"epoch_batches must be >= 1, got {epoch_batches}")
    stream = ShardStream(urls, counts, decoder, batch_size, train=True, rank=rank, world_size=world_size, seed=seed,
                         epoch_batches=epoch_batches, lanes=lanes, num_workers=num_workers, hashes=hashes)
    return StreamLoader(stream, manifest, split, num_workers, pin_memory, uint8)


def eval_loader(data, split: str = "test", *, batch_size: int, num_workers: int = 0, image_size: int | None = None,
                channels: int | None = None, rank: int | None = None, world_size: int | None = None,
                pin_memory: bool = False, verify: bool = True) -> StreamLoader:
    """Every sample of `split` exactly once across all ranks and workers, in shard order; with `verify`, a shard
    whose sha256 is not the manifest's is an error."""
    manifest, urls, counts, hashes, decoder = _open(data, split, batch_size, image_size, channels, verify=verify)
    rank, world_size = _rank_world(rank, world_size)
    stream = ShardStream(urls, counts, decoder, batch_size, train=False, rank=rank, world_size=world_size,
                         num_workers=num_workers, hashes=hashes)
    return StreamLoader(stream, manifest, split, num_workers, pin_memory)
