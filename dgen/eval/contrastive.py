"""FID features for data without labels: a small encoder dgen trains on the shards' own train split by
contrastive learning ("FID (contrastive features)").

Where the shards have no class labels, the feature classifier of dgen.eval.fid cannot be trained. This
module trains the same network (DigitClassifier: its 128-d layer is the feature space, its head a 64-d
projection) with SimCLR's objective (Chen et al. 2020, arXiv:2002.05709): two random views of each image in a
batch of 256, the NT-Xent loss at temperature 0.5, so that an image's features tell it apart from the others'.
The views are random affine warps (zoom 0.75-1.15, rotation +-20 degrees, shear, shift +-15%) with a contrast
change, drawn per image on the device in one batched warp.

Checked on MNIST without its labels (docs/evaluation.md): these features rank the trained generators of
runs/mnist, and real digits with classes dropped, noised or blurred, as the labelled classifier's features do,
on 2 seeds of the encoder; a rotation-prediction encoder (RotNet) did not. The numbers compare runs on the same
shards with the same encoder (the cache key); they are neither classifier-feature nor Inception FIDs.

    from dgen.eval.contrastive import load_or_train_feature_encoder
    encoder, acc = load_or_train_feature_encoder("shards/faces")   # cached like the classifier
    fid = FID(encoder)                                              # dgen.eval.fid
"""

from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F

from dgen.data.manifest import load_manifest
from dgen.data.stream import eval_loader, train_loader
from dgen.errors import DataError
from dgen.eval.fid import cached_network, check_train_shards, resolve_shape
from dgen.models.classifier import DigitClassifier
from dgen.rng import outside_the_step

log = logging.getLogger(__name__)

PROJECTION = 64  # width of the projection head the loss sees (the features are the 128-d layer below it)
TEMPERATURE = 0.5


def views(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random view of each image of x [B, C, H, W] in [-1, 1]: an affine warp (zoom, rotation, shear, shift;
    what leaves the frame is background, -1) and a contrast change towards the background."""
    n, dev = len(x), x.device

    def uniform(lo, hi, *shape):
        return torch.empty(n, *shape).uniform_(lo, hi, generator=g).to(dev)

    zoom, angle, shear, shift = uniform(0.75, 1.15), uniform(-math.pi / 9, math.pi / 9), uniform(-0.2, 0.2), \
        uniform(-0.15, 0.15, 2)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle) / zoom, (shear - torch.sin(angle)) / zoom
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle) / zoom, torch.cos(angle) / zoom
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    warped = F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros")
    return warped * uniform(0.6, 1.0, 1, 1, 1) - 1


def _similarities(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of projections z [2N, D] whose rows i and i + N are two views of one image, each row's
    own left out (-inf), and the index of each row's partner view."""
    z = F.normalize(z, dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(float("-inf"))
    n = len(z) // 2
    return sim, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)


def nt_xent(z: torch.Tensor) -> torch.Tensor:
    """SimCLR's loss for projections z [2N, D] whose rows i and i + N are two views of one image."""
    sim, partner = _similarities(z)
    return F.cross_entropy(sim / TEMPERATURE, partner)


@torch.no_grad()
def view_accuracy(model: DigitClassifier, data, split: str, *, image_size: int, channels: int, batch_size: int = 256,
                  device="cpu", seed: int = 0) -> float:
    """How often an image's second view is the nearest of the batch's 2B - 1 others to its first: the encoder's
    held-out task accuracy (chance: 1 / (2B - 1))."""
    g = torch.Generator().manual_seed(seed)
    right = total = 0
    for batch in eval_loader(data, split, batch_size=batch_size, image_size=image_size, channels=channels,
                             rank=0, world_size=1):
        x = batch["image"].to(device)
        if len(x) < 2:
            continue
        sim, partner = _similarities(model(torch.cat([views(x, g), views(x, g)])))
        right += int((sim.argmax(1) == partner).sum())
        total += len(partner)
    return right / total if total else float("nan")


def train_feature_encoder(data, *, image_size: int | None = None, channels: int | None = None, steps: int = 800,
                          batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                          device="cpu") -> tuple[DigitClassifier, float]:
    """Train the contrastive encoder on the "train" split of `data` (labels never read) for `steps` Adam steps;
    return it (eval mode, on `device`) with its view accuracy on the "test" split (NaN without one)."""
    manifest = load_manifest(data)
    image_size, channels = resolve_shape(manifest, image_size, channels)
    check_train_shards(data, manifest, "encoder")
    batch_size = min(batch_size, manifest.split("train").samples)  # a small folder: every image in each batch
    if batch_size < 2:
        raise DataError(f"{manifest.dataset!r} has {batch_size} train image(s): the FID feature encoder needs 2 or more")
    stream = train_loader(data, "train", batch_size=batch_size, seed=seed, num_workers=0, image_size=image_size,
                          channels=channels, epoch_batches=steps, rank=0, world_size=1, labels=False,
                          verify=False)  # checked above
    stream.set_epoch(0)
    log.info("training the FID feature encoder (contrastive, no labels) on %s's train split (%d steps, once: "
             "cached afterwards)", manifest.dataset, steps)
    t0 = time.perf_counter()
    with outside_the_step(seed, device):
        g = torch.Generator().manual_seed(seed)
        model = DigitClassifier(channels, image_size, num_classes=PROJECTION).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for batch in stream:
            x = batch["image"].to(device)
            loss = nt_xent(model(torch.cat([views(x, g), views(x, g)])))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    test = manifest.splits.get("test")
    acc = (view_accuracy(model, data, "test", image_size=image_size, channels=channels, device=device, seed=seed)
           if test is not None and test.samples > 1 else float("nan"))
    log.info("feature encoder for %s: %d steps in %.1f s, held-out view accuracy %.4f", manifest.dataset, steps,
             time.perf_counter() - t0, acc)
    return model, acc


def load_or_train_feature_encoder(data, cache_dir=None, *, collective: bool = True,
                                  **kw) -> tuple[DigitClassifier, float]:
    """train_feature_encoder(data, **kw), cached as encoder-<key>.pt beside the feature classifiers, with the same
    key, atomic writes and rank-0-trains-the-others-wait rule (dgen.eval.fid.load_or_train_feature_classifier)."""
    opts = {"steps": 800, "batch_size": 256, "lr": 1e-3, "seed": 0}
    extra = {"projection": PROJECTION, "temperature": TEMPERATURE, "views": "affine-contrast-1"}
    return cached_network(data, "encoder", train_feature_encoder,
                          lambda c, s: DigitClassifier(c, s, num_classes=PROJECTION), opts, extra,
                          cache_dir=cache_dir, collective=collective, **kw)
