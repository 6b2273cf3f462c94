"""Metrics and images out of the run: RUN_DIR/metrics.jsonl always, W&B when asked.

metrics.jsonl: one JSON object per logged step, written by rank 0 only, with `step`, `images`,
`loss` and every loss term by name (values already averaged over the log interval and all
ranks), plus `lr`, `images_per_s` (training time only), `time/eval_s` and `time/checkpoint_s`
(seconds spent outside training since the previous row); evaluation rows carry `test/...` keys. After a
resume, rows past the checkpoint's step are dropped so every step appears once.

W&B goes through Accelerate's tracker. Without an API key (WANDB_API_KEY, or `wandb login`'s
netrc entry) it runs offline by itself and writes RUN_DIR/wandb/offline-run-*; upload later with
`wandb sync RUN_DIR/wandb/offline-run-*`; read it with `wandb leet inspect --summary RUN_DIR/wandb`
(or browse it in a terminal with `wandb leet RUN_DIR/wandb`).
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import secrets
import string
from pathlib import Path

from dgen.atomic import atomic_write_text

log = logging.getLogger(__name__)
WANDB_ID_FILE = "wandb-run-id"


def wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def default_wandb_mode() -> str | None:
    """"offline" when neither WANDB_MODE nor an API key is set (W&B then writes its run files to disk), else
    None (W&B's own choice)."""
    return "offline" if "WANDB_MODE" not in os.environ and not wandb_has_key() else None


class Tracker:
    def __init__(self, accelerator, cfg, run_dir: Path, resume_step: int | None):
        self.acc, self.main = accelerator, accelerator.is_main_process
        self.path = Path(run_dir) / "metrics.jsonl"
        self.wandb = cfg.tracker == "wandb"
        self.records: list[dict] = []
        if self.main:
            if resume_step is not None and self.path.exists():
                kept = [r for r in _read(self.path) if r.get("step", 0) <= resume_step]
                atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
            elif self.path.exists():
                self.path.unlink()
            self.records = _read(self.path) if self.path.exists() else []
        if self.wandb:
            if default_wandb_mode() == "offline":
                os.environ["WANDB_MODE"] = "offline"
                if self.main:
                    log.info("W&B: no API key, logging offline to %s/wandb (upload later with `wandb sync`)", run_dir)
            run_id = wandb_run_id(run_dir) if self.main else None
            group = cfg.wandb_group or os.environ.get("WANDB_RUN_GROUP") or f"{cfg.model} {cfg.data}"  # seeds together
            options = {"entity": cfg.wandb_entity, "group": group, "job_type": cfg.wandb_job_type,
                       "tags": [t.strip() for t in cfg.wandb_tags.split(",") if t.strip()] if cfg.wandb_tags else None}
            project = cfg.wandb_project or os.environ.get("WANDB_PROJECT") or "dgen"
            accelerator.init_trackers(project, config=cfg.to_dict(), init_kwargs={"wandb": {
                "dir": str(run_dir), "name": Path(run_dir).name, "id": run_id, "resume": "allow",
                "settings": _wandb_settings(), **{k: v for k, v in options.items() if v is not None}}})

    def log(self, values: dict, step: int) -> None:
        """Main process only; `values` are plain floats already reduced over ranks."""
        if not self.main:
            return
        record = {"step": step, **values}
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb:
            self._guard(lambda: self.acc.log({k: v for k, v in values.items()}, step=step))

    def images(self, paths: dict[str, Path], step: int) -> None:
        if self.main and self.wandb and paths:
            import wandb

            self._guard(lambda: self.acc.get_tracker("wandb").tracker.log(
                {k: wandb.Image(str(p)) for k, p in paths.items()}, step=step))

    def _guard(self, call) -> None:
        """W&B must never cost the run: if its service process is gone (e.g. a job step's SIGTERM reached it
        before the trainer's checkpoint), warn once and go on with metrics.jsonl alone."""
        try:
            call()
        except Exception as e:
            self.wandb = False
            log.warning("W&B stopped working (%s: %s); metrics continue in %s", type(e).__name__, e, self.path)

    def close(self) -> None:
        if self.wandb:
            self._guard(self.acc.end_training)


def wandb_run_id(run_dir: Path) -> str:
    """The run folder's W&B run id, made on its first start and kept in RUN_DIR/wandb-run-id: a resumed or
    requeued run continues the same W&B run (online; offline, each start writes its own offline-run-* folder
    with that id, and `wandb sync` files them under the one run)."""
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's id form
    atomic_write_text(path, run_id + "\n")
    return run_id


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wandb_settings():
    import wandb

    return wandb.Settings(console="off", silent=True)  # keep the progress bar readable


def log_table(cells: dict, rows: dict, project: str = "dgen") -> str:
    """Log a domain-adaptation table (dgen.eval.table.collect's cells) to W&B as its own run (offline by itself
    when no API key is set); returns the run's folder."""
    import wandb

    from dgen.eval.table import columns, row_label, row_order

    pairs = columns(cells)
    table = wandb.Table(columns=["method", *pairs])
    for key in row_order({k for k, _ in cells}, rows):
        table.add_data(row_label(key, rows), *[cells[key, p].text() if (key, p) in cells else "" for p in pairs])
    run = wandb.init(project=project, job_type="adaptation-table", mode=default_wandb_mode())
    run.log({"adaptation_table": table})
    for (key, pair), cell in cells.items():
        name = key.replace(" + polarity flips", "+flips")
        run.summary[f"{name}/{pair}/accuracy_mean"] = cell.mean
        run.summary[f"{name}/{pair}/accuracy_std"] = cell.std
    folder = str(Path(run.dir).parent)
    run.finish()
    return folder
