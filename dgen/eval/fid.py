"""FID and KID in the feature space of a classifier dgen trains itself ("FID (classifier features)").

Inception weights cannot be downloaded where dgen often runs, so the default feature extractor is a
small CNN (`dgen.models.classifier.DigitClassifier`) trained on the labelled train split of the very
shards being evaluated; its 128-d penultimate layer replaces Inception's 2048-d pool features. The
numbers are comparable between runs that use the same classifier (same dataset, manifest, steps and
seed: the cache key below), not with published Inception FIDs. Report them as
"FID (classifier features)", never as FID. Where Inception weights are on disk,
`inception_extractor(path)` gives Inception features instead.

    from dgen.data.stream import eval_loader
    from dgen.eval.fid import FID, load_or_train_feature_classifier
    clf, acc = load_or_train_feature_classifier("shards/digits")   # ~1 min on 2 idle CPU cores, then cached
    fid = FID(clf, device="cpu")
    fid.real_stats(eval_loader("shards/digits", "test", batch_size=256))
    fid.fake_stats(generator_batches)   # iterable of [B, C, H, W] in [-1, 1] (or batch dicts); replaces the last fakes
    fid.score()                         # {"fid": ..., "kid": ..., "kid_std": ...}

torchmetrics computes the scores (FrechetInceptionDistance, and KernelInceptionDistance as `SampledKID`)
from the features dgen extracts, handed over by a pass-through feature module of known width: no Inception
network is built and nothing is downloaded (torch-fidelity is not needed; torchmetrics imports it only where
it is installed). dgen keeps the feature extractor and the preparation of images, feeds features in float64,
and bounds KID's memory: the stock metric keeps every feature row, SampledKID a uniform random sample of at
most `kid_max` rows per set (O(D^2 + kid_max * D) per set whatever the number of images; while compute()
merges the ranks, world_size * kid_max rows). KID draws its subsets with torch's global generator, so
`score` runs it inside dgen.rng.outside_the_step: seeded, and the caller's random state is untouched.

Distributed evaluation: give every rank its part of the data (`eval_loader` does that) and call
`real_stats` / `fake_stats` on every rank with its part; `score` merges the ranks' states (torchmetrics
syncs them in compute), so every image counts once and every rank gets the same score. EVERY RANK MUST
CALL `score`, or the collectives hang.

Measured on the sklearn digits shards (32 px gray; train 1437 / test 360), torch 2.14.1 CPU:

    classifier                 test acc   FID train-vs-test   test-vs-blur (sigma 2)   test-vs-uniform-noise
    300 steps of 64 (tests)    0.992      3.0                 112                      2675
    600 steps of 128 (default) 0.994      3.5                 139                      4780

KID is on the same feature scale (unnormalised ReLU features, d = 128), so its values (e.g. 387 for
the blur, 1.3e5 for noise at 300 steps) are not comparable with Inception KIDs either.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from dgen.atomic import atomic_write
from dgen.data.manifest import dataset_location, is_remote, load_manifest, shard_url
from dgen.data.stream import eval_loader, train_loader
from dgen.data.verify import check_shard
from dgen.errors import DataError
from dgen.models.classifier import DigitClassifier
from dgen.rng import outside_the_step

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the classifier architecture or its training changes


# -- the feature classifier ---------------------------------------------------------------------------
def resolve_shape(manifest, image_size: int | None, channels: int | None) -> tuple[int, int]:
    if image_size is None:
        if manifest.image_size is None or manifest.image_size[0] != manifest.image_size[1]:
            raise DataError(f"images of {manifest.dataset!r} are not one square size "
                            f"({manifest.image_size}); pass image_size")
        image_size = int(manifest.image_size[0])
    return int(image_size), int(channels if channels is not None else manifest.channels)


def feature_image_shape(data, image_size: int | None = None) -> tuple[int, int]:
    """(image size, channels) of the feature classifier for `data` at `image_size` (default: the manifest's square
    size) in the manifest's channels: what a run on `data` at that size uses."""
    return resolve_shape(load_manifest(data), image_size, None)


@torch.no_grad()
def classifier_accuracy(model: nn.Module, data, split: str = "test", *, image_size: int, channels: int,
                        batch_size: int = 256, device="cpu") -> float:
    """Top-1 accuracy of `model` on every sample of `split` (one process)."""
    model.eval()
    right = total = 0
    for batch in eval_loader(data, split, batch_size=batch_size, num_workers=0, image_size=image_size,
                             channels=channels, rank=0, world_size=1):
        pred = model(batch["image"].to(device)).argmax(1).cpu()
        right += int((pred == batch["label"]).sum())
        total += len(pred)
    return right / total


def train_feature_classifier(data, *, image_size: int | None = None, channels: int | None = None, steps: int = 600,
                             batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                             device="cpu") -> tuple[DigitClassifier, float]:
    """Train a DigitClassifier on the "train" split of `data` for `steps` Adam steps; return it (in eval
    mode, on `device`) with its accuracy on the "test" split (NaN if the shards have no test split).

    Deterministic for a seed on a given device: initial weights and dropout draw from generators seeded
    with `seed` (dgen.rng.outside_the_step: the caller's random state is untouched) and the stream comes
    from train_loader(seed=seed), read in this process only (rank 0 of 1, no workers).
    """
    manifest = load_manifest(data)
    if manifest.classes is None:
        raise DataError(f"{manifest.dataset!r} has no labels: the feature classifier needs a labelled dataset")
    image_size, channels = resolve_shape(manifest, image_size, channels)
    check_train_shards(data, manifest, "classifier")
    batch_size = min(batch_size, max(1, manifest.split("train").samples))  # a small folder: all of it in each batch
    stream = train_loader(data, "train", batch_size=batch_size, seed=seed, num_workers=0, image_size=image_size,
                          channels=channels, epoch_batches=steps, rank=0, world_size=1, verify=False)  # checked above
    stream.set_epoch(0)
    log.info("training the FID feature classifier on %s's train split (%d steps, once: cached afterwards)",
             manifest.dataset, steps)
    t0 = time.perf_counter()
    with outside_the_step(seed, device):
        model = DigitClassifier(channels, image_size, num_classes=len(manifest.classes)).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for batch in stream:
            loss = F.cross_entropy(model(batch["image"].to(device)), batch["label"].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    if "test" in manifest.splits and manifest.splits["test"].samples > 0:
        acc = classifier_accuracy(model, data, "test", image_size=image_size, channels=channels, device=device)
    else:
        log.warning("%s has no test split: the feature classifier's accuracy is unknown", manifest.dataset)
        acc = float("nan")
    log.info("feature classifier for %s: %d steps in %.1f s, test accuracy %.4f", manifest.dataset, steps,
             time.perf_counter() - t0, acc)
    return model, acc


def check_train_shards(data, manifest, network: str) -> None:
    """Every train shard must hold the bytes its manifest recorded: the caches are keyed by those hashes, so a
    feature network trained around a damaged shard would be reused once the shard is repaired."""
    location = dataset_location(data)
    for shard in manifest.split("train").shards:
        problem = check_shard(shard_url(location, shard.name), shard.samples, shard.sha256, manifest, decode=False)
        if problem:
            raise DataError(f"the FID feature {network} trains on {manifest.dataset}'s train split, but shard "
                            f"{shard.name} is damaged: {problem} (`dgen verify` lists every damaged shard)")


def default_cache_dir(data) -> Path:
    """DGEN_CACHE_DIR if set (e.g. a folder every node of a cluster shares); else next to local shards, or the
    user's cache for remote ones (each node trains its own there, the same bytes: the key fixes every input)."""
    if os.environ.get("DGEN_CACHE_DIR"):
        return Path(os.environ["DGEN_CACHE_DIR"])
    location = str(data)
    if is_remote(location):
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dgen"
    path = Path(location)
    return (path.parent if path.name == "manifest.json" else path) / ".dgen-cache"


def _is_dist() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def load_or_train_feature_classifier(data, cache_dir=None, *, collective: bool = True,
                                     **kw) -> tuple[DigitClassifier, float]:
    """train_feature_classifier(data, **kw), cached in `cache_dir` (default: DGEN_CACHE_DIR, else
    `<shards>/.dgen-cache`, or ~/.cache/dgen for remote shards) as classifier-<key>.pt (weights + metadata) and
    .json (metadata), each written to a temporary file and renamed, so processes sharing the folder never read
    a partial file.

    The key hashes the dataset name, a sha256 over the train shards' sha256s from the manifest, the image
    size, channels and every training option, so new shards or other options train a new classifier.
    The returned model carries `cache_hit` (bool) and `cache_path`.

    Under torch.distributed every rank must call this: rank 0 loads or trains and writes, the others
    wait at a barrier and load its file (or train the same classifier themselves when the cache folder
    is not shared between nodes). `collective=False`: one process alone (e.g. the report on the main
    process), no barrier; it loads the cache or trains in that process.
    """
    manifest = load_manifest(data)
    opts = {"steps": 600, "batch_size": 128, "lr": 1e-3, "seed": 0}
    extra = {"num_classes": len(manifest.classes or [])}
    return cached_network(data, "classifier", train_feature_classifier, lambda c, s: DigitClassifier(c, s, **extra),
                          opts, extra, cache_dir=cache_dir, collective=collective, **kw)


def cached_network(data, kind: str, train, build, opts: dict, extra: dict, *, cache_dir=None, collective: bool = True,
                   **kw) -> tuple[nn.Module, float]:
    """The cache of load_or_train_feature_classifier for any feature network: `kind` names the files
    (<kind>-<key>.pt/.json), `train(data, **kw)` returns (model, a quality figure), `build(channels, image_size)`
    an untrained model to load the weights into; `opts` are train's options with their defaults and `extra` other
    facts of the model, all part of the key."""
    device = kw.get("device", "cpu")
    manifest = load_manifest(data)
    image_size, channels = resolve_shape(manifest, kw.get("image_size"), kw.get("channels"))
    train_sha = hashlib.sha256("".join(sh.sha256 for sh in manifest.split("train").shards).encode()).hexdigest()
    opts = {**opts, **{k: v for k, v in kw.items() if k in opts}}
    meta = {"format": CACHE_FORMAT, "kind": kind, "dataset": manifest.dataset, "train_sha256": train_sha,
            "image_size": image_size, "channels": channels, **extra, **opts}
    if kind == "classifier":  # the key of the caches written before there were other kinds
        del meta["kind"]
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir(data)
    pt, js = folder / f"{kind}-{key}.pt", folder / f"{kind}-{key}.json"

    def load() -> tuple[nn.Module, float] | None:
        if not pt.is_file():
            return None
        try:
            saved = torch.load(pt, map_location="cpu", weights_only=True)
            if saved["meta"] != meta:
                return None
            model = build(channels, image_size)
            model.load_state_dict(saved["state_dict"])
        except Exception as e:  # a damaged cache file is retrained, not fatal
            log.warning("ignoring unreadable %s cache %s (%s)", kind, pt, e)
            return None
        model.to(device).eval()
        model.cache_hit, model.cache_path = True, pt
        return model, float(saved["accuracy"])

    def load_or_train() -> tuple[nn.Module, float]:
        with outside_the_step(opts["seed"], device):  # building the network draws from torch's generator
            got = load()
        if got is not None:
            return got
        model, acc = train(data, **{**kw, "image_size": image_size, "channels": channels})
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        atomic_write(pt, lambda f: torch.save({"meta": meta, "accuracy": acc, "state_dict": state}, f))
        record = {**meta, "accuracy": acc, "key": key}
        atomic_write(js, lambda f: f.write((json.dumps(record, indent=1) + "\n").encode()))
        model.cache_hit, model.cache_path = False, pt
        return model, acc

    if collective and _is_dist() and torch.distributed.get_world_size() > 1:
        if torch.distributed.get_rank() == 0:
            got = load_or_train()
            torch.distributed.barrier()
            return got
        torch.distributed.barrier()
    return load_or_train()


# -- the metric ---------------------------------------------------------------------------------------
class _Given(nn.Module):
    """torchmetrics' feature module: the features FID extracted, passed on as they are, so the extractor runs
    once per image rather than once in each metric. `num_features` spares torchmetrics its probe of the module
    (a forward pass of a random 299 px image drawn from torch's global generator)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class SampledKID(KernelInceptionDistance):
    """torchmetrics' KID on a uniform random sample of at most `kid_max` feature rows per set (the stock metric
    keeps every row). Each row gets a random key and a set keeps the rows of its kid_max smallest keys: on each
    rank as rows arrive, and in compute() again over the rows gathered from every rank. The kid_max smallest keys
    of all rows are among the ranks' kid_max smallest, so the sample is uniform over all ranks' rows however
    unevenly they were fed. Keys come from generators of (seed, rank, set), never from torch's global one; the
    fake set's restarts at each reset, so the same fakes give the same sample. The real set survives reset()
    (reset_real_features=False). Subsets have min(subset_size, both sample sizes) rows.
    """

    def __init__(self, num_features: int, *, kid_max: int, subsets: int, subset_size: int, seed: int):
        with warnings.catch_warnings():  # "will save all extracted features": not this subclass
            warnings.filterwarnings("ignore", "Metric `Kernel Inception Distance` will save all")
            super().__init__(_Given(num_features), subsets=subsets, subset_size=subset_size, reset_real_features=False)
        self.kid_max, self.max_subset_size, self.seed = kid_max, subset_size, seed
        self.add_state("real_keys", [], dist_reduce_fx=None)  # one tensor per rank, as the rows
        self.add_state("fake_keys", [], dist_reduce_fx=None)
        self._keys = {True: self._generator(True), False: self._generator(False)}

    def _generator(self, real: bool) -> torch.Generator:
        rank = torch.distributed.get_rank() if _is_dist() else 0
        return torch.Generator().manual_seed((self.seed * 1_000_003 + rank) * 2 + real)

    def _states(self, real: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return (self.real_features, self.real_keys) if real else (self.fake_features, self.fake_keys)

    def _smallest(self, rows: list[torch.Tensor], keys: list[torch.Tensor]) -> tuple[list, list]:
        """The rows of the kid_max smallest keys as one tensor (and their keys), in arrival order (ranks in order)."""
        rows, keys = torch.cat(rows), torch.cat(keys)
        keep = keys.topk(min(self.kid_max, len(keys)), largest=False).indices.sort().values
        return [rows[keep]], [keys[keep]]

    def update(self, features: torch.Tensor, real: bool) -> None:
        rows, keys = self._states(real)
        new = torch.rand(len(features), generator=self._keys[real], dtype=torch.float64).to(features.device)
        rows[:], keys[:] = self._smallest([*rows, features], [*keys, new])

    def sample(self, real: bool) -> torch.Tensor:
        """The set's sample [<= kid_max, D]: this rank's, or every rank's once synced (as inside compute)."""
        rows, keys = self._states(real)
        rows[:], keys[:] = self._smallest(rows, keys)
        return rows[0]

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """KID's (mean, std) over the samples, merged across ranks by the sync that wraps this."""
        self.subset_size = min(self.max_subset_size, len(self.sample(True)), len(self.sample(False)))
        return super().compute()

    def reset(self) -> None:
        default = self._defaults.pop("real_keys")  # kept with the real rows, as KernelInceptionDistance does
        super().reset()
        self._defaults["real_keys"] = default
        self._keys[False] = self._generator(False)


def _images(item) -> torch.Tensor:
    return item["image"] if isinstance(item, dict) else item


_FID_REAL = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")


class FID:
    """FID and KID between a real and a fake image set in the feature space of `extractor` (an nn.Module with
    `.features(x) -> [B, feature_dim]` and `feature_dim`), computed by torchmetrics.

    Images are expected in [-1, 1], as the classifier was trained. If the extractor declares
    `image_size` / `channels` (DigitClassifier and the Inception extractor do), other images are
    brought to them: bilinear resize (antialiased when shrinking), gray -> RGB by repeating the
    channel, RGB -> gray by the channel mean. Features are float64: torchmetrics sums them in float64
    anyway, and KID's cubic kernel on unnormalised ReLU features would lose digits in float32.
    """

    def __init__(self, extractor: nn.Module, device="cpu", *, batch_size: int | None = None, kid_max: int = 2000,
                 kid_subsets: int = 10, kid_subset_size: int = 500, seed: int = 0):
        self.extractor = extractor.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size  # split incoming batches into chunks of this many (None: as given)
        self.kid_max, self.kid_subsets, self.kid_subset_size, self.seed = kid_max, kid_subsets, kid_subset_size, seed
        self.image_size = getattr(extractor, "image_size", None)
        self.channels = getattr(extractor, "channels", None)
        self.fid: FrechetInceptionDistance | None = None  # both built by real_stats
        self.kid: SampledKID | None = None

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, torch.float32)
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if self.channels is not None and x.shape[1] != self.channels:
            if x.shape[1] == 1:
                x = x.expand(-1, self.channels, -1, -1)
            elif self.channels == 1:
                x = x.mean(1, keepdim=True)
            else:
                raise ValueError(f"cannot convert {x.shape[1]} channels to {self.channels}")
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            shrink = min(x.shape[-2:]) > self.image_size
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=shrink)
        return x

    @torch.no_grad()
    def _features(self, batches: Iterable) -> Iterator[torch.Tensor]:
        """[B, D] float64 features of the images in `batches`, chunk by chunk."""
        for item in batches:
            x = _images(item)
            for chunk in (x.split(self.batch_size) if self.batch_size else (x,)):
                yield self.extractor.features(self.prepare(chunk)).flatten(1).double()

    def _feed(self, batches: Iterable, real: bool) -> None:
        # An empty batch first: every rank then holds every state, one tensor per KID state, also a rank given no
        # images (compute's all_gather needs as many tensors on each rank).
        empty = torch.empty(0, self.extractor.feature_dim, dtype=torch.float64, device=self.device)
        for f in itertools.chain([empty], self._features(batches)):
            self.fid.update(f, real=real)
            self.kid.update(f, real=real)

    def real_stats(self, batches: Iterable) -> None:
        """Take this rank's share of the real images (tensors [B, C, H, W] or batch dicts with "image") as the
        real set, replacing the previous real and fake sets."""
        dim = self.extractor.feature_dim
        self.fid = FrechetInceptionDistance(_Given(dim), reset_real_features=False).to(self.device)
        self.kid = SampledKID(dim, kid_max=self.kid_max, subsets=self.kid_subsets,
                              subset_size=self.kid_subset_size, seed=self.seed).to(self.device)
        self._feed(batches, real=True)

    def real_state(self) -> dict:
        """The real set's statistics merged over the ranks, on the CPU, for a cache (EVERY RANK MUST CALL IT)."""
        with self.fid.sync_context():
            fid = {k: getattr(self.fid, k).detach().cpu().clone() for k in _FID_REAL}
        with self.kid.sync_context():
            rows = self.kid.sample(True).detach().cpu().clone()
            keys = self.kid.real_keys[0].detach().cpu().clone()
        return {"fid": fid, "kid_rows": rows, "kid_keys": keys}

    def load_real_state(self, state: dict, *, holder: bool = True) -> None:
        """Take a real_state() as the real set: on one process (`holder`; the others hold nothing, and the ranks'
        states merge as usual), replacing the previous real and fake sets."""
        self.real_stats([])
        if holder:
            for k in _FID_REAL:
                setattr(self.fid, k, state["fid"][k].to(self.device))
            self.kid.real_features[:] = [state["kid_rows"].to(self.device)]
            self.kid.real_keys[:] = [state["kid_keys"].to(self.device)]

    def fake_stats(self, batches: Iterable) -> None:
        """Take this rank's share of the fake images as the fake set, replacing the previous one."""
        if self.fid is None:
            raise RuntimeError("FID.fake_stats before real_stats")
        self.fid.reset()
        self.kid.reset()
        self._feed(batches, real=False)

    def score(self) -> dict[str, float]:
        """{"fid", "kid", "kid_std"} of the real against the fake set. EVERY RANK MUST CALL IT: torchmetrics merges
        the ranks' states here (all_gather), so every rank gets the same numbers. KID's subsets are drawn from
        torch's generator seeded with `seed` inside outside_the_step: the caller's random state is untouched."""
        fid = float(self.fid.compute())
        with outside_the_step(self.seed, self.device):
            kid, kid_std = self.kid.compute()
        return {"fid": fid, "kid": float(kid), "kid_std": float(kid_std)}


# -- optional Inception features ----------------------------------------------------------------------
class InceptionWeightsNotFound(FileNotFoundError):
    pass


class InceptionFeatures(nn.Module):
    """torchvision's Inception v3 with fc = Identity: [B, 1|3, H, W] in [-1, 1] -> [B, 2048] pool features.
    Prepared as dgen.eval.inception says: quantised to 8 bits, resized to 299 px by antialiased bicubic
    interpolation (clean-fid's PIL-style resize), fed in [-1, 1] (Google's weights, transform_input=False).
    Gray is repeated to RGB (by FID.prepare, from `channels`); FID leaves the resize to `features`."""

    image_size, channels, feature_dim, input_size = None, 3, 2048, 299

    def __init__(self, state_dict: dict | None = None):
        super().__init__()
        from torchvision.models import inception_v3

        self.net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        if state_dict is not None:
            self.net.load_state_dict(state_dict)
        self.net.fc = nn.Identity()
        self.eval()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = ((x + 1) * 127.5).round_().clamp_(0, 255)  # the 8-bit image
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = TF.resize(x, [self.input_size, self.input_size], interpolation=InterpolationMode.BICUBIC,
                          antialias=True)
        out = self.net(x / 127.5 - 1)
        return out.logits if hasattr(out, "logits") else out  # in train mode torchvision returns a namedtuple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def inception_extractor(weights_path) -> InceptionFeatures:
    """Inception v3 features from a local torchvision state dict file (e.g. inception_v3_google-0cc3c7bd.pth;
    dgen.eval.inception.find_weights finds or fetches it). Numbers made with it are "FID (Inception v3,
    torchvision weights)": close to, but not the same as, the TF-graph Inception of published FIDs."""
    path = Path(weights_path)
    if not path.is_file():
        raise InceptionWeightsNotFound(
            f"Inception weights not found at {path}. Copy torchvision's inception_v3_google-0cc3c7bd.pth there, "
            f"or leave --inception-weights out: dgen then uses the copy in torch's hub cache, or fetches it there.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return InceptionFeatures(state)
