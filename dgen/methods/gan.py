"""GAN training methods: dcgan, lsgan, wgan, wgan-gp and vaegan, as named phases "D" and "G".

    accelerate launch dgen/train.py --model dcgan                      # embedded digits, 32 px
    accelerate launch dgen/train.py --model wgan --arch mlp --data mnist   # seed 003: MLPs, RMSprop 5e-5, n_critic 5
    accelerate launch dgen/train.py --model vaegan --init-from runs/vae-digits-...   # seed 001

A GAN flavour is a (d_loss, g_loss) pair sharing one signature (`AdversarialLoss`); the tricks of
seed 001 (label flipping every k steps, Gaussian label noise, noise on the discriminator's inputs)
are switches that work with any loss that has real/fake targets (bce, lsgan). For small datasets:
`--ema H` samples from an average of G's weights (half-life H G steps) and `--augment POLICY` runs
DiffAugment on everything D sees. Each trainer step runs "D" (and "G", every `n_critic`-th
step). The fake batch for D is made under no_grad (DDP would otherwise wait for G's gradients);
in the G step D is frozen (`Method.frozen`: no gradients, `no_sync`), so only G's gradients are all-reduced: no
gradient is reduced twice or left unsynchronised.

`--update simultaneous` (Wasserstein loss, n_critic 1) runs one phase "DG" instead: G's loss is minus the fake
term of D's loss, so one backward pass of D's loss, with the gradient reversed at G's output (the module DANN
uses), gives D's gradient and G's at once, against the same D; one optimizer, a parameter group per network,
then steps. It saves G's second forward and the second pass through D: ~1.2x the images/s on a CPU (docs/results.md).

Losses (per batch, averaged over images):
- bce (dcgan): D: BCE(D(x), 1) + BCE(D(G(z)), 0) on logits; G: non-saturating BCE(D(G(z)), 1).
- lsgan: D: (D(x) - 1)^2 + D(G(z))^2; G: (D(G(z)) - 1)^2 (a=0, b=c=1 of Mao et al.).
- wgan: D: D(G(z)) - D(x); G: -D(G(z)); critic weights clipped to [-clip, clip] after each D step.
- wgan-gp: wgan + gp_weight * (||grad_x_hat D(x_hat)||_2 - 1)^2 on random interpolates.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from dgen import presets
from dgen.errors import ConfigError
from dgen.methods.base import Method, ReportContext, evaluating
from dgen.models.augment import DiffAugment
from dgen.models.domain import GradientReversal
from dgen.models.gan import NORMS


# -- adversarial losses: one signature for every flavour ------------------------------------------
class AdversarialLoss:
    """d_loss(real_out, fake_out, real_target, fake_target) and g_loss(fake_out, real_target)."""

    uses_targets = True  # False: the loss ignores the targets, so the label tricks cannot apply to it
    g_is_minus_d = False  # True: g_loss(fake) is minus d_loss's fake term, so one backward can serve both

    def d_loss(self, real, fake, real_target, fake_target):
        raise NotImplementedError

    def g_loss(self, fake, real_target):
        raise NotImplementedError


class BCELoss(AdversarialLoss):
    def d_loss(self, real, fake, real_target, fake_target):
        return (F.binary_cross_entropy_with_logits(real, real_target)
                + F.binary_cross_entropy_with_logits(fake, fake_target))

    def g_loss(self, fake, real_target):
        return F.binary_cross_entropy_with_logits(fake, real_target)


class LSLoss(AdversarialLoss):
    def d_loss(self, real, fake, real_target, fake_target):
        return F.mse_loss(real, real_target) + F.mse_loss(fake, fake_target)

    def g_loss(self, fake, real_target):
        return F.mse_loss(fake, real_target)


class WassersteinLoss(AdversarialLoss):
    uses_targets = False
    g_is_minus_d = True

    def d_loss(self, real, fake, real_target, fake_target):
        return fake.mean() - real.mean()

    def g_loss(self, fake, real_target):
        return -fake.mean()


LOSSES = {"bce": BCELoss, "lsgan": LSLoss, "wgan": WassersteinLoss}
ARCHS = ("dcgan", "mnist", "mlp", "unbalanced")
OPTIMIZERS = ("adam", "rmsprop")
UPDATES = ("alternating", "simultaneous")


@dataclass
class GANConfig:
    CHOICES: typing.ClassVar[dict] = {"arch": ARCHS, "loss": tuple(LOSSES), "d_norm": tuple(NORMS),
                                      "optimizer": OPTIMIZERS, "update": UPDATES}
    arch: str = "dcgan"  # dcgan | mnist (seed 003, 28 px) | mlp (seed 003 WGAN) | unbalanced (seed 001)
    loss: str = "bce"  # bce | lsgan | wgan
    nz: int = 100  # latent size
    width: int = 64  # ngf = ndf (base width) for the convolutional architectures: dcgan, mnist
    d_norm: str = "batch"  # the DCGAN discriminator's normalisation: batch | layer | none (WGAN-GP critics)
    optimizer: str = "adam"  # adam | rmsprop
    lr_d: float = 0.0  # 0: the trainer's --lr
    n_critic: int = 1  # D steps per G step
    update: str = "alternating"  # alternating: D's step, then G's against the new D | simultaneous: one pass for both (wgan)
    clip: float = 0.0  # WGAN weight clipping of the critic; 0 = off
    gp_weight: float = 0.0  # WGAN-GP gradient penalty weight; 0 = off
    gp_every: int = 1  # the penalty on every k-th D step only, weighted k times (StyleGAN2's lazy regularisation)
    label_flip_every: int = 0  # swap real/fake targets for D every k-th step (seed 001: 16); 0 = off
    label_noise: float = 0.0  # std of Gaussian noise added to D's targets (seed 001: 0.1)
    instance_noise: float = 0.0  # std of Gaussian noise added to D's inputs (real and fake)
    augment: str = ""  # DiffAugment policy for D's inputs, e.g. "color,translation,cutout"; "" = off
    ema: float = 0.0  # half-life, in G steps, of the average of G's weights used for samples and FID; 0 = off
    ema_rampup: float = 0.05  # the half-life is at most this fraction of the G steps so far (StyleGAN2-ADA)
    init_from: str = ""  # vaegan: a dgen VAE run whose decoder initialises G


class GAN(Method):
    Config = GANConfig
    phases = ("D", "G")
    loss_terms = ("d_loss", "g_loss", "d_real", "d_fake")
    logs_loss = False
    preset = staticmethod(lambda model, dataset, arch: presets.dcgan(dataset))

    def __init__(self, cfg, data):
        hp = cfg.method
        if hp.loss not in LOSSES:
            raise ConfigError(f"--loss must be one of {', '.join(LOSSES)}, got {hp.loss!r}")
        if hp.optimizer not in OPTIMIZERS:
            raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {hp.optimizer!r}")
        if hp.n_critic < 1:
            raise ConfigError(f"--n-critic must be >= 1, got {hp.n_critic}")
        if hp.gp_every < 1:
            raise ConfigError(f"--gp-every must be >= 1, got {hp.gp_every}")
        if hp.update not in UPDATES:
            raise ConfigError(f"--update must be one of {', '.join(UPDATES)}, got {hp.update!r}")
        if hp.ema < 0 or hp.ema_rampup < 0:
            raise ConfigError(f"--ema and --ema-rampup must be >= 0, got {hp.ema} and {hp.ema_rampup}")
        self.adversarial = LOSSES[hp.loss]()
        tricks = [f for f, on in (("--label-flip-every", hp.label_flip_every), ("--label-noise", hp.label_noise)) if on]
        if tricks and not self.adversarial.uses_targets:
            verb = "change" if len(tricks) > 1 else "changes"
            raise ConfigError(f"{' and '.join(tricks)} {verb} D's real/fake targets, which the {hp.loss} loss does not "
                              "have (a critic's score has no target): use --loss bce or lsgan, or leave them at 0")
        self.simultaneous = hp.update == "simultaneous"
        if self.simultaneous and not (self.adversarial.g_is_minus_d and hp.n_critic == 1):
            raise ConfigError(f"--update simultaneous needs --loss wgan (G's loss is minus D's fake term) and "
                              f"--n-critic 1, got --loss {hp.loss} and --n-critic {hp.n_critic}: leave --update "
                              "alternating")
        if self.simultaneous:
            self.phases = ("DG",)  # one phase, one optimizer over both networks
            self.reverse = GradientReversal()
        try:
            self.augment = DiffAugment(hp.augment)
        except ValueError as e:
            raise ConfigError(f"--augment {hp.augment!r}: {e}") from None
        super().__init__(cfg, data)

    # -- networks and optimizers ------------------------------------------------------------------
    def build(self):
        from dgen.models import gan as nets

        hp, d = self.hp, self.data
        if hp.arch == "dcgan":
            g = nets.DCGANGenerator(hp.nz, hp.width, d.channels, d.image_size)
            dis = nets.DCGANDiscriminator(hp.width, d.channels, d.image_size, hp.d_norm)
        elif hp.arch == "mnist":
            if d.image_size != 28:
                raise ValueError(f"arch mnist (seed 003) makes 28x28 images; pass --image-size 28 (data: {d.image_size})")
            g, dis = nets.MnistGenerator(hp.nz, d.channels, hp.width), nets.MnistDiscriminator(d.channels, hp.width)
        elif hp.arch == "mlp":
            g = nets.MlpGenerator(nz=hp.nz, image_size=d.image_size, channels=d.channels)
            dis = nets.MlpCritic(image_size=d.image_size, channels=d.channels)
        elif hp.arch == "unbalanced":
            g = nets.UnbalancedGenerator(hp.nz, d.channels, d.image_size)
            dis = nets.UnbalancedDiscriminator(d.channels, d.image_size)
        else:
            raise ValueError(f"unknown --arch {hp.arch!r} ({', '.join(ARCHS)})")
        if hp.arch in ("dcgan", "mnist"):
            g.apply(nets.dcgan_init)
            dis.apply(nets.dcgan_init)
        if hp.init_from and not hasattr(g, "load_vae_decoder"):
            raise ConfigError(f"--init-from needs --arch unbalanced (a generator shaped like the VAE decoder), "
                              f"not {hp.arch}")
        models = {"G": g, "D": dis}
        if hp.ema:
            models["G_ema"] = AveragedModel(g, multi_avg_fn=self._ema_update, use_buffers=True)
            self.averages = {"G_ema": "G"}
        return models

    def _ema_beta(self) -> float:
        """How much of the average a G step keeps: a half-life of `ema` G steps, ramped up from the start (at
        most ema_rampup x the G steps so far), so the average does not drag the untrained weights along."""
        g_steps = (self.step + 1) // self.hp.n_critic
        half_life = min(self.hp.ema, self.hp.ema_rampup * g_steps) if self.hp.ema_rampup else self.hp.ema
        return 0.5 ** (1.0 / half_life) if half_life > 0 else 0.0

    def _ema_update(self, averages: list[torch.Tensor], currents: list[torch.Tensor], _updates) -> None:
        """One group of tensors (same device and dtype); integer buffers (BatchNorm's step count) are copied."""
        if averages[0].is_floating_point():
            torch._foreach_lerp_(averages, currents, 1.0 - self._ema_beta())
        else:
            torch._foreach_copy_(averages, currents)

    def initialise(self, load_run) -> None:
        """--init-from RUN: G starts as that VAE run's decoder (seed 001), and so does its average."""
        if not self.hp.init_from:
            return
        g = self.models["G"]
        try:
            vcfg, vae, ckpt = load_run(self.hp.init_from)
        except Exception as e:  # a missing run, a run without checkpoints, unreadable weights
            raise ConfigError(f"--init-from {self.hp.init_from}: {e}") from None
        if vcfg.model != "vae":
            raise ConfigError(f"--init-from {self.hp.init_from} is a {vcfg.model} run, not a vae run")
        try:
            g.load_vae_decoder(vae.unwrap("vae").state_dict())
        except ValueError as e:
            raise ConfigError(f"--init-from {ckpt}: the VAE decoder does not fit this generator ({e}); it was "
                              f"trained at {vcfg.image_size}px x{vcfg.channels} with latent {vcfg.method.latent_dim}, "
                              f"this GAN is {self.data.image_size}px x{self.data.channels} with --nz {self.hp.nz}") from None
        if "G_ema" in self.models:
            self.models["G_ema"].module.load_state_dict(g.state_dict())

    def optimizers(self):
        hp, c = self.hp, self.cfg
        lr_g, lr_d = c.lr, hp.lr_d or c.lr
        if self.simultaneous:  # one optimizer, a parameter group per network (each with its own learning rate)
            groups = [{"params": self.models["D"].parameters(), "lr": lr_d},
                      {"params": self.models["G"].parameters(), "lr": lr_g}]
            return {"DG": torch.optim.RMSprop(groups) if hp.optimizer == "rmsprop" else self.adam(groups)}
        if hp.optimizer == "rmsprop":
            return {"D": torch.optim.RMSprop(self.models["D"].parameters(), lr=lr_d),
                    "G": torch.optim.RMSprop(self.models["G"].parameters(), lr=lr_g)}
        return {"D": self.adam(self.models["D"].parameters(), lr_d), "G": self.adam(self.models["G"].parameters(), lr_g)}

    def phase_models(self, phase):
        return ["D", "G"] if phase == "DG" else [phase]

    def phases_at(self, step: int) -> tuple[str, ...]:
        """D every step; G after every n_critic-th D step (or both in one phase: --update simultaneous)."""
        if self.simultaneous:
            return self.phases
        return ("D", "G") if (step + 1) % self.hp.n_critic == 0 else ("D",)

    # -- losses --------------------------------------------------------------------------------------
    def noise(self, n, generator):
        return torch.randn(n, self.hp.nz, generator=generator)

    def _targets(self, n: int, device, step: int):
        real, fake = torch.ones(n, device=device), torch.zeros(n, device=device)
        hp = self.hp
        if hp.label_flip_every and (step + 1) % hp.label_flip_every == 0:
            real, fake = fake, real
        if hp.label_noise:
            real = real + hp.label_noise * torch.randn_like(real)
            fake = fake + hp.label_noise * torch.randn_like(fake)
        return real, fake

    def _d_input(self, x):
        """What D sees of an image: DiffAugment's transforms (if on), then instance noise (if on)."""
        x = self.augment(x)
        return x + self.hp.instance_noise * torch.randn_like(x) if self.hp.instance_noise else x

    def loss(self, phase, batch):
        real = batch["image"]
        n, step = len(real), self.step
        z = torch.randn(n, self.hp.nz, device=real.device)
        G, D = self.models["G"], self.models["D"]
        if phase in ("D", "DG"):
            if phase == "DG":  # G's gradient is D's, reversed at G's output: -d(fake term)/d(theta_G) = d g_loss
                fake = self.reverse(G(z))
            else:
                with torch.no_grad():  # G gets no gradient here (and DDP must not wait for one)
                    fake = G(z)
            out_real, out_fake = D(self._d_input(real)), D(self._d_input(fake))
            t_real, t_fake = self._targets(n, real.device, step)
            loss = self.adversarial.d_loss(out_real.float(), out_fake.float(), t_real, t_fake)
            if self.hp.gp_weight and step % self.hp.gp_every == 0:
                loss = loss + self.hp.gp_weight * self.hp.gp_every * self._gradient_penalty(D, real, fake)
            terms = {"loss": loss, "d_loss": loss.detach(), "d_real": out_real.detach().float().mean(),
                     "d_fake": out_fake.detach().float().mean()}
            if phase == "DG":
                terms["g_loss"] = self.adversarial.g_loss(out_fake.detach().float(), t_real)
            return terms
        with self.frozen("D"):
            out = D(self._d_input(G(z)))
            loss = self.adversarial.g_loss(out.float(), torch.ones(n, device=real.device))
        return {"loss": loss, "g_loss": loss.detach()}

    def _gradient_penalty(self, D, real, fake):
        eps = torch.rand(len(real), 1, 1, 1, device=real.device)
        x_hat = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
        out = D(x_hat)
        (grad,) = torch.autograd.grad(out.float().sum(), x_hat, create_graph=True)
        return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()

    def after_step(self, phase: str) -> None:
        if phase in ("D", "DG") and self.hp.clip:
            with torch.no_grad():
                for p in self.models["D"].parameters():
                    p.clamp_(-self.hp.clip, self.hp.clip)
        if phase in ("G", "DG") and "G_ema" in self.models:
            self.models["G_ema"].update_parameters(self.unwrap("G"))

    # -- samples and the report ----------------------------------------------------------------------
    def sample(self, z):
        """Images from G, or from the average of its weights when --ema is on (what FID and the grids see)."""
        g = self.models["G_ema"].module if "G_ema" in self.models else self.unwrap("G")
        with evaluating(g):
            return g(z)

    def report(self, ctx: ReportContext):
        return {"variations": self.save_sample_variations(ctx)}


# -- the seeds' GANs: defaults per flavour ---------------------------------------------------------------
@dataclass
class LSGANConfig(GANConfig):
    loss: str = "lsgan"


@dataclass
class WGANConfig(GANConfig):  # Arjovsky et al.: RMSprop, n_critic 5, clip 0.01; DCGAN nets (--arch mlp: seed 003's)
    loss: str = "wgan"
    optimizer: str = "rmsprop"
    n_critic: int = 5
    clip: float = 0.01


@dataclass
class WGANGPConfig(GANConfig):  # Gulrajani et al.: lambda 10, n_critic 5, Adam(1e-4, betas 0, 0.9), no BatchNorm in D
    loss: str = "wgan"
    d_norm: str = "layer"
    n_critic: int = 5
    gp_weight: float = 10.0


@dataclass
class VAEGANConfig(GANConfig):  # seed 001: unbalanced G/D, LSGAN, flips every 16 steps, label noise 0.1
    arch: str = "unbalanced"
    loss: str = "lsgan"
    nz: int = 128
    label_flip_every: int = 16
    label_noise: float = 0.1
    instance_noise: float = 0.1


def flavour(config: type, preset=None) -> type:
    """A GAN with other defaults (`config`) and, optionally, its own presets (else DCGAN's recipe with its loss)."""
    preset = preset or (lambda model, dataset, arch: presets.dcgan(dataset, config.loss))
    return type(f"GAN[{config.__name__}]", (GAN,), {"Config": config, "preset": staticmethod(preset)})


METHODS = {"dcgan": GAN, "lsgan": flavour(LSGANConfig),
           "wgan": flavour(WGANConfig, lambda model, dataset, arch: presets.wgan(dataset, arch)),
           "wgan-gp": flavour(WGANGPConfig, lambda model, dataset, arch: presets.wgan_gp(dataset, arch)),
           "vaegan": flavour(VAEGANConfig, lambda model, dataset, arch: presets.vaegan(dataset))}
