"""Image grids for run reports: samples, reconstructions with their error, progress from fixed
noise, and rows of variations (latent traversals, one sample with variations).

    from dgen.eval.images import save_grid, save_reconstructions
    save_grid(samples, "runs/dcgan/images/samples.png")                       # [N, C, H, W] in [-1, 1]
    path, mse = save_reconstructions(x[:10], vae(x[:10]), "runs/vae/images/recon.png")

Images are float tensors in [-1, 1] (dgen's batch format), shape [N, C, H, W] with C = 1 or 3.
Grids use torchvision's make_grid/save_image (2 px padding); annotated figures use matplotlib's
Figure directly (Agg canvas, so no display is needed). Every function creates the parent folders of
`path` and returns it as a pathlib.Path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torchvision.utils import make_grid, save_image

PADDING = 2  # px between grid cells
MIN_WIDTH = 256  # px; 28-32 px digits are unreadable when a grid is narrower than this
DPI = 100


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Map [-1, 1] pixels to [0, 1], clamping anything outside (e.g. a tanh-free decoder's overshoot)."""
    return ((x.detach().float().cpu() + 1.0) / 2.0).clamp_(0.0, 1.0)


def _check_images(images: torch.Tensor, name: str = "images") -> None:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{name} must be [N, C, H, W] with C = 1 or 3, got shape {tuple(images.shape)}")


def _prepare(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def auto_scale(ncols: int, width: int) -> int:
    """Smallest integer upsampling factor that makes a grid of `ncols` images `width` px wide >= MIN_WIDTH px."""
    return max(1, math.ceil(MIN_WIDTH / (ncols * (width + PADDING) + PADDING)))


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, scale: int | None = None) -> Path:
    """Draw N images as a grid of `nrow` per row (2 px padding); `scale` upsamples each image by an
    integer factor with nearest neighbour (None: the smallest factor making the grid >= 256 px wide)."""
    _check_images(images)
    x = to_unit(images)
    if scale is None:
        scale = auto_scale(min(nrow, len(x)), x.shape[-1])
    if scale > 1:
        x = F.interpolate(x, scale_factor=scale, mode="nearest")
    path = _prepare(path)
    save_image(x, path, nrow=nrow, padding=PADDING)
    return path


def _imshow(ax, image: torch.Tensor) -> None:
    """One [C, H, W] image in [0, 1] on an axis without ticks (gray colormap for one channel)."""
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(rearrange(image, "c h w -> h w c").numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def save_reconstructions(originals: torch.Tensor, recons: torch.Tensor, path: str | Path) -> tuple[Path, list[float]]:
    """Draw originals (top row) over their reconstructions (bottom row), with each pair's mean squared
    error on [-1, 1] pixels (mean over channels and pixels) printed under its column.

    Returns the path and the per-image MSE values (same units), in column order.
    """
    _check_images(originals, "originals")
    if originals.shape != recons.shape:
        raise ValueError(f"originals {tuple(originals.shape)} and recons {tuple(recons.shape)} differ in shape")
    o, r = originals.detach().float().cpu(), recons.detach().float().cpu()
    mse = ((o - r) ** 2).flatten(1).mean(1).tolist()
    n = len(o)
    from matplotlib.figure import Figure  # imported here: ~0.5 s that a --help or a dry run need not pay

    fig = Figure(figsize=(1.1 * n + 0.4, 3.0), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        _imshow(axes[0, i], to_unit(o[i]))
        _imshow(axes[1, i], to_unit(r[i]))
        axes[1, i].set_xlabel(f"{mse[i]:.4f}", fontsize=9)
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("recon")
    fig.suptitle(f"Reconstructions: per-image MSE on [-1, 1] pixels (mean {sum(mse) / n:.4f})", fontsize=10)
    path = _prepare(path)
    fig.savefig(path)
    return path, mse


def _save_labelled_rows(rows: Sequence[torch.Tensor], labels: Sequence[str] | None, path: str | Path,
                        title: str | None = None) -> Path:
    """One figure row per [K, C, H, W] tensor, drawn as a 1 x K grid, with an optional label on the left."""
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"{len(labels)} labels for {len(rows)} rows")
    for row in rows:
        _check_images(row, "each row")
    strips = [make_grid(to_unit(row), nrow=len(row), padding=PADDING) for row in rows]
    h, w = max(s.shape[1] for s in strips), max(s.shape[2] for s in strips)
    zoom = max(2.0, MIN_WIDTH / w)  # screen px per image px
    label_in = 1.0 if labels is not None else 0.1
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * zoom / DPI + label_in, len(rows) * h * zoom / DPI + (0.4 if title else 0.1)),
                 dpi=DPI, layout="constrained")
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for i, (ax, strip) in enumerate(zip(axes, strips)):
        _imshow(ax, strip)
        if labels is not None:
            ax.set_ylabel(str(labels[i]), rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    path = _prepare(path)
    fig.savefig(path)
    return path


def save_progress_collage(snapshots: Sequence[torch.Tensor], steps: Sequence[int], path: str | Path,
                          title: str | None = "Samples from fixed noise during training") -> Path:
    """Draw one row per snapshot (the same fixed noise decoded at a training step), labelled with its step."""
    if len(snapshots) != len(steps):
        raise ValueError(f"{len(snapshots)} snapshots for {len(steps)} steps")
    if not snapshots:
        raise ValueError("no snapshots to draw")
    return _save_labelled_rows(list(snapshots), [f"step {s}" for s in steps], path, title)


def save_variations(rows: torch.Tensor, path: str | Path, row_labels: Sequence[str] | None = None,
                    title: str | None = None) -> Path:
    """Draw an [R, K, C, H, W] tensor as R rows of K images: e.g. a latent traversal (R latent
    dimensions x K values) or "one sample with variations" (R samples x K variations)."""
    if rows.ndim != 5:
        raise ValueError(f"rows must be [R, K, C, H, W], got shape {tuple(rows.shape)}")
    if row_labels is None and title is None:
        return save_grid(rearrange(rows, "r k c h w -> (r k) c h w"), path, nrow=rows.shape[1])
    return _save_labelled_rows(list(rows), row_labels, path, title)
