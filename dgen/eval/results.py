"""The results pages' tables and figures, regenerated from run folders (docs/results.md says which runs).

    python -m dgen.eval.results --runs runs/mnist/{vae,mlp-vae,dcgan,lsgan,wgan,wgan-gp,vaegan} \\
        --figure docs/images/mnist-samples.png          # prints the Markdown table, writes the sample figure

Each run contributes one table row, read from its folder alone: steps and batch (config.json), the last and the
best FID / KID in classifier features and the judge's verdict (metrics.jsonl), and the median training images/s.
The figure puts the top rows of each run's `images/samples.png` (the fixed-noise grid of its last step) side by
side, titled with the run's model and last FID.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from dgen.errors import DataError


def summary(run: Path) -> dict:
    """What a results row needs from one finished run folder."""
    run = Path(run)
    try:
        cfg = json.loads((run / "config.json").read_text())
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise DataError(f"{run}: not a finished dgen run ({e})") from e
    fids = [(r["test/fid_classifier"], r["step"], r.get("test/kid_classifier")) for r in rows
            if "test/fid_classifier" in r]
    if not fids:
        raise DataError(f"{run}: no FID (classifier features) in metrics.jsonl")
    judge = next((r for r in reversed(rows) if "judge/confidence" in r), {})
    speed = [r["images_per_s"] for r in rows if "images_per_s" in r]
    best = min(fids)
    return {"run": str(run), "model": cfg["model"], "steps": cfg["max_steps"], "batch": cfg["batch_size"],
            "image_size": cfg["image_size"], "fid": fids[-1][0], "kid": fids[-1][2], "best_fid": best[0],
            "best_step": best[1], "confidence": judge.get("judge/confidence"),
            "classes": judge.get("judge/classes_covered"), "images_per_s": statistics.median(speed) if speed else None}


def markdown(rows: list[dict]) -> str:
    head = ("| model | steps x batch | px | FID | KID | best FID (step) | judge conf. | classes | images/s |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
    return head + "".join(
        f"| {r['model']} | {r['steps']:,} x {r['batch']} | {r['image_size']} | {r['fid']:.1f} | {fmt(r['kid'], '.1f')} | "
        f"{r['best_fid']:.1f} ({r['best_step']:,}) | {fmt(r['confidence'], '.2f')} | {fmt(r['classes'], 'd')} | "
        f"{fmt(r['images_per_s'], ',.0f')} |\n" for r in rows)


def sample_figure(rows: list[dict], path: Path, grid_rows: int = 4, columns: int = 4) -> Path:
    """The top `grid_rows` rows of each run's samples.png, `columns` runs per line of the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    lines = -(-len(rows) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 1.9 * lines), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, rows):
        with Image.open(Path(r["run"]) / "images" / "samples.png") as im:
            grid = im.convert("RGB")
        cell = grid.width / 8  # save_grid writes 8 samples per row
        ax.imshow(grid.crop((0, 0, grid.width, round(cell * grid_rows))))
        ax.set_title(f"{r['model']}: FID {r['fid']:.1f}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="finished generative run folders, in table order")
    p.add_argument("--figure", help="also write the samples figure (PNG) here")
    a = p.parse_args(argv)
    rows = [summary(Path(r)) for r in a.runs]
    print(markdown(rows), end="")
    if a.figure:
        print(f"wrote {sample_figure(rows, Path(a.figure))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
