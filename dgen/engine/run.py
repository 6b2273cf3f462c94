"""The run directory: naming, resuming, config replay and compatibility, and loading a trained run.

    runs/vae-digits-20261121-101500/
      config.json        the resolved config (replay with --config)
      metrics.jsonl      one JSON object per logged step
      checkpoints/       step-XXXXXXXX/ (see dgen.engine.checkpoint)
      images/            sample grids, curves, reconstructions, t-SNE, ...
      report.md          what was trained, final numbers, where the pictures are
      wandb/             W&B run files (offline runs: wandb sync ...)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from dgen.config import Config
from dgen.errors import ConfigError
from dgen.options import resolve
from dgen.data.domains import dataset_name
from dgen.engine.checkpoint import latest_checkpoint, list_checkpoints

# Keys that define what is trained: a checkpoint cannot be resumed under different values.
STRUCTURAL = ("model", "method", "image_size", "channels")
# Keys that change the numbers of a resumed run (allowed, with a warning).
TRAJECTORY = ("seed", "batch_size", "grad_accum", "lr", "beta1", "beta2", "weight_decay", "lr_schedule", "max_steps",
              "shuffle_lanes", "mixed_precision")


def _adaptation(model: str) -> bool:
    from dgen.methods import get_method

    return get_method(model).domains is not None


def _run_label(model: str, data: str) -> str:
    """dataset_name as a folder-name part: "usps-to-mnist-m" for a pair."""
    return dataset_name(data, _adaptation(model)).replace(":", "-to-")


def newest_run(model: str, data: str, runs: Path = Path("runs")) -> Path | None:
    """The most recent run of (model, dataset) that has a checkpoint."""
    candidates = [p for p in runs.glob(f"{model}-{_run_label(model, data)}-*") if list_checkpoints(p)]
    return max(candidates, key=lambda p: p.name) if candidates else None


def config_for_run(overrides: dict, replay: dict | None) -> Config:
    """Resolve the config; with --resume, the run's own config.json is the base the flags override."""
    resume = overrides.get("resume")
    if resume and replay is None:
        model = overrides.get("model", Config.model)
        out = overrides.get("out") or newest_run(model, overrides.get("data", Config.data))
        if out is None and resume == "latest":
            raise ConfigError(f"--resume: no run of {model} on {overrides.get('data', Config.data)} with a checkpoint "
                              "under runs/; pass --out RUN_DIR")
        if out is not None and resume == "latest" and not Path(out).is_dir():
            raise ConfigError(f"--resume: there is no run folder at {out} (to start a new run there, drop --resume; "
                              "--resume auto resumes only if there is one)")
        if out is not None:
            overrides = {**overrides, "out": str(out)}
            saved = Path(out) / "config.json"
            if saved.is_file():
                replay = json.loads(saved.read_text())
    if replay is not None:
        replay = {k: v for k, v in replay.items() if k != "resume"}
    return resolve(overrides, replay)


def new_run_name(cfg: Config) -> str:
    return f"runs/{cfg.model}-{_run_label(cfg.model, cfg.data)}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_resumable(cfg: Config, run_dir: Path) -> list[str]:
    """Raise on structural differences from the saved config; return warnings for trajectory changes."""
    saved_path = run_dir / "config.json"
    if not saved_path.is_file():
        return []
    saved, now = json.loads(saved_path.read_text()), cfg.to_dict()
    bad = [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in STRUCTURAL if saved.get(k) != now.get(k)]
    if bad:
        raise ConfigError(f"cannot resume {run_dir}: its checkpoints were trained with another config ({'; '.join(bad)}); "
                          "start a new run with another --out")
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in TRAJECTORY if saved.get(k) != now.get(k)]


def load_trained(run_dir: str | Path, device: str = "cpu"):
    """(config, method with the weights of the latest checkpoint) for sampling and evaluation."""
    from safetensors.torch import load_file

    from dgen.methods import get_method
    from dgen.methods.base import DataSpec

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir} is not a dgen run (no config.json)")
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise ConfigError(f"{run_dir} has no checkpoint yet")
    cfg = resolve({}, json.loads((run_dir / "config.json").read_text()))
    spec = DataSpec(dataset_name(cfg.data, _adaptation(cfg.model)), cfg.image_size, cfg.channels, _classes(cfg), None)
    method = get_method(cfg.model)(cfg, spec)
    for i, name in enumerate(method.averages):  # registered for checkpointing in this order
        file = ckpt / f"custom_checkpoint_{i}.pkl"
        if not file.is_file():
            raise ConfigError(f"{ckpt} holds no weights for {name} ({file.name})")
        method.models[name].load_state_dict(torch.load(file, map_location=device, weights_only=True))
        method.models[name].to(device).eval()
    for i, name in enumerate(method.trained()):  # Accelerate saves models in prepare() order
        model = method.models[name]
        file = ckpt / ("model.safetensors" if i == 0 else f"model_{i}.safetensors")
        if file.is_file():
            state = load_file(file, device=device)
        elif (ckpt / "pytorch_model").is_dir():  # a DeepSpeed run: consolidate its ZeRO partitions
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag="pytorch_model")
        else:
            raise ConfigError(f"{ckpt} holds no weights for {name} ({file.name} or a DeepSpeed pytorch_model/)")
        model.load_state_dict(state)
        model.to(device).eval()
    return cfg, method, ckpt


def _classes(cfg) -> list[str] | None:
    """The class names of a classifier run's training data (None for generative runs: they do not need them)."""
    from dgen.data.auto import data_location
    from dgen.data.domains import split_pair
    from dgen.data.manifest import load_manifest
    from dgen.methods import get_method

    if get_method(cfg.model).generative:
        return None
    pair = split_pair(cfg.data, _adaptation(cfg.model))
    return load_manifest(data_location(pair[0] if pair else cfg.data, cfg.shards_root)).classes


def load_generator(run_dir, device: str = "cpu"):
    """load_trained for commands that draw samples (dgen sample, dgen eval --run): a clear error for classifiers."""
    cfg, method, ckpt = load_trained(run_dir, device)
    if not method.generative:
        raise ConfigError(f"{run_dir} is a {cfg.model} run: a classifier draws no samples (see its report.md and images/)")
    return cfg, method, ckpt


def sample_images(run_dir, n: int = 64, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    cfg, method, _ = load_generator(run_dir, device)
    z = method.noise(n, torch.Generator().manual_seed(seed)).to(device)
    return method.sample(z)
