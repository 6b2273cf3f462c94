"""Typed run configuration: the Config dataclass, its checks, and setting it from dicts (unknown or
mistyped keys are errors, everywhere). dgen.options resolves defaults < per-(model, dataset) presets <
a replayed config.json < command-line flags into one.

    accelerate launch dgen/train.py --model vae                       # preset for (vae, digits)
    accelerate launch dgen/train.py --model vae --data celeba --kl-weight 1e-5 --latent-dim 512
    accelerate launch dgen/train.py --config runs/vae-digits-.../config.json   # replay a run

Every run writes its resolved config to RUN_DIR/config.json; `--config` reads one back.
Method hyper-parameters (e.g. --latent-dim, --kl-weight) are the fields of the method's own
dataclass, so a flag that the chosen model does not have is rejected rather than ignored.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path

from dgen.errors import ConfigError


@dataclass
class Config:
    model: str = "vae"  # what to train (`dgen train --model M --help`: its flags and preset)
    data: str = "digits"  # dataset name (-> SHARDS_ROOT/NAME, embedded ones sharded on first use), folder or URL
    shards_root: str = "shards"  # where dataset names are looked up (SHARDS_ROOT/NAME)
    out: str | None = None  # run dir; default runs/MODEL-DATASET-YYYYmmdd-HHMMSS
    resume: str | None = None  # "latest": continue the run in --out (or the newest matching run); "auto": if any
    seed: int = 0  # seeds weights, noise, dropout and data order (same seed, same run)
    max_steps: int = 2000  # optimizer steps
    batch_size: int = 64  # per process, per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3  # learning rate (Adam, or the method's optimizer)
    beta1: float = 0.9  # Adam's beta1
    beta2: float = 0.999  # Adam's beta2
    weight_decay: float = 0.0  # L2 weight decay in Adam; 0 = off
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    lr_schedule: str = "constant"  # constant | cosine | dann (lr / (1 + 10 p)^0.75, p = progress; Ganin et al.)
    mixed_precision: str | None = None  # no | fp16 | bf16; None: the launcher's, else bf16 on a CUDA GPU, no on CPU (on a CPU with native bf16 some presets pick bf16: dgen/presets.py)
    compile: bool = False  # torch.compile the networks (first steps slower while it compiles)
    image_size: int | None = None  # square side in px the images are resized to; None: the shards' size
    channels: int | None = None  # 1 = gray, 3 = RGB; None: the shards' channels
    num_workers: int | None = None  # loader processes per rank; None: 2 on CPU, min(8, CPUs per GPU - 1) on GPU
    shuffle_lanes: int = 16  # shards read side by side in the global sample order: each global batch mixes up to this many (dgen/data/order.py)
    record_keys: bool = False  # also write every step's sample keys to RUN/keys/rank-R.jsonl (which samples trained a step)
    verify_shards: bool = True  # check each shard's sha256 against the manifest when a process first reads it
    log_every: int = 50  # steps between metric lines (metrics.jsonl, W&B, progress bar)
    sample_every: int = 500  # steps between sample grids from fixed noise
    eval_every: int = 1000  # steps between evaluations on the test split; 0 = none (nor in the report)
    ckpt_every: int = 500  # steps between checkpoints
    keep_checkpoints: int = 2  # newest checkpoints kept (the best one, where tracked, is kept too)
    tracker: str = "wandb"  # wandb (offline by itself when no API key is set) | none
    wandb_project: str | None = None  # W&B project; None: WANDB_PROJECT, else "dgen"
    wandb_entity: str | None = None  # W&B team or user; None: WANDB_ENTITY or your default entity
    wandb_group: str | None = None  # W&B group; None: WANDB_RUN_GROUP, else "MODEL DATA" (a table cell's seeds together)
    wandb_tags: str | None = None  # comma-separated W&B tags; None: WANDB_TAGS
    wandb_job_type: str | None = None  # W&B job type, e.g. "train" or "sweep"; None: WANDB_JOB_TYPE
    progress: bool = True  # progress bar on rank 0
    dist_timeout: int = 600  # seconds a collective may wait for another rank before the run fails
    fid: bool = True  # FID/KID of samples at evaluation ticks: classifier (labelled data) or contrastive (unlabelled) features, and Inception's
    fid_samples: int = 2000  # generated images per FID evaluation (over all ranks)
    fid_classifier_steps: int = 600  # training steps of the feature classifier (cached per shards + setting)
    fid_encoder_steps: int = 800  # training steps of the contrastive feature encoder of unlabelled data (cached so too)
    inception: bool = True  # Inception-v3 FID/KID too, where torchvision's weights are in torch's hub cache or can be fetched there (on a CPU: at the last evaluation only)
    inception_weights: str = ""  # an Inception-v3 state dict file to use instead of the hub cache's
    method: typing.Any = None  # the method's own dataclass (filled in by resolve)

    def freeze(self) -> None:
        """Final from here on: the trainer freezes the config once its set-up has resolved what was left open."""
        object.__setattr__(self, "_frozen", True)

    def __setattr__(self, name: str, value) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(f"the run's config is final; {name} cannot change after the set-up")
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return d

    def save(self, path: Path) -> None:
        from dgen.atomic import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")


CHOICES = {
    "mixed_precision": (None, "no", "fp16", "bf16"),
    "tracker": ("wandb", "none"),
    "lr_schedule": ("constant", "cosine", "dann"),
    "resume": (None, "latest", "auto"),
    "channels": (None, 1, 3),
}
POSITIVE = ("dist_timeout", "fid_samples", "fid_classifier_steps", "fid_encoder_steps", "max_steps", "batch_size", "grad_accum", "log_every", "sample_every", "ckpt_every",
            "keep_checkpoints", "shuffle_lanes")


def validate(cfg: Config) -> None:
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"{flag_name(key)} must be one of {', '.join(map(str, allowed))}; got {getattr(cfg, key)!r}")
    for key in POSITIVE:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{flag_name(key)} must be >= 1, got {getattr(cfg, key)}")
    if cfg.lr <= 0:
        raise ConfigError(f"--lr must be > 0, got {cfg.lr}")
    if cfg.eval_every < 0:
        raise ConfigError(f"--eval-every must be >= 0 (0: no test-split evaluation), got {cfg.eval_every}")
    if cfg.num_workers is not None and cfg.num_workers < 0:
        raise ConfigError(f"--num-workers must be >= 0, got {cfg.num_workers}")


# -- building a config from dicts ---------------------------------------------------------------
def _coerce(cls, key: str, value, where: str):
    """Check `value` against the annotated type of `cls.key` (JSON numbers may be ints for floats)."""
    hints = typing.get_type_hints(cls)
    t = hints[key]
    if t is typing.Any:
        return value
    options = typing.get_args(t) if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union else (t,)
    if value is None and type(None) in options:
        return None
    for opt in options:
        if opt is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if opt is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if opt in (str, bool) and isinstance(value, opt):
            return value
    raise ConfigError(f"{where}{key} must be {t}, got {value!r}")


def update(obj, values: dict, where: str = "") -> None:
    """Set dataclass fields from a dict; unknown keys are errors that list the known ones."""
    names = {f.name for f in fields(obj)}
    for key, value in values.items():
        if key not in names:
            close = [n for n in names if n.startswith(key[:3])]
            hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
            raise ConfigError(f"unknown config key {where}{key!r}{hint}; known: {', '.join(sorted(names))}")
        if key == "method":
            continue
        setattr(obj, key, _coerce(type(obj), key, value, where))


# -- names and help texts for the command line (dgen.options builds it) -------------------------------
def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def arg_type(t):
    options = typing.get_args(t) if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union else (t,)
    options = [o for o in options if o is not type(None)]
    return options[0] if options else str


_COMMENT = re.compile(r"^    (\w+): [^#]*#\s*(.+)$")


def field_help(cls) -> dict[str, str]:
    """Each field's help text: the comment on its line in the dataclass source (a subclass's wins)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        for line in inspect.getsource(klass).splitlines():
            if m := _COMMENT.match(line):
                out[m.group(1)] = m.group(2)
    return out
