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
    real = fid.real_stats(eval_loader("shards/digits", "test", batch_size=256))
    fake = fid.fake_stats(generator_batches)      # iterable of [B, C, H, W] in [-1, 1] (or batch dicts)
    fid.score(real, fake)                         # {"fid": ..., "kid": ..., "kid_std": ...}

Distributed evaluation: give every rank its part of the data (`eval_loader` does that), call
`real_stats` / `fake_stats` on every rank; they merge the statistics across ranks (sums and counts
by all_reduce, KID rows by all_gather), so every rank gets the same score. Every rank must make
these calls, or the collectives hang.

Why not torchmetrics: its FrechetInceptionDistance does accept a custom `feature` module and syncs
its sums across ranks, but its KernelInceptionDistance keeps every feature vector of both sets
(unbounded memory, all gathered to every rank) and it would add a dependency; the statistics here
are ~100 lines, bounded in memory and merged with two plain collectives.

Measured on the sklearn digits shards (32 px gray; train 1437 / test 360), torch 2.14.1 CPU:

    classifier                 test acc   FID train-vs-test   test-vs-blur (sigma 2)   test-vs-uniform-noise
    300 steps of 64 (tests)    0.992      3.0                 110                      2690
    600 steps of 128 (default) 0.994      3.6                 139                      4780

KID is on the same feature scale (unnormalised ReLU features, d = 128), so its values (e.g. 375 for
the blur, 1.3e5 for noise at 300 steps) are not comparable with Inception KIDs either.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

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
def _resolve_shape(manifest, image_size: int | None, channels: int | None) -> tuple[int, int]:
    if image_size is None:
        if manifest.image_size is None or manifest.image_size[0] != manifest.image_size[1]:
            raise DataError(f"images of {manifest.dataset!r} are not one square size "
                            f"({manifest.image_size}); pass image_size")
        image_size = int(manifest.image_size[0])
    return int(image_size), int(channels if channels is not None else manifest.channels)


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
    image_size, channels = _resolve_shape(manifest, image_size, channels)
    # Every train shard must hold the bytes its manifest recorded: the cache is keyed by those hashes, so a
    # classifier trained around a damaged shard would be reused once the shard is repaired.
    location = dataset_location(data)
    for shard in manifest.split("train").shards:
        problem = check_shard(shard_url(location, shard.name), shard.samples, shard.sha256, manifest, decode=False)
        if problem:
            raise DataError(f"the FID feature classifier trains on {manifest.dataset}'s train split, but shard "
                            f"{shard.name} is damaged: {problem} (`dgen verify` lists every damaged shard)")
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


def _default_cache_dir(data) -> Path:
    location = str(data)
    if is_remote(location):
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dgen"
    path = Path(location)
    return (path.parent if path.name == "manifest.json" else path) / ".dgen-cache"


def _is_dist() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def load_or_train_feature_classifier(data, cache_dir=None, **kw) -> tuple[DigitClassifier, float]:
    """train_feature_classifier(data, **kw), cached in `cache_dir` (default `<shards>/.dgen-cache`, or
    ~/.cache/dgen for remote shards) as classifier-<key>.pt (weights + metadata) and .json (metadata).

    The key hashes the dataset name, a sha256 over the train shards' sha256s from the manifest, the image
    size, channels and every training option, so new shards or other options train a new classifier.
    The returned model carries `cache_hit` (bool) and `cache_path`.

    Under torch.distributed every rank must call this: rank 0 loads or trains and writes, the others
    wait at a barrier and load its file (or train the same classifier themselves when the cache folder
    is not shared between nodes).
    """
    device = kw.get("device", "cpu")
    manifest = load_manifest(data)
    image_size, channels = _resolve_shape(manifest, kw.get("image_size"), kw.get("channels"))
    train_sha = hashlib.sha256("".join(sh.sha256 for sh in manifest.split("train").shards).encode()).hexdigest()
    opts = {"steps": 600, "batch_size": 128, "lr": 1e-3, "seed": 0}
    opts.update({k: v for k, v in kw.items() if k in opts})
    meta = {"format": CACHE_FORMAT, "dataset": manifest.dataset, "train_sha256": train_sha,
            "image_size": image_size, "channels": channels, "num_classes": len(manifest.classes or []), **opts}
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else _default_cache_dir(data)
    pt, js = folder / f"classifier-{key}.pt", folder / f"classifier-{key}.json"

    def load() -> tuple[DigitClassifier, float] | None:
        if not pt.is_file():
            return None
        try:
            saved = torch.load(pt, map_location="cpu", weights_only=True)
            if saved["meta"] != meta:
                return None
            model = DigitClassifier(channels, image_size, num_classes=meta["num_classes"])
            model.load_state_dict(saved["state_dict"])
        except Exception as e:  # a damaged cache file is retrained, not fatal
            log.warning("ignoring unreadable classifier cache %s (%s)", pt, e)
            return None
        model.to(device).eval()
        model.cache_hit, model.cache_path = True, pt
        return model, float(saved["accuracy"])

    def load_or_train() -> tuple[DigitClassifier, float]:
        with outside_the_step(opts["seed"], device):  # building the network draws from torch's generator
            got = load()
        if got is not None:
            return got
        model, acc = train_feature_classifier(data, **{**kw, "image_size": image_size, "channels": channels})
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        atomic_write(pt, lambda f: torch.save({"meta": meta, "accuracy": acc, "state_dict": state}, f))
        record = {**meta, "accuracy": acc, "key": key}
        atomic_write(js, lambda f: f.write((json.dumps(record, indent=1) + "\n").encode()))
        model.cache_hit, model.cache_path = False, pt
        return model, acc

    if _is_dist() and torch.distributed.get_world_size() > 1:
        if torch.distributed.get_rank() == 0:
            got = load_or_train()
            torch.distributed.barrier()
            return got
        torch.distributed.barrier()
    return load_or_train()


# -- statistics ---------------------------------------------------------------------------------------
class FeatureStats:
    """Running statistics of feature vectors: sum and sum of outer products (float64) and count for the
    Gaussian fit of FID, plus a uniform random sample of at most `kid_max` rows (reservoir sampling,
    seeded) for KID. Memory is O(D^2 + kid_max * D) whatever the number of images.
    """

    def __init__(self, kid_max: int = 2000, seed: int = 0):
        self.kid_max, self.seed = kid_max, seed
        self.count = 0
        self.sum: torch.Tensor | None = None  # [D] float64
        self.outer: torch.Tensor | None = None  # [D, D] float64
        self.rows = torch.empty(0, 0)  # [<= kid_max, D] float32, on the CPU
        self.merged = False
        self._rng = np.random.default_rng(seed)

    @property
    def dim(self) -> int | None:
        return None if self.sum is None else self.sum.numel()

    def _init(self, dim: int, device) -> None:
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.rows = torch.empty(0, dim)

    def update(self, features: torch.Tensor) -> None:
        """Add [B, D] feature vectors."""
        if self.merged:
            raise RuntimeError("FeatureStats were already merged across ranks; make a new one")
        f = features.detach()
        f = f.flatten(1) if f.ndim > 2 else f
        if f.ndim != 2:
            raise ValueError(f"features must be [B, D], got {tuple(features.shape)}")
        if self.sum is None:
            self._init(f.shape[1], f.device)
        if f.shape[1] != self.dim:
            raise ValueError(f"features have {f.shape[1]} dimensions, earlier ones had {self.dim}")
        f64 = f.to(self.sum.device, torch.float64)
        self.sum += f64.sum(0)
        self.outer += f64.T @ f64
        self._reservoir(f.float().cpu())
        self.count += len(f)

    def _reservoir(self, f: torch.Tensor) -> None:
        """Algorithm R: after n rows, `rows` is a uniform random subset of min(n, kid_max) of them."""
        room = max(0, self.kid_max - len(self.rows))
        if room:
            self.rows = torch.cat([self.rows, f[:room]])
        rest = f[room:]
        if len(rest):
            seen = self.count + room + np.arange(len(rest))  # rows seen before each of `rest`
            slot = self._rng.integers(0, seen + 1)  # row number seen+1 is kept with probability kid_max/(seen+1)
            for i in np.flatnonzero(slot < self.kid_max):  # in arrival order: later rows overwrite earlier
                self.rows[slot[i]] = rest[i]

    def merge_across_ranks(self) -> "FeatureStats":
        """Combine the statistics of all ranks, in place, so every rank holds the same totals. A no-op
        without torch.distributed or once merged. EVERY RANK MUST CALL IT, also ranks that saw no features:
        it runs collectives (all_gather of the counts, all_reduce of the sums, all_gather of the KID rows).

        The KID rows stay a uniform sample of the union: kid_max rows are drawn from all count rows
        without replacement (the same seeded draw on every rank) and each rank's share is taken at
        random from its own reservoir.
        """
        if self.merged or not _is_dist() or torch.distributed.get_world_size() == 1:
            self.merged = True
            return self
        dist = torch.distributed
        world = dist.get_world_size()
        dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        mine = torch.tensor([self.count, len(self.rows), self.dim or 0], dtype=torch.int64, device=dev)
        every = [torch.zeros_like(mine) for _ in range(world)]
        dist.all_gather(every, mine)
        seen, held, dims = ([int(e[k]) for e in every] for k in range(3))
        if len({d for d in dims if d}) > 1:
            raise ValueError(f"ranks hold features of different dimensions: {dims}")
        dim = max(dims)
        if dim == 0:
            raise ValueError("no rank saw any feature vector")
        if self.sum is None:  # this rank saw nothing: it still takes part in every collective
            self._init(dim, "cpu")
        home = self.sum.device
        flat = torch.cat([self.sum.reshape(-1), self.outer.reshape(-1)]).to(dev)
        dist.all_reduce(flat)
        flat = flat.to(home)
        self.sum, self.outer = flat[:dim].clone(), flat[dim:].reshape(dim, dim).clone()
        width = max(held)
        padded = torch.zeros(width, dim)
        padded[:len(self.rows)] = self.rows
        gathered = [torch.zeros(width, dim, device=dev) for _ in range(world)]
        dist.all_gather(gathered, padded.to(dev))
        total = sum(seen)
        rng = np.random.default_rng(self.seed)
        take = min(self.kid_max, total)
        owner = np.searchsorted(np.cumsum(seen), rng.choice(total, take, replace=False), side="right")
        parts = []
        for r in range(world):
            m = int((owner == r).sum())  # <= min(seen[r], kid_max) = held[r]
            pick = rng.choice(held[r], m, replace=False)
            parts.append(gathered[r][:held[r]].cpu()[torch.as_tensor(np.sort(pick), dtype=torch.long)])
        self.rows = torch.cat(parts) if parts else torch.empty(0, dim)
        self.count = total
        self.merged = True
        return self

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean [D] and unbiased covariance [D, D] (divided by count - 1, as np.cov) in float64."""
        if self.count < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, have {self.count}")
        n = self.count
        mu = self.sum / n
        cov = (self.outer - n * torch.outer(mu, mu)) / (n - 1)
        return mu.cpu().numpy(), cov.cpu().numpy()


# -- distances ----------------------------------------------------------------------------------------
def frechet_distance(mu1, cov1, mu2, cov2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2) (Dowson & Landau 1982; Heusel et al. 2017,
    "GANs trained by a two time-scale update rule converge to a local Nash equilibrium"):

        d^2 = ||mu1 - mu2||^2 + Tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2))

    Computed as in pytorch-fid / the TTUR reference: scipy.linalg.sqrtm of the product; if that is not
    finite (near-singular covariances), eps * I is added to both covariances; a small imaginary part
    from numerical error is dropped, a large one (> 1e-3 on the diagonal) is an error.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shapes do not match: mu {mu1.shape} {mu2.shape}, cov {cov1.shape} {cov2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # Dead ReLU units give exactly singular covariances; sqrtm warns but is usually still finite.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        log.warning("frechet_distance: singular product of covariances; adding %g to their diagonals", eps)
        offset = np.eye(len(mu1)) * eps
        covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm")
        covmean = covmean.real
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def kernel_inception_distance(f1, f2, subsets: int = 10, subset_size: int = 500, seed: int = 0) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018, "Demystifying MMD GANs"): the unbiased estimate of MMD^2 with the cubic
    polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over `subsets` random subsets of
    m = min(subset_size, len(f1), len(f2)) rows of each set (drawn without replacement, seeded).
    Returns (mean, std) over the subsets.
    """
    f1 = np.asarray(f1.cpu() if torch.is_tensor(f1) else f1, np.float64)
    f2 = np.asarray(f2.cpu() if torch.is_tensor(f2) else f2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"need two [N, D] feature sets of one D, got {f1.shape} and {f2.shape}")
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError(f"KID needs at least 2 rows in each set, got {len(f1)} and {len(f2)}")
    d = f1.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        values.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                      - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


# -- the metric ---------------------------------------------------------------------------------------
def _images(item) -> torch.Tensor:
    return item["image"] if isinstance(item, dict) else item


class FID:
    """FID and KID in the feature space of `extractor` (an nn.Module with `.features(x) -> [B, D]`).

    Images are expected in [-1, 1], as the classifier was trained. If the extractor declares
    `image_size` / `channels` (DigitClassifier and the Inception extractor do), other images are
    brought to them: bilinear resize (antialiased when shrinking), gray -> RGB by repeating the
    channel, RGB -> gray by the channel mean.
    """

    def __init__(self, extractor: nn.Module, device="cpu", *, batch_size: int | None = None, kid_max: int = 2000,
                 kid_subsets: int = 10, kid_subset_size: int = 500, seed: int = 0):
        self.extractor = extractor.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size  # split incoming batches into chunks of this many (None: as given)
        self.kid_max, self.kid_subsets, self.kid_subset_size, self.seed = kid_max, kid_subsets, kid_subset_size, seed
        self.image_size = getattr(extractor, "image_size", None)
        self.channels = getattr(extractor, "channels", None)

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
    def stats(self, batches: Iterable, merge: bool = True) -> FeatureStats:
        """FeatureStats of the images in `batches` (tensors [B, C, H, W] or batch dicts with "image"),
        merged across ranks when `merge` and torch.distributed is initialized (every rank must call)."""
        out = FeatureStats(self.kid_max, self.seed)
        for item in batches:
            x = _images(item)
            for chunk in (x.split(self.batch_size) if self.batch_size else (x,)):
                out.update(self.extractor.features(self.prepare(chunk)))
        return out.merge_across_ranks() if merge else out

    def real_stats(self, batches: Iterable, merge: bool = True) -> FeatureStats:
        return self.stats(batches, merge)

    def fake_stats(self, images_iter: Iterable, merge: bool = True) -> FeatureStats:
        return self.stats(images_iter, merge)

    def score(self, real: FeatureStats, fake: FeatureStats) -> dict[str, float]:
        fid = frechet_distance(*real.mean_cov(), *fake.mean_cov())
        kid, kid_std = kernel_inception_distance(real.rows, fake.rows, self.kid_subsets, self.kid_subset_size, self.seed)
        return {"fid": fid, "kid": kid, "kid_std": kid_std}


# -- optional Inception features ----------------------------------------------------------------------
class InceptionWeightsNotFound(FileNotFoundError):
    pass


class InceptionFeatures(nn.Module):
    """torchvision's Inception v3 with fc = Identity: [B, 1|3, H, W] in [-1, 1] -> [B, 2048] pool features.
    Gray is repeated to RGB and images are resized to 299 px (bilinear). Inputs stay in [-1, 1], the
    range Google's original weights expect (transform_input=False)."""

    image_size, channels = 299, 3

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
        if tuple(x.shape[-2:]) != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        out = self.net(x)
        return out.logits if hasattr(out, "logits") else out  # in train mode torchvision returns a namedtuple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def inception_extractor(weights_path) -> InceptionFeatures:
    """Inception v3 features from a local torchvision state dict file (e.g. inception_v3_google-0cc3c7bd.pth).
    Numbers made with it are "FID (Inception v3, torchvision weights)": close to, but not the same as,
    the TF-graph Inception of published FIDs."""
    path = Path(weights_path)
    if not path.is_file():
        raise InceptionWeightsNotFound(
            f"Inception weights not found at {path}: dgen never downloads them. Copy torchvision's "
            f"inception_v3_google-0cc3c7bd.pth there, or use the classifier features "
            f"(dgen.eval.fid.load_or_train_feature_classifier) and report 'FID (classifier features)'.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return InceptionFeatures(state)
