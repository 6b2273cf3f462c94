"""Training methods, one file per family; a new method is one class plus one name in `_registry` below
(GANs and adaptation methods: one entry in their file's METHODS, which `_registry` takes whole)."""

from __future__ import annotations

from dgen.errors import DgenError


def _registry() -> dict:
    from dgen.methods.adapt import METHODS as ADAPTATION
    from dgen.methods.gan import METHODS as GANS
    from dgen.methods.vae import VAE, MlpVAEMethod

    return {"vae": VAE, "mlp-vae": MlpVAEMethod, **GANS, **ADAPTATION}


def get_method(name: str):
    methods = _registry()
    if name not in methods:
        raise DgenError(f"unknown model {name!r}; known models: {', '.join(sorted(methods))}")
    return methods[name]


def method_names() -> list[str]:
    return sorted(_registry())
