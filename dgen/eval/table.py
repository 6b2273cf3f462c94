"""The seeds' domain-adaptation table from finished runs: rows = methods, columns = domain pairs,
each cell the target test accuracy (mean ± standard deviation over the runs of that cell, e.g. seeds).

    dgen eval --table runs/*                        # Markdown on stdout
    dgen eval --table runs/* --out table.md         # ... and to a file; --wandb logs it as a W&B Table

A run counts if its config.json names a domain-adaptation model and its metrics.jsonl holds a final
evaluation (`test/accuracy` at its last step); other folders are listed as skipped, with the reason.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from dgen.errors import DgenError

ROWS = {"source-only": "Train on source (lower bound)", "dann": "DANN", "gta": "GTA",
        "target-only": "Train on target (upper bound)"}


@dataclass
class Cell:
    values: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def text(self) -> str:
        if len(self.values) == 1:
            return f"{100 * self.mean:.2f}%"
        return f"{100 * self.mean:.2f} ± {100 * self.std:.2f}% (n={len(self.values)})"


def final_accuracy(run: Path) -> tuple[str, str, float]:
    """(model, pair, target test accuracy at the run's last step); DgenError saying why a run does not count."""
    from dgen.engine.run import dataset_name

    cfg_path, metrics_path = run / "config.json", run / "metrics.jsonl"
    if not cfg_path.is_file():
        raise DgenError("no config.json")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("model") not in ROWS:
        raise DgenError(f"model {cfg.get('model')!r} is not a domain-adaptation method")
    if not metrics_path.is_file():
        raise DgenError("no metrics.jsonl")
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    evals = [r for r in records if "test/accuracy" in r]
    if not evals or evals[-1]["step"] < cfg.get("max_steps", 0):
        raise DgenError(f"unfinished: no evaluation at its last step ({cfg.get('max_steps')})")
    return cfg["model"], dataset_name(cfg["data"]).replace(":", "→"), float(evals[-1]["test/accuracy"])


def collect(runs: list[Path]) -> tuple[dict[tuple[str, str], Cell], list[tuple[Path, str]]]:
    cells: dict[tuple[str, str], Cell] = {}
    skipped = []
    for run in runs:
        try:
            model, pair, acc = final_accuracy(Path(run))
        except DgenError as e:
            skipped.append((Path(run), str(e)))
            continue
        cells.setdefault((model, pair), Cell([])).values.append(acc)
    return cells, skipped


def columns(cells) -> list[str]:
    return sorted({pair for _, pair in cells})


def markdown(cells: dict[tuple[str, str], Cell]) -> str:
    pairs = columns(cells)
    lines = ["| | " + " | ".join(pairs) + " |", "|---|" + "---|" * len(pairs)]
    for model, label in ROWS.items():
        if any((model, p) in cells for p in pairs):
            lines.append(f"| {label} | " + " | ".join(cells[model, p].text() if (model, p) in cells else "–"
                                                     for p in pairs) + " |")
    gaps = []
    for p in pairs:
        lo, hi = cells.get(("source-only", p)), cells.get(("target-only", p))
        best = max((cells[m, p] for m in ("dann", "gta") if (m, p) in cells), key=lambda c: c.mean, default=None)
        if lo and hi and best and hi.mean > lo.mean:
            gaps.append(f"{p}: {100 * (best.mean - lo.mean) / (hi.mean - lo.mean):.0f}%")
    text = "\n".join(lines) + "\n"
    if gaps:
        text += ("\nShare of the source-only → target-only gap closed by the best adaptation method: "
                 + ", ".join(gaps) + "\n")
    return text


def log_wandb(cells: dict[tuple[str, str], Cell], project: str = "dgen") -> str:
    """Log the table to W&B (offline by itself when no API key is set); returns the run's folder."""
    import os

    import wandb

    mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    pairs = columns(cells)
    table = wandb.Table(columns=["method", *pairs])
    for model, label in ROWS.items():
        if any((model, p) in cells for p in pairs):
            table.add_data(label, *[cells[model, p].text() if (model, p) in cells else "" for p in pairs])
    run = wandb.init(project=project, job_type="adaptation-table", mode=mode)
    run.log({"adaptation_table": table})
    for (model, pair), cell in cells.items():
        run.summary[f"{model}/{pair}/accuracy_mean"] = cell.mean
        run.summary[f"{model}/{pair}/accuracy_std"] = cell.std
    folder = str(Path(run.dir).parent)
    run.finish()
    return folder
