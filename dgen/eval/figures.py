"""The documentation's pictures, regenerated from run folders, so they stay true when results change.

    make figures                                            # = the command below
    python -m dgen.eval.figures --runs runs/mnist --out docs/images

RUNS holds the run folders docs/results.md trains (`--out runs/mnist/MODEL` for the generative models,
`--out runs/mnist/METHOD-sSEED` for domain adaptation). Each figure is drawn from the folders it needs and
skipped, with one line saying which folder is missing, when they are absent:

    mnist-samples.png              the top rows of each generative run's fixed-noise samples, titled with its FID
    mnist-gan-fid.png              FID (classifier features) against training step for the GANs
    mnist-vae-reconstructions.png  the VAE's test digits above their reconstructions
    mnist-dann-tsne-domain.png     t-SNE of DANN's features of both test splits, by domain (seed 0)
    mnist-dann-tsne-class.png      the same embedding, by class

PNGs are written with an adaptive 256-colour palette (a few tens of KB each).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dgen.errors import DataError
from dgen.eval.results import sample_figure, summary

GENERATIVE = ("vae", "mlp-vae", "dcgan", "lsgan", "wgan", "wgan-gp", "vaegan")  # the results table's order
GANS = ("dcgan", "lsgan", "wgan", "wgan-gp", "vaegan")
COPIED = {  # figure name: (run folder name, image inside the run's images/)
    "mnist-vae-reconstructions.png": ("vae", "reconstructions.png"),
    "mnist-dann-tsne-domain.png": ("dann-s0", "tsne_domain.png"),
    "mnist-dann-tsne-class.png": ("dann-s0", "tsne_class.png"),
}


def shrink(path: Path, width: int | None = None) -> Path:
    """Rewrite a PNG with an adaptive palette (and at most `width` pixels wide): docs pictures stay small."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
    if width and im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
    im.quantize(colors=256).save(path, optimize=True)
    return path


def fid_curves(runs: list[Path], path: Path) -> Path:
    """FID (classifier features) at each evaluation step, one line per run, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for run in runs:
        model = json.loads((run / "config.json").read_text())["model"]
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        points = [(r["step"], r["test/fid_classifier"]) for r in rows if "test/fid_classifier" in r]
        if not points:
            raise DataError(f"{run}: no FID (classifier features) in metrics.jsonl")
        ax.plot(*zip(*points), marker="o", markersize=3, label=f"{model} ({points[-1][1]:.1f})")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("FID, classifier features")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="model (final FID)", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def make_figures(runs: Path, out: Path) -> tuple[list[Path], list[str]]:
    """Every figure whose runs exist under `runs`; returns (written files, one line per skipped figure)."""
    written, skipped = [], []
    finished = lambda name: (runs / name / "metrics.jsonl").is_file()  # noqa: E731
    generative = [runs / m for m in GENERATIVE if finished(m)]
    if generative:
        written.append(shrink(sample_figure([summary(r) for r in generative], out / "mnist-samples.png")))
    else:
        skipped.append(f"mnist-samples.png: none of {', '.join(GENERATIVE)} in {runs}")
    gans = [runs / m for m in GANS if finished(m)]
    if gans:
        written.append(shrink(fid_curves(gans, out / "mnist-gan-fid.png")))
    else:
        skipped.append(f"mnist-gan-fid.png: none of {', '.join(GANS)} in {runs}")
    for name, (run, image) in COPIED.items():
        src = runs / run / "images" / image
        if not src.is_file():
            skipped.append(f"{name}: no {src}")
            continue
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(src.read_bytes())
        written.append(shrink(out / name, width=560))
    return written, skipped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/mnist", help="folder holding the results page's run folders")
    p.add_argument("--out", default="docs/images", help="where the PNGs go")
    a = p.parse_args(argv)
    runs = Path(a.runs)
    if not runs.is_dir():
        print(f"dgen: error: --runs {runs}: no such folder (train the runs of docs/results.md first)", file=sys.stderr)
        return 2
    try:
        written, skipped = make_figures(runs, Path(a.out))
    except DataError as e:
        print(f"dgen: error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    for line in skipped:
        print(f"skipped {line}")
    return 0 if written else 2


if __name__ == "__main__":
    raise SystemExit(main())
