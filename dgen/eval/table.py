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

# model -> (row label, domains): the registry's `dgen.methods.table_rows()`, which the caller passes in (eval does
# not import methods); lower bound ("source") first, the adaptation methods ("both"), the upper bound ("target")
Rows = dict[str, tuple[str, str]]


def row_key(model: str, method: dict) -> str:
    """The table row of a run: its model, plus " + polarity flips" when it trained with --invert-prob."""
    return model + (" + polarity flips" if method.get("invert_prob", 0) > 0 else "")


def row_label(key: str, rows: Rows) -> str:
    model, _, variant = key.partition(" + ")
    return rows[model][0] + (f" + {variant}" if variant else "")


def row_order(keys, rows: Rows) -> list[str]:
    return sorted(keys, key=lambda k: (list(rows).index(k.partition(" + ")[0]), k))


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


def final_accuracy(run: Path, rows: Rows) -> tuple[str, str, float]:
    """(row key, pair, target test accuracy at the run's last step); DgenError saying why a run does not count."""
    from dgen.data.domains import dataset_name

    cfg_path, metrics_path = run / "config.json", run / "metrics.jsonl"
    if not cfg_path.is_file():
        raise DgenError("no config.json")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("model") not in rows:
        raise DgenError(f"model {cfg.get('model')!r} is not a domain-adaptation method")
    if not metrics_path.is_file():
        raise DgenError("no metrics.jsonl")
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    evals = [r for r in records if "test/accuracy" in r]
    if not evals or evals[-1]["step"] < cfg.get("max_steps", 0):
        raise DgenError(f"unfinished: no evaluation at its last step ({cfg.get('max_steps')})")
    return (row_key(cfg["model"], cfg.get("method") or {}), dataset_name(cfg["data"], True).replace(":", "→"),
            float(evals[-1]["test/accuracy"]))


def collect(runs: list[Path], rows: Rows) -> tuple[dict[tuple[str, str], Cell], list[tuple[Path, str]]]:
    cells: dict[tuple[str, str], Cell] = {}
    skipped = []
    for run in runs:
        try:
            model, pair, acc = final_accuracy(Path(run), rows)
        except DgenError as e:
            skipped.append((Path(run), str(e)))
            continue
        cells.setdefault((model, pair), Cell([])).values.append(acc)
    return cells, skipped


def columns(cells) -> list[str]:
    return sorted({pair for _, pair in cells})


def markdown(cells: dict[tuple[str, str], Cell], rows: Rows) -> str:
    pairs = columns(cells)
    lines = ["| | " + " | ".join(pairs) + " |", "|---|" + "---|" * len(pairs)]
    for key in row_order({k for k, _ in cells}, rows):
        lines.append(f"| {row_label(key, rows)} | " + " | ".join(cells[key, p].text() if (key, p) in cells else "–"
                                                                for p in pairs) + " |")
    text = "\n".join(lines) + "\n"
    role = lambda key: rows[key.partition(" + ")[0]][1]  # noqa: E731
    gaps = []
    for p in pairs:
        his = [c for (k, q), c in cells.items() if q == p and role(k) == "target" and " + " not in k]
        adapted = [(k, c) for (k, q), c in cells.items() if q == p and role(k) == "both"]
        if not his or not adapted:
            continue
        hi = his[0]
        best_key, best = max(adapted, key=lambda kc: kc[1].mean)
        for lo_key in sorted(k for (k, q) in cells if q == p and role(k) == "source"):
            lo = cells[lo_key, p]
            if hi.mean > lo.mean:
                gaps.append(f"{p}: {row_label(best_key, rows)} closes "
                            f"{100 * (best.mean - lo.mean) / (hi.mean - lo.mean):.0f}% of the gap from "
                            f"{row_label(lo_key, rows).replace(' (lower bound)', '')} to the upper bound")
    if gaps:
        text += "\n" + "\n".join(f"- {g}" for g in gaps) + "\n"
    return text
