"""Training curves from metrics records (the lines of a run's metrics.jsonl), one subplot per metric
so that values of very different scale (a KL of 5 beside a reconstruction loss of 0.02) stay readable.

    import json
    from dgen.eval.curves import save_curves
    records = [json.loads(line) for line in open("runs/vae/metrics.jsonl")]
    save_curves(records, "runs/vae/images/curves.png", keys=["loss", "recon", "kl"], smooth=0.9)

The x axis is the record's "step" (optimizer steps); y values are in whatever units the metric was
logged in. Drawn with matplotlib's Figure directly (Agg canvas, no display needed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def ema(values: np.ndarray, smooth: float) -> np.ndarray:
    """Exponential moving average y[t] = smooth * y[t-1] + (1 - smooth) * x[t], starting at y[0] = x[0]."""
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    if smooth == 0.0 or len(values) == 0:
        return np.asarray(values, dtype=float)
    from scipy.signal import lfilter  # imported here: ~1 s that a --help or a dry run need not pay

    return lfilter([1.0 - smooth], [1.0, -smooth], values, zi=[smooth * values[0]])[0]


def _series(records: Sequence[Mapping], key: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(steps, values) of the records that have `key` with a finite number, and how many were not finite."""
    steps, values, bad = [], [], 0
    for r in records:
        v = r.get(key)
        if v is None or "step" not in r:
            continue
        if isinstance(v, (int, float)) and math.isfinite(v):
            steps.append(r["step"])
            values.append(float(v))
        else:
            bad += 1
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float), bad


def save_curves(records: Sequence[Mapping], path: str | Path, keys: Sequence[str], title: str | None = None,
                smooth: float = 0.0, log: bool = False) -> Path:
    """Plot each metric in `keys` against "step" on its own subplot (stacked, shared x axis).

    Records without the key are skipped (metrics logged at different intervals share one file);
    non-finite values (a diverged run) are left out and counted in the subplot's title. With
    `smooth` in (0, 1) the exponential moving average is drawn over the faint raw curve; `log`
    puts every y axis on a log scale. Raises ValueError naming a key that no record has.
    """
    if not keys:
        raise ValueError("no keys to plot")
    series = {}
    for key in keys:
        steps, values, bad = _series(records, key)
        if len(values) == 0 and bad == 0:
            raise ValueError(f"no record has metric {key!r} (with a 'step')")
        series[key] = (steps, values, bad)
    ema(np.zeros(1), smooth)  # validate before drawing anything

    from matplotlib.figure import Figure  # imported here: ~0.5 s that a --help or a dry run need not pay

    fig = Figure(figsize=(7.0, 1.2 + 2.0 * len(keys)), dpi=100, layout="constrained")
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (key, (steps, values, bad)) in zip(axes, series.items()):
        if smooth > 0:
            ax.plot(steps, values, color="C0", alpha=0.3, linewidth=1, label="raw")
            ax.plot(steps, ema(values, smooth), color="C0", linewidth=1.5, label=f"EMA {smooth:g}")
            ax.legend(loc="upper right", fontsize=8)
        else:
            ax.plot(steps, values, color="C0", linewidth=1.2)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        if bad:
            ax.set_title(f"{key}: {bad} non-finite value(s) not drawn", fontsize=9, color="C3")
    axes[-1].set_xlabel("step")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
