"""Training methods, one file per family. A method is one class and one registry entry: the built-in ones
are the METHODS of vae.py, gan.py and adapt.py; `register(name, cls)` adds one, and the modules named in
DGEN_METHODS (comma-separated, importable) are imported first, so a method of your own needs no edit here:

    DGEN_METHODS=mylab.dan dgen train --model dan --data digits:digits-m   # mylab/dan.py calls register("dan", DAN)

Everything else derives from the class: its flags (its Config dataclass), its family (`generative`,
`domains`), its presets (`Method.preset`) and its row in `dgen eval --table` (`Method.label`). See
docs/contributing.md.
"""

from __future__ import annotations

import importlib
import os

from dgen.errors import ConfigError, DgenError

_REGISTERED: dict = {}


def register(name: str, cls: type) -> type:
    """Add method `cls` under model name `name` (a plugin's one line); returns `cls`."""
    _REGISTERED[name] = cls
    return cls


def _registry() -> dict:
    from dgen.methods.adapt import METHODS as ADAPTATION
    from dgen.methods.gan import METHODS as GANS
    from dgen.methods.vae import METHODS as VAES

    for module in filter(None, (m.strip() for m in os.environ.get("DGEN_METHODS", "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"DGEN_METHODS names {module!r}, which cannot be imported: {e}") from None
    return {**VAES, **GANS, **ADAPTATION, **_REGISTERED}


def get_method(name: str):
    methods = _registry()
    if name not in methods:
        raise DgenError(f"unknown model {name!r}; known models: {', '.join(sorted(methods))}")
    return methods[name]


def method_names() -> list[str]:
    return sorted(_registry())


def table_rows() -> dict[str, tuple[str, str]]:
    """model -> (its row label in the adaptation table, its domains): the lower bound (domains "source") first,
    then the adaptation methods ("both"), the upper bound ("target") last, each group in registry order."""
    rank = {"source": 0, "both": 1, "target": 2}
    rows = [(name, cls) for name, cls in _registry().items() if cls.domains in rank]
    rows.sort(key=lambda nc: rank[nc[1].domains])
    return {name: (cls.label or name, cls.domains) for name, cls in rows}


def adaptation_models() -> list[str]:
    """The models that train on a SOURCE:TARGET pair (adaptation methods and both bounds)."""
    return list(table_rows())
