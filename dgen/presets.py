"""Hyper-parameters per (model, dataset), from the seed documents, as plain functions; each method names its
own in its class (`Method.preset`, dgen/methods/), so a new method brings or inherits its presets.

Each returns (trainer overrides, method overrides); anything not named keeps the dataclass
default. Sources: seed 001 (CelebA VAE: latent 128, KL weight 0.00025, Adam lr 0.005, batch 128,
5 epochs at 64 px), seed 002 (latent 512, KL weight 1e-5: `--latent-dim 512 --kl-weight 1e-5`),
seed 003 (MNIST MLP VAE: latent 32, Adam 1e-3, 10 epochs). The embedded-digits presets are dgen's
own, tuned so the default CPU run finishes in minutes with recognisable samples; the MNIST ones finish
their default run in at most 20 minutes on 2 CPU cores (MNIST -> MNIST-M: 30), measured in docs/results.md.
GANs: DCGAN's Adam(2e-4, beta1 0.5); WGAN (seed 003) RMSprop 5e-5 with n_critic 5; WGAN-GP
Adam(1e-4, betas 0, 0.9); vaegan (seed 001) Adam lr 0.005 and batch 128 on CelebA.
"""

from __future__ import annotations

SMALL_DIGITS = {"digits", "digits-m", "mnist", "mnist-m", "usps", "svhn"}


def epochs_to_steps(epochs: int, samples: int, batch: int) -> int:
    return -(-epochs * samples // batch)


def vae(dataset: str) -> tuple[dict, dict]:
    if dataset == "celeba":  # seed 001
        return dict(batch_size=128, lr=0.005, max_steps=epochs_to_steps(5, 162_770, 128), sample_every=500,
                    eval_every=1000, ckpt_every=1000), dict(latent_dim=128, kl_weight=0.00025)
    if dataset in ("digits", "digits-m"):  # 1,437 training images: ~8 minutes on 2 CPU cores (make train)
        return dict(batch_size=64, lr=1e-3, max_steps=1500, log_every=25, sample_every=250, eval_every=500,
                    ckpt_every=500), dict(latent_dim=16, kl_weight=0.0025)
    if dataset == "mnist":  # the digits recipe at 28 px, 5 epochs: ~7 minutes on 2 CPU cores (docs/results.md)
        return dict(batch_size=128, lr=1e-3, max_steps=epochs_to_steps(5, 60_000, 128), **MNIST_CADENCE), \
            dict(latent_dim=16, kl_weight=0.0025)
    if dataset in SMALL_DIGITS:
        return dict(batch_size=128, lr=1e-3, max_steps=epochs_to_steps(10, 60_000, 128)), \
            dict(latent_dim=16, kl_weight=0.0025)
    return {}, {}


def mlp_vae(dataset: str) -> tuple[dict, dict]:
    if dataset == "mnist":  # seed 003: 10 epochs, ~2 minutes on 2 CPU cores
        return dict(batch_size=128, lr=1e-3, max_steps=epochs_to_steps(10, 60_000, 128), **MNIST_CADENCE), \
            dict(latent_dim=32)
    if dataset in ("digits", "digits-m"):
        return dict(batch_size=64, lr=1e-3, max_steps=1500, log_every=25, sample_every=250, eval_every=500,
                    ckpt_every=500), dict(latent_dim=16)
    return {}, {}


DIGITS_GAN = dict(batch_size=64, max_steps=1500, log_every=25, sample_every=250, eval_every=500, ckpt_every=500)
# dcgan, lsgan, wgan, wgan-gp on the embedded digits: half-width networks, 6,000 steps, FID at 1/3, 2/3 and the end
DIGITS_GAN_LONG = {**DIGITS_GAN, "max_steps": 6000, "eval_every": 2000, "sample_every": 500, "ckpt_every": 1000}
EMBEDDED = ("digits", "digits-m")
# Real MNIST (60,000 training digits): logs, samples and checkpoints often enough to watch a run of 10-20 minutes,
# FID at about 1/3, 2/3 and the end (the trainer also evaluates at the last step)
MNIST_CADENCE = dict(log_every=50, sample_every=500, eval_every=1000, ckpt_every=500)
# What the field uses for small datasets, measured on the embedded digits (docs/results.md): an average of G's
# weights for samples and FID (half-life 100 G steps, ramped up) and DiffAugment on D's inputs.
SMALL_DATA_GAN = dict(ema=100.0, augment="color,translation,cutout")
# The GANs built for 32 px (dcgan's and wgan's networks, vaegan's) on MNIST: its 28 px digits resized to 32
MNIST_GAN = dict(batch_size=64, image_size=32, **MNIST_CADENCE)


def dcgan(dataset: str, loss: str = "bce") -> tuple[dict, dict]:
    """Radford et al.'s Adam(2e-4, beta1 0.5); seeds 000/002/004 on CelebA 64 (nz 100, ngf/ndf 64)."""
    adam = dict(lr=2e-4, beta1=0.5, beta2=0.999)
    if dataset == "celeba":
        return dict(batch_size=128, max_steps=epochs_to_steps(5, 162_770, 128), **adam), dict(loss=loss)
    if dataset == "mnist":  # seed 003's 28x28 network at half width (32; `--width 64` is the seed's, 4x the compute),
        # 5 epochs, the average of G's weights for samples and FID; ~10 minutes on 2 CPU cores with native bf16
        return (dict(batch_size=128, max_steps=epochs_to_steps(5, 60_000, 128), **adam, **MNIST_CADENCE,
                     **_cpu_speed()),
                dict(arch="mnist", loss=loss, width=32, ema=SMALL_DATA_GAN["ema"]))
    if dataset in EMBEDDED:  # half width (ngf = ndf = 32) buys twice the steps of width 64 in the CPU budget,
        # and both losses reach FID < 20 there (docs/results.md); FID at 1/3, 2/3 and the end
        return {**DIGITS_GAN_LONG, **adam}, dict(loss=loss, width=32, **SMALL_DATA_GAN)
    if dataset in SMALL_DIGITS:
        return dict(**DIGITS_GAN, **adam), dict(loss=loss)
    return adam, dict(loss=loss)


def wgan(dataset: str, arch: str | None = None) -> tuple[dict, dict]:
    """Convolutional by default (DCGAN's G and a BatchNorm critic, as the WGAN paper's DCGAN experiment), RMSprop,
    clipping 0.01 (0.1 on the embedded digits). `--arch mlp` is seed 003's recipe: its MLPs, RMSprop 5e-5, n_critic 5
    (5,000 steps on digits)."""
    if arch == "mlp":
        top = dict(lr=5e-5, batch_size=64)
        return ({**DIGITS_GAN, **top, "max_steps": 5000} if dataset in SMALL_DIGITS else top), {}
    if dataset == "mnist":  # the embedded digits' recipe (below) at 32 px, without DiffAugment (60,000 images)
        return ({**MNIST_GAN, "lr": 2e-4, "max_steps": 12_000, "eval_every": 4000, **_cpu_speed()},
                dict(arch="dcgan", width=32, n_critic=1, clip=0.1, update="simultaneous", ema=SMALL_DATA_GAN["ema"]))
    if dataset in EMBEDDED:  # measured there (docs/results.md): half width, n_critic 1, lr 2e-4 and clipping at 0.1
        # learn fastest per step (clip 0.01: 32.4, 0.2: 27.1 at 6,000 steps), but clipping needs ~15,000 steps for
        # FID < 20: D and G update in one pass (1.2x the images/s) and, on a CPU, in bf16 where it computes bf16 natively
        return ({**DIGITS_GAN_LONG, "lr": 2e-4, "max_steps": 15_000, "eval_every": 5000, "sample_every": 1000,
                 "ckpt_every": 2500, **_cpu_speed()},
                dict(arch="dcgan", width=32, n_critic=1, clip=0.1, update="simultaneous", **SMALL_DATA_GAN))
    return dict(lr=5e-5, batch_size=64), dict(arch="dcgan")


def wgan_gp(dataset: str, arch: str | None = None) -> tuple[dict, dict]:
    """Gulrajani et al.'s Adam(1e-4, betas 0, 0.9), lambda 10. Convolutional by default (DCGAN's G, a critic with
    layer norm: the penalty is per image, so no BatchNorm); on the embedded digits lr 2e-4, a G step after every
    critic step and the penalty on every 4th critic step (x4: `--gp-every 4`, StyleGAN2's lazy regularisation);
    `--arch mlp` keeps seed 003's MLPs with n_critic 5 and lr 1e-4."""
    top = dict(lr=1e-4, beta1=0.0, beta2=0.9)
    if arch == "mlp":
        return ({**DIGITS_GAN, **top, "max_steps": 5000} if dataset in SMALL_DIGITS else top), {}
    meth = dict(arch="dcgan", d_norm="layer")
    if dataset == "mnist":  # the embedded digits' recipe (below) at 32 px, without DiffAugment
        return {**MNIST_GAN, **top, "lr": 2e-4, "max_steps": 6000, "eval_every": 2000}, \
            {**meth, "width": 32, "n_critic": 1, "gp_every": 4, "ema": SMALL_DATA_GAN["ema"]}
    if dataset in EMBEDDED:  # half width and 6,000 steps, as dcgan; measured there (docs/results.md): n_critic 1
        # learns fastest in the CPU budget (FID 17.9; n_critic 2: 36.0), the lazy penalty pays for its G steps
        return {**DIGITS_GAN_LONG, **top, "lr": 2e-4}, {**meth, "width": 32, "n_critic": 1, "gp_every": 4,
                                                        **SMALL_DATA_GAN}
    return top, meth


def vaegan(dataset: str) -> tuple[dict, dict]:
    """Seed 001 on CelebA: Adam lr 0.005, batch 128, 5 epochs, latent 128."""
    if dataset == "celeba":
        return dict(batch_size=128, lr=0.005, max_steps=epochs_to_steps(5, 162_770, 128)), dict(nz=128)
    if dataset == "mnist":  # the embedded digits' recipe at 32 px and twice the steps
        return dict(MNIST_GAN, max_steps=3000, lr=2e-4, beta1=0.5), dict(nz=16, ema=SMALL_DATA_GAN["ema"])
    if dataset in EMBEDDED:  # latent 16 to match the digits VAE preset; the average of G's weights, but no
        # DiffAugment: with seed 001's own tricks for D (instance noise, flips, label noise) it measured worse
        return dict(**DIGITS_GAN, lr=2e-4, beta1=0.5), dict(nz=16, ema=SMALL_DATA_GAN["ema"])
    return {}, {}


# -- domain adaptation: --data SOURCE:TARGET -----------------------------------------------------------
TRAIN_SIZES = {"digits": 1_437, "digits-m": 1_437, "mnist": 60_000, "mnist-m": 60_000, "usps": 7_291, "svhn": 73_257}
# 1,500 steps: the plain DANN recipe's length (docs/results.md); ~3 min for dann on 2 CPU cores
DIGITS_DA = dict(batch_size=64, max_steps=1500, log_every=50, eval_every=500, ckpt_every=500)


def adaptation(model: str, dataset: str) -> tuple[dict, dict]:
    """All pairs at 32 px (the GTA networks need 32; RGB if either side is). The embedded pair: dgen's
    own CPU preset, 1,500 steps (GTA: 2,500) of 64 (+64 target) images. The seeds' pairs: seed 002's settings, Adam
    1e-3 and batch 128 for 100 source epochs (capped at 30,000 steps); GTA: Adam(5e-4, beta1 0.8),
    batch 100 (its reference implementation's defaults) and seed 002's GTA networks (`--arch gta`)."""
    source = dataset.split(":")[0]
    gta = model == "gta"
    top: dict = dict(image_size=32)
    method: dict = {}
    if source in ("digits", "digits-m"):
        top.update(DIGITS_DA)
        if gta:  # the same F and C as the other rows (--arch cnn); G and D at a quarter width (16) make a step
            # ~2x cheaper on the CPU, which buys 2,500 steps in the budget (docs/results.md)
            top.update(max_steps=2500)
            method.update(width=16)
            top.update(_cpu_speed())
    elif source == "mnist":  # MNIST -> MNIST-M on a CPU: 3,000 steps of 64 (+64 target) images, ~7 minutes for
        # dann on 2 cores; GTA as on the embedded digits (the shared F and C, G and D at width 16, bf16 where native)
        top.update(batch_size=64, max_steps=3000, log_every=100, eval_every=1000, ckpt_every=1000)
        if gta:
            method.update(width=16)
            top.update(_cpu_speed())
    elif source in TRAIN_SIZES:
        batch = 100 if gta else 128
        top.update(batch_size=batch, max_steps=min(30_000, epochs_to_steps(100, TRAIN_SIZES[source], batch)),
                   log_every=100, eval_every=1000, ckpt_every=1000)
        if gta:  # seed 002's GTA networks
            method.update(arch="gta")
    if gta:
        top.update(lr=5e-4, beta1=0.8)
    return top, method


def _cpu_speed() -> dict:
    """On a CPU (none on a GPU machine): bf16 autocast where the CPU computes bf16 natively, and no loader processes
    competing with the step for the cores. They bring GTA's and wgan's default runs on the embedded digits to ~10
    minutes on 2 cores (docs/results.md)."""
    import torch

    if torch.cuda.is_available():
        return {}
    return {"num_workers": 0, **({"mixed_precision": "bf16"} if cpu_native_bf16() else {})}


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX, as oneDNN reports): there bf16 autocast
    is faster than fp32; elsewhere it is emulated and slower."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False

