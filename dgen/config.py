"""Typed run configuration: dataclass defaults < per-(model, dataset) presets < a replayed
config.json < command-line flags. Unknown or mistyped keys are errors, everywhere.

    accelerate launch dgen/train.py --model vae                       # preset for (vae, digits)
    accelerate launch dgen/train.py --model vae --data celeba --kl-weight 1e-5 --latent-dim 512
    accelerate launch dgen/train.py --config runs/vae-digits-.../config.json   # replay a run

Every run writes its resolved config to RUN_DIR/config.json; `--config` reads one back.
Method hyper-parameters (e.g. --latent-dim, --kl-weight) are the fields of the method's own
dataclass, so a flag that the chosen model does not have is rejected rather than ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import json
import re
import sys
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path

from dgen.errors import ConfigError, DgenError  # noqa: F401  (ConfigError: imported from here by callers)




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
    mixed_precision: str | None = None  # no | fp16 | bf16; None: the launcher's, else bf16 on a CUDA GPU, no on CPU
    compile: bool = False  # torch.compile the networks (first steps slower while it compiles)
    image_size: int | None = None  # square side in px the images are resized to; None: the shards' size
    channels: int | None = None  # 1 = gray, 3 = RGB; None: the shards' channels
    num_workers: int | None = None  # loader processes per rank; None: 2 on CPU, min(8, CPUs per GPU - 1) on GPU
    shuffle_buffer: int = 1000  # samples held by each loader worker to shuffle from
    verify_shards: bool = True  # check each shard's sha256 against the manifest when a process first reads it
    log_every: int = 50  # steps between metric lines (metrics.jsonl, W&B, progress bar)
    sample_every: int = 500  # steps between sample grids from fixed noise
    eval_every: int = 1000  # steps between evaluations on the test split
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
    fid: bool = True  # FID/KID of samples at evaluation ticks (classifier features; needs class labels)
    fid_samples: int = 2000  # generated images per FID evaluation (over all ranks)
    fid_classifier_steps: int = 600  # training steps of the feature classifier (cached per shards + setting)
    inception_weights: str = ""  # a local Inception-v3 state dict: Inception features instead
    method: typing.Any = None  # the method's own dataclass (filled in by resolve)

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
POSITIVE = ("dist_timeout", "fid_samples", "fid_classifier_steps", "max_steps", "batch_size", "grad_accum", "log_every", "sample_every", "eval_every", "ckpt_every",
            "keep_checkpoints", "shuffle_buffer")


def validate(cfg: Config) -> None:
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"{_flag(key)} must be one of {', '.join(map(str, allowed))}; got {getattr(cfg, key)!r}")
    for key in POSITIVE:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{_flag(key)} must be >= 1, got {getattr(cfg, key)}")
    if cfg.lr <= 0:
        raise ConfigError(f"--lr must be > 0, got {cfg.lr}")
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


def method_config(model: str):
    from dgen.methods import get_method

    return get_method(model).Config()


def resolve(overrides: dict, replay: dict | None = None, dataset: str | None = None) -> Config:
    """Defaults < preset(model, dataset) < replayed config < overrides (flag values the user gave)."""
    from dgen.presets import preset

    base = dict(replay or {})
    model = overrides.get("model", base.get("model", Config.model))
    cfg = Config(model=model)
    cfg.method = method_config(model)
    data = overrides.get("data", base.get("data", Config.data))
    if replay is None:
        from dgen.engine.run import dataset_name

        top, meth = preset(model, dataset or dataset_name(data), overrides.get("method", {}).get("arch"))
        update(cfg, top)
        update(cfg.method, meth, "method.")
    for source in (base, overrides):
        top = {k: v for k, v in source.items() if k != "method"}
        update(cfg, top)
        if source.get("method"):
            update(cfg.method, source["method"], "method.")
    validate(cfg)
    return cfg


# -- the command line -------------------------------------------------------------------------------
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _arg_type(t):
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


def _add_fields(parser, obj, dest_prefix: str, choices: dict, skip=()) -> None:
    """One flag per field of the dataclass instance `obj`, its help text and its value in `obj` shown."""
    cls = type(obj)
    hints, helps = typing.get_type_hints(cls), field_help(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        t = _arg_type(hints[f.name])
        value = getattr(obj, f.name)
        shown = "off" if value == "" else value
        text = f"{helps.get(f.name, '')} (default: {shown})".strip()
        if t is bool:
            parser.add_argument(_flag(f.name), dest=dest_prefix + f.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=text)
            continue
        allowed = [c for c in choices.get(f.name, ()) if c is not None]
        parser.add_argument(_flag(f.name), dest=dest_prefix + f.name, type=t, default=argparse.SUPPRESS,
                            choices=allowed or None, metavar="{" + ",".join(map(str, allowed)) + "}" if allowed else f.name.upper(),
                            help=text.replace("%", "%%"))


class _Parser(argparse.ArgumentParser):
    """No prefix matching, and a mistake is one line (naming the closest valid flag), not the usage."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        if message.startswith("unrecognized arguments: "):
            unknown = message.split(": ", 1)[1].split()
            flags = [u for u in unknown if u.startswith("-")] or unknown
            known = [o for a in self._actions for o in a.option_strings]
            bad = flags[0].split("=")[0]
            close = difflib.get_close_matches(bad, known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"unknown flag {bad}{hint}; `{self.prog} --model MODEL --help` lists them")
        raise ConfigError(f"{message} (`{self.prog} --help` lists the flags)")


def parse_args(argv: list[str] | None = None) -> tuple[dict, dict | None]:
    """(overrides the user typed, replayed config or None). Two passes: --model picks the method flags."""
    from dgen.methods import method_names

    argv = list(sys.argv[1:] if argv is None else argv)
    first = _Parser(add_help=False)
    first.add_argument("--model")
    first.add_argument("--config")
    first.add_argument("--data")
    first.add_argument("--arch")
    known, _ = first.parse_known_args(argv)
    replay = None
    if known.config:
        path = Path(known.config)
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file")
        try:
            replay = json.loads(path.read_text())
        except ValueError as e:
            raise ConfigError(f"--config {path} is not valid JSON: {e}") from None
    model = known.model or (replay or {}).get("model", Config.model)
    shown = _shown_defaults(model, known, replay)

    parser = _Parser(
        prog="dgen train", description=f"Train a dgen model ({model} here: the defaults shown are what this run "
        f"will use, the preset for ({model}, {shown.data}) applied). Flags override the preset; "
        "`--model M --data D --help` shows another preset.",
        epilog="example: accelerate launch dgen/train.py --model dcgan --max-steps 500 --out runs/dcgan")
    parser.add_argument("--config", metavar="FILE", help="replay a resolved RUN_DIR/config.json (flags still override it)")
    _add_fields(parser, shown, "", {**CHOICES, "model": method_names()}, skip=("method", "resume"))
    parser.add_argument("--resume", nargs="?", const="latest", default=argparse.SUPPRESS, choices=("latest", "auto"),
                        help="continue from the latest checkpoint of --out (or the newest matching run); "
                             "'auto': only if one exists")
    parser.add_argument("--dry-run", action="store_true", default=argparse.SUPPRESS,
                        help="check the flags and the data, print the plan, and exit")
    group = parser.add_argument_group(f"{model} hyper-parameters")
    _add_fields(group, shown.method, "method.", getattr(type(shown.method), "CHOICES", {}))
    ns = vars(parser.parse_args(argv))
    ns.pop("config", None)
    overrides: dict = {"method": {}}
    for key, value in ns.items():
        if key.startswith("method."):
            overrides["method"][key[len("method."):]] = value
        else:
            overrides[key] = value
    return overrides, replay


def _shown_defaults(model: str, known, replay: dict | None) -> Config:
    """The values a run of `model` would use before the other flags: preset (or replayed config) applied."""
    typed = {"model": model, **({"data": known.data} if known.data else {}),
             "method": {"arch": known.arch} if known.arch else {}}
    try:
        return resolve(typed, replay)
    except DgenError:  # e.g. a bad --arch: the flags below still parse, and the run reports it
        cfg = Config(model=model)
        cfg.method = method_config(model)
        return cfg
