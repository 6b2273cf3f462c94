"""The plain DANN script dgen's `dann` is held against: what a researcher writes in 60 lines.

    python -m dgen.bench.plain_dann --seed 0                  # DANN on digits -> digits-m, 1,500 steps
    python -m dgen.bench.plain_dann --seed 0 --source-only    # the same network without the domain head

LeNet-style extractor (conv 5x5 32 + BN + max-pool + ReLU, conv 5x5 48 + BN + dropout 0.5 + max-pool +
ReLU), label head 100-10, domain head 100-2 behind a gradient-reversal layer with coefficient
2/(1+exp(-10p))-1 (Ganin et al. 2016), Adam 1e-3, 64 source + 64 target images a step (the source and the
target through the extractor separately), no augmentation. Data: dgen's own shards, both splits read
into memory once, gray source repeated to 3 channels, 32 px, pixels in [-1, 1]. Prints the target test
accuracy. Nothing of dgen's training code is used: only its shard reader, to get the same pixels.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn


def load(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from dgen.data.auto import ensure_shards
    from dgen.data.stream import eval_loader

    batches = list(eval_loader(ensure_shards(name, "shards"), split, batch_size=512, image_size=32, channels=3))
    return torch.cat([b["image"] for b in batches]), torch.cat([b["label"] for b in batches])


class Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coeff):
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -ctx.coeff * g, None


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--source-only", action="store_true")
    p.add_argument("--source", default="digits")
    p.add_argument("--target", default="digits-m")
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    xs, ys = load(a.source, "train")
    xt, _ = load(a.target, "train")
    xte, yte = load(a.target, "test")

    features = nn.Sequential(
        nn.Conv2d(3, 32, 5), nn.BatchNorm2d(32), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(32, 48, 5), nn.BatchNorm2d(48), nn.Dropout2d(0.5), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten())
    classifier = nn.Sequential(nn.Linear(48 * 5 * 5, 100), nn.ReLU(), nn.Linear(100, 10))
    domain = nn.Sequential(nn.Linear(48 * 5 * 5, 100), nn.ReLU(), nn.Linear(100, 2))
    params = [*features.parameters(), *classifier.parameters(), *domain.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    for step in range(a.steps):
        i, j = torch.randint(len(xs), (64,)), torch.randint(len(xt), (64,))
        fs = features(xs[i])
        loss = F.cross_entropy(classifier(fs), ys[i])
        if not a.source_only:
            coeff = 2 / (1 + math.exp(-10 * step / a.steps)) - 1
            ft = features(xt[j])
            d = domain(Reverse.apply(torch.cat([fs, ft]), coeff))
            loss = loss + F.cross_entropy(d, torch.cat([torch.zeros(64), torch.ones(64)]).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
    features.eval(), classifier.eval()
    with torch.no_grad():
        acc = (classifier(features(xte)).argmax(1) == yte).float().mean().item()
    print(f"{'source-only' if a.source_only else 'dann'} seed {a.seed}: target test accuracy {100 * acc:.2f}%")
    return acc


if __name__ == "__main__":
    main()
