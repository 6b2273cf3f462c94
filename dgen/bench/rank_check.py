"""Do label-free features rank image sets as the labelled classifier's do? The check behind "FID (contrastive
features)" (docs/evaluation.md), on labelled shards whose labels only the reference uses.

    python -m dgen.bench.rank_check --data shards/mnist \\
        --runs runs/mnist/{dcgan,lsgan,mlp-vae,vae,vaegan,wgan,wgan-gp,wgan-aug-4k} --seeds 0 1 2 --json out.json

At each image size the runs were trained at, the sets scored against the test split are: 2,000 real train images,
real images with classes dropped (classes < 8, < 5, < 2: mode dropping), with Gaussian noise (sigma 0.1, 0.3)
and blurred (sigma 0.7), and 2,000 samples of each run. Each set gets FID in the labelled feature classifier's
features and in the features of the contrastive encoder (dgen.eval.contrastive) of each seed, both as runs use
them (same caches). Printed: the table, then per encoder seed Spearman's and Kendall's rank correlation with the
classifier's FIDs, and the pairs the classifier tells apart clearly (FIDs more than 1.5x apart) that the
encoder orders the other way: over the real images and the runs' samples (which generator is better), and over
all sets (which kinds of damage weigh more differ between feature spaces).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF
from scipy.stats import kendalltau, spearmanr

from dgen.data.stream import eval_loader
from dgen.eval.contrastive import load_or_train_feature_encoder
from dgen.eval.fid import FID, load_or_train_feature_classifier

N = 2000
CLEAR = 1.5  # FIDs this many times apart are a clear verdict of the classifier


def real_sets(data: str, size: int) -> dict[str, torch.Tensor]:
    xs, ys = [], []
    for b in eval_loader(data, "train", batch_size=500, image_size=size):
        xs.append(b["image"])
        ys.append(b["label"])
        if sum(map(len, xs)) >= 4 * N:
            break
    x, y = torch.cat(xs), torch.cat(ys)
    g = torch.Generator().manual_seed(0)
    sets = {"real": x[:N]}
    for keep in (8, 5, 2):
        sets[f"classes<{keep}"] = x[y < keep][:N]
    for sigma in (0.1, 0.3):
        sets[f"noise {sigma}"] = (x[:N] + sigma * torch.randn(x[:N].shape, generator=g)).clamp(-1, 1)
    sets["blur 0.7"] = TF.gaussian_blur(x[:N], kernel_size=7, sigma=0.7)
    return sets


@torch.no_grad()
def run_samples(run: Path) -> torch.Tensor:
    from dgen.engine.run import load_generator

    _, method, _ = load_generator(run, "cpu")
    z = method.noise(N, torch.Generator().manual_seed(0))
    return torch.cat([method.sample(c).float() for c in z.split(250)])


def agreement(rows: dict[str, dict[str, float]], name: str, sets: list[str]) -> dict:
    ref, other = [rows[s]["classifier"] for s in sets], [rows[s][name] for s in sets]
    wrong = [(a, b) for a, b in itertools.combinations(sets, 2)
             if max(rows[a]["classifier"], rows[b]["classifier"]) > CLEAR * min(rows[a]["classifier"], rows[b]["classifier"])
             and (rows[a]["classifier"] - rows[b]["classifier"]) * (rows[a][name] - rows[b][name]) < 0]
    return {"spearman": float(spearmanr(ref, other)[0]), "kendall": float(kendalltau(ref, other)[0]),
            "discordant_clear_pairs": wrong}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m dgen.bench.rank_check", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="labelled shards (the runs' dataset)")
    p.add_argument("--runs", nargs="*", default=[], help="run folders trained on --data")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="encoder seeds (default: 0 1 2)")
    p.add_argument("--encoder-steps", type=int, default=800, help="(default: 800, as runs)")
    p.add_argument("--json", help="write the FIDs and the agreement here")
    args = p.parse_args(argv)
    by_size: dict[int, list[Path]] = {}
    for run in map(Path, args.runs):
        by_size.setdefault(json.loads((run / "config.json").read_text())["image_size"], []).append(run)
    out = {}
    for size in sorted(by_size) or [None]:
        clf, _ = load_or_train_feature_classifier(args.data, image_size=size)
        size = clf.image_size
        extractors = {"classifier": clf}
        for seed in args.seeds:
            encoder, acc = load_or_train_feature_encoder(args.data, image_size=size, seed=seed,
                                                         steps=args.encoder_steps)
            extractors[f"encoder s{seed}"] = encoder
            print(f"{size} px: encoder seed {seed}, held-out view accuracy {acc:.3f}", flush=True)
        fids = {k: FID(v, batch_size=500) for k, v in extractors.items()}
        for fid in fids.values():
            fid.real_stats(b["image"] for b in eval_loader(args.data, "test", batch_size=500, image_size=size))
        sets = real_sets(args.data, size)
        sets.update({run.name: run_samples(run) for run in by_size.get(size, [])})
        rows = {}
        print(f"\n{size} px: FID against the test split\n\n| set | images | " + " | ".join(fids) + " |")
        print("|---|---:|" + "---:|" * len(fids))
        for name, x in sets.items():
            rows[name] = {}
            for k, fid in fids.items():
                fid.fake_stats(x.split(500))
                rows[name][k] = fid.score()["fid"]
            print(f"| {name} | {len(x)} | " + " | ".join(f"{v:.2f}" for v in rows[name].values()) + " |", flush=True)
        groups = {"real and generators": ["real", *(run.name for run in by_size.get(size, []))], "all sets": list(rows)}
        agree = {group: {k: agreement(rows, k, sets) for k in fids if k != "classifier"}
                 for group, sets in groups.items() if len(sets) > 2}
        for group, by_encoder in agree.items():
            print(f"\n{size} px, {group}:")
            for k, a in by_encoder.items():
                print(f"  {k}: Spearman {a['spearman']:.3f}, Kendall {a['kendall']:.3f}, clear pairs ordered the "
                      f"other way: {len(a['discordant_clear_pairs'])} {a['discordant_clear_pairs']}")
        out[str(size)] = {"fid": rows, "agreement": agree}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
