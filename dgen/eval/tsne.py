"""t-SNE maps of features (e.g. VAE latent means, DANN features), coloured by class, domain or
attribute, as in the seeds' "t-SNE of latents by gender" and "by class and by domain".

    from dgen.eval.tsne import save_tsne
    path, xy = save_tsne(mu, labels, "runs/vae/images/tsne.png", label_names=[str(i) for i in range(10)])

Features are [N, D] (any units: t-SNE only uses distances between them); the two embedding axes have
no units. At most `max_points` points are embedded, chosen with `subsample(n, max_points, seed)`, so
the same inputs and seed always give the same map. Uses scikit-learn's TSNE (PCA initialisation) and
matplotlib's Figure directly (Agg canvas, no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits  # a scikit-learn dependency


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of the points a map of n points keeps: all of them, or max_points drawn without
    replacement by a generator seeded with `seed`."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def save_tsne(features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray | Sequence[int],
              path: str | Path, label_names: Sequence[str] | None = None, title: str | None = None,
              seed: int = 0, max_points: int = 2000) -> tuple[Path, np.ndarray]:
    """Embed features [N, D] in 2-D with t-SNE and scatter them coloured by integer label, with a legend
    that names label i `label_names[i]` (or just i).

    Returns the path and the embedding [n, 2] of the kept points (n = min(N, max_points), in the
    order of `subsample(N, max_points, seed)`).
    """
    x = _numpy(features).astype(np.float32, copy=False)
    y = _numpy(labels).astype(np.int64, copy=False).reshape(-1)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features must be [N, D] with one label each, got {x.shape} and {len(y)} labels")
    if len(x) < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {len(x)}")
    keep = subsample(len(x), max_points, seed)
    x, y = x[keep], y[keep]
    n = len(x)
    tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, (n - 1) / 3))
    # One OpenMP thread: Barnes-Hut t-SNE runs thousands of tiny parallel regions, and when the cores are
    # shared (other ranks, data workers, a parallel test run) their spin-waiting threads stall. Measured on
    # 2 busy cores, 2,000 points x 64-d: 44 s with the default threads, 9 s with one.
    with threadpool_limits(limits=1, user_api="openmp"):
        xy = tsne.fit_transform(x)

    classes = np.unique(y)
    cmap = "tab10" if len(classes) <= 10 else "tab20"
    fig = Figure(figsize=(7.0, 6.0), dpi=100, layout="constrained")
    ax = fig.subplots()
    palette = colormaps[cmap]
    for i, c in enumerate(classes):  # one scatter per class, so the legend names each
        name = label_names[c] if label_names is not None else str(c)
        pts = xy[y == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=8, alpha=0.8, color=palette(i % palette.N), label=f"{name} ({len(pts)})")
    ax.legend(markerscale=2, fontsize=8, loc="best", frameon=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"t-SNE of {n} points ({x.shape[1]}-d features)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path, xy
