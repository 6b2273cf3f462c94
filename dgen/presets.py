"""Hyper-parameters per (model, dataset), from the seed documents, as plain functions.

Each returns (trainer overrides, method overrides); anything not named keeps the dataclass
default. Sources: seed 001 (CelebA VAE: latent 128, KL weight 0.00025, Adam lr 0.005, batch 128,
5 epochs at 64 px), seed 002 (latent 512, KL weight 1e-5: `--latent-dim 512 --kl-weight 1e-5`),
seed 003 (MNIST MLP VAE: latent 32, Adam 1e-3, 10 epochs). The embedded-digits presets are dgen's
own, tuned so the default CPU run finishes in minutes with recognisable samples.
"""

from __future__ import annotations

SMALL_DIGITS = {"digits", "digits-m", "mnist", "mnist-m", "usps", "svhn"}


def epochs_to_steps(epochs: int, samples: int, batch: int) -> int:
    return -(-epochs * samples // batch)


def vae(dataset: str) -> tuple[dict, dict]:
    if dataset == "celeba":  # seed 001
        return dict(batch_size=128, lr=0.005, max_steps=epochs_to_steps(5, 162_770, 128), sample_every=500,
                    eval_every=1000, ckpt_every=1000), dict(latent_dim=128, kl_weight=0.00025)
    if dataset in ("digits", "digits-m"):  # 1,437 training images: ~1 min per 100 steps on 2 CPU cores
        return dict(batch_size=64, lr=1e-3, max_steps=1500, log_every=25, sample_every=250, eval_every=500,
                    ckpt_every=500), dict(latent_dim=16, kl_weight=0.0025)
    if dataset in SMALL_DIGITS:
        return dict(batch_size=128, lr=1e-3, max_steps=epochs_to_steps(10, 60_000, 128)), \
            dict(latent_dim=16, kl_weight=0.0025)
    return {}, {}


def mlp_vae(dataset: str) -> tuple[dict, dict]:
    if dataset == "mnist":  # seed 003
        return dict(batch_size=128, lr=1e-3, max_steps=epochs_to_steps(10, 60_000, 128)), dict(latent_dim=32)
    if dataset in ("digits", "digits-m"):
        return dict(batch_size=64, lr=1e-3, max_steps=1500, log_every=25, sample_every=250, eval_every=500,
                    ckpt_every=500), dict(latent_dim=16)
    return {}, {}


PRESETS = {"vae": vae, "mlp-vae": mlp_vae}


def preset(model: str, dataset: str) -> tuple[dict, dict]:
    fn = PRESETS.get(model)
    return fn(dataset) if fn else ({}, {})
