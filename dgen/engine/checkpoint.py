"""Complete, atomic checkpoints with retention.

RUN_DIR/checkpoints/step-00001000/ holds Accelerate's state (models, optimizers,
GradScaler, and every rank's Python/NumPy/torch RNG states) plus `trainer_state.json` (step,
epoch and batch position of the data stream, images seen, best metric). A checkpoint is written
into a hidden `.tmp-step-...` folder and renamed into place only after every rank has finished
writing, so a crash, a kill or a full disk mid-write never leaves a half checkpoint under a real
name, and the previous checkpoint is deleted only after the new one is complete.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch

from dgen.errors import DgenError

log = logging.getLogger(__name__)
STATE = "trainer_state.json"
NAME = re.compile(r"^step-(\d{8})$")


class CheckpointError(DgenError):
    pass


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if NAME.match(p.name) and (p / STATE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def read_state(ckpt: Path) -> dict:
    return json.loads((Path(ckpt) / STATE).read_text())


class Checkpointer:
    def __init__(self, accelerator, run_dir: Path, keep: int):
        self.acc, self.folder, self.keep = accelerator, Path(run_dir) / "checkpoints", keep
        self.protected: set[str] = set()  # the best-FID checkpoint

    def save(self, state: dict, models: list) -> Path:
        acc, step = self.acc, state["step"]
        final = self.folder / checkpoint_name(step)
        if final.exists():  # already saved at this step (e.g. a signal right after a periodic save)
            return final
        state = {**state, "replicas_checked": check_replicas(acc, models)}
        tmp = self.folder / f".tmp-{final.name}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        error = None
        try:
            acc.save_state(str(tmp))
            if acc.is_main_process:
                with open(tmp / STATE, "w") as f:
                    json.dump(state, f, indent=1)
                _fsync_tree(tmp)
        except Exception as e:  # noqa: BLE001  ENOSPC/EIO arrive as OSError, or as RuntimeError from
            error = e  # torch.save's zip writer; every rank must learn of it, or the others would hang
        failed = acc.reduce(torch.tensor(float(error is not None), device=acc.device), "sum").item()
        if failed:
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            previous = latest_checkpoint(self.folder.parent)
            kept = f"the last good checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
            free = shutil.disk_usage(self.folder).free / 2**20
            raise CheckpointError(f"could not write the checkpoint for step {step} in {self.folder} "
                                  f"({error or 'failed on another rank'}; {free:.0f} MiB free there); {kept}")
        if acc.is_main_process:
            os.replace(tmp, final)
            _fsync_dir(self.folder)
            self._prune()
        acc.wait_for_everyone()
        return final

    def load(self, ckpt: Path) -> dict:
        self.acc.load_state(str(ckpt))
        state = read_state(ckpt)
        if "best" in state:
            self.protected = {checkpoint_name(state["best"]["step"])}
        return state

    def is_best(self, state: dict, value: float, step: int) -> bool:
        """Record `value` (lower is better, e.g. FID) in `state`; True if it is the best so far, in which
        case this step's checkpoint is kept besides the newest ones until a better one replaces it."""
        best = state.get("best")
        if best is not None and value >= best["value"]:
            return False
        state["best"] = {"step": step, "value": value}
        self.protected = {checkpoint_name(step)}
        return True

    def _prune(self) -> None:
        found = list_checkpoints(self.folder.parent)
        for old in found[: max(0, len(found) - self.keep)]:
            if old.name not in self.protected:
                shutil.rmtree(old, ignore_errors=True)


def check_replicas(acc, models: list) -> int:
    """Every rank must hold the same parameters (DDP keeps them in lockstep); a mismatch means gradients
    were not synchronised, and saving rank 0's copy would hide it. Returns the number of ranks compared."""
    if acc.num_processes == 1:
        return 1
    # parameters only: BatchNorm running statistics legitimately differ until DDP re-broadcasts
    # rank 0's buffers at the next forward
    sums = torch.stack([p.detach().double().sum() for m in models for p in m.parameters()])
    every = acc.gather(sums.unsqueeze(0))  # [ranks, tensors]
    differ = (every != every[0]).any(dim=1).nonzero().flatten().tolist()
    if differ:
        raise CheckpointError(f"model weights differ between rank 0 and rank(s) {differ}: gradients were not "
                              "synchronised (this is a bug in the training method; nothing was saved)")
    return acc.num_processes


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
