"""From what the user typed to a resolved Config: defaults < per-(model, dataset) presets < a replayed
config.json < command-line flags. This module sits above dgen.config and dgen.methods (it needs each
method's own config dataclass and the presets); neither imports it.

    overrides, replay = parse_args(["--model", "vae", "--max-steps", "300"])
    cfg = resolve(overrides, replay)
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import typing
from dataclasses import fields
from pathlib import Path

from dgen.config import CHOICES, Config, arg_type, flag_name, field_help, update, validate
from dgen.data.domains import dataset_name
from dgen.errors import ConfigError, DgenError
from dgen.methods import get_method, method_names


def blank(model: str) -> Config:
    """The dataclass defaults for `model`, its method's own config included (no preset)."""
    cfg = Config(model=model)
    cfg.method = get_method(model).Config()
    return cfg


def resolve(overrides: dict, replay: dict | None = None, dataset: str | None = None) -> Config:
    """Defaults < preset(model, dataset) < replayed config < overrides (flag values the user gave)."""
    base = dict(replay or {})
    base.pop("shuffle_buffer", None)  # a run from before the global sample order: the key it no longer has
    model = overrides.get("model", base.get("model", Config.model))
    cfg = blank(model)
    data = overrides.get("data", base.get("data", Config.data))
    if replay is None:
        cls = get_method(model) if model in method_names() else None
        adaptation = cls.domains is not None if cls else None
        top, meth = cls.preset(model, dataset or dataset_name(data, adaptation),
                               overrides.get("method", {}).get("arch")) if cls else ({}, {})
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
def _add_fields(parser, obj, dest_prefix: str, choices: dict, skip=()) -> None:
    """One flag per field of the dataclass instance `obj`, its help text and its value in `obj` shown."""
    cls = type(obj)
    hints, helps = typing.get_type_hints(cls), field_help(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        t = arg_type(hints[f.name])
        value = getattr(obj, f.name)
        shown = "off" if value == "" else value
        text = f"{helps.get(f.name, '')} (default: {shown})".strip()
        if t is bool:
            parser.add_argument(flag_name(f.name), dest=dest_prefix + f.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=text)
            continue
        allowed = [c for c in choices.get(f.name, ()) if c is not None]
        parser.add_argument(flag_name(f.name), dest=dest_prefix + f.name, type=t, default=argparse.SUPPRESS,
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
        return blank(model)
