"""The one interface between the trainer and a training method.

A method owns its networks, optimizers and losses and names its update phases (one for a VAE;
"D", "G" for GANs). Each step the trainer runs every phase in order: it zeroes that phase's
optimizer, calls `loss(phase, batch)` under autocast for each micro-batch, back-propagates, clips,
and steps. The trainer also asks the method for fixed-noise samples, evaluation sums, and the
pictures of its final report. Networks are called through `self.models[name]` (the trainer hands
the DDP-wrapped versions over with `prepared()`); `self.unwrap(name)` gives the bare module for sampling.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from einops import rearrange
from torch import nn


@dataclass
class DataSpec:
    """What a method may know about its data (from the shard manifest and the config)."""

    dataset: str
    image_size: int
    channels: int
    classes: list[str] | None
    attributes: list[str] | None


@dataclass
class ReportContext:
    """Handed to `Method.report` on the main process once training ends."""

    images_dir: Path
    test_batches: list[dict]  # the test split (up to a few thousand images), on the device
    generator: torch.Generator  # seeded: reports are reproducible
    device: torch.device
    source_batches: list[dict] | None = None  # a domain-adaptation run's source test split (the other domain)


class Method:
    Config: ClassVar[type]  # dataclass of the method's hyper-parameters
    phases: ClassVar[tuple[str, ...]]
    loss_terms: ClassVar[tuple[str, ...]] = ()  # logged terms besides "loss", drawn as learning curves
    # False for adversarial methods: their phases' own terms (d_loss, g_loss) say more than the "loss" back-propagated
    logs_loss: ClassVar[bool] = True
    generative: ClassVar[bool] = True  # draws samples from noise (sample grids, FID/KID); False for classifiers
    label: ClassVar[str | None] = None  # its row in `dgen eval --table` (methods with domains); None: the model name
    # None: trains on one dataset. Domain adaptation (--data SOURCE:TARGET): "source" or "target" (that
    # domain's labelled data only), "both" (labelled source + unlabelled target); evaluated on the target.
    domains: ClassVar[str | None] = None

    @staticmethod
    def preset(model: str, dataset: str, arch: str | None) -> tuple[dict, dict]:
        """Hyper-parameters for (this model, dataset; the user's --arch): (trainer overrides, method overrides),
        usually one of dgen/presets.py's functions. The defaults of the dataclasses otherwise."""
        return {}, {}

    def __init__(self, cfg, data: DataSpec):
        self.cfg, self.hp, self.data = cfg, cfg.method, data
        # models that are running averages of another (name -> its source, e.g. {"G_ema": "G"}), set by build():
        # updated by the method itself, never by an optimizer, so not wrapped for DDP; checkpointed all the same
        self.averages: dict[str, str] = {}
        self.models: dict[str, nn.Module] = self.build()
        self._unwrap: Callable[[nn.Module], nn.Module] = lambda m: m  # see prepared()
        self._accelerator = None
        self.step = 0  # the trainer's optimizer-step count before the current step
        self.memory_format = torch.contiguous_format  # the trainer's choice of layout for images (channels-last)

    # -- to implement ------------------------------------------------------------------------------
    def build(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Phase name -> its optimizer (over the parameters that phase updates)."""
        raise NotImplementedError

    def phase_models(self, phase: str) -> list[str]:
        """Names of the models whose parameters `phase` updates (gradient sync and clipping)."""
        raise NotImplementedError

    def loss(self, phase: str, batch: dict) -> dict[str, torch.Tensor]:
        """{"loss": scalar to back-propagate, TERM: detached scalar for each name in loss_terms}."""
        raise NotImplementedError

    def phases_at(self, step: int) -> tuple[str, ...]:
        """The phases to run at `step` (e.g. G only every n_critic-th step)."""
        return self.phases

    def initialise(self, load_run: Callable) -> None:
        """Before training starts (not when a run is loaded back): weights from elsewhere, e.g. vaegan's G
        from a VAE run. `load_run(run_dir)` gives (config, method, checkpoint folder) of a trained run."""

    def after_step(self, phase: str) -> None:
        """Called after `phase`'s optimizer step (e.g. WGAN weight clipping)."""

    def noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from latents `z` (eval mode)."""
        raise NotImplementedError

    @torch.no_grad()
    def eval_sums(self, batch: dict) -> dict[str, torch.Tensor]:
        """Per-batch *sums* of evaluation metrics; the trainer adds them over the split and all ranks."""
        return {}

    def finish_eval(self, metrics: dict[str, float], prefix: str) -> dict[str, float]:
        """Turn the evaluation means (sums / images, keys prefixed) into the logged metrics, e.g. ratios."""
        return metrics

    def report(self, ctx: ReportContext) -> dict[str, Path]:
        """Method-specific pictures for the final report (main process). Name -> PNG path."""
        return {}

    # -- provided ------------------------------------------------------------------------------------
    def prepared(self, models: dict[str, nn.Module], accelerator, unwrap: Callable[[nn.Module], nn.Module]) -> None:
        """The trainer hands back the models as Accelerate prepared them (DDP or DeepSpeed wrappers, devices),
        the Accelerator (for no_sync in frozen()) and how to reach a bare network inside its wrappers."""
        self.models, self._accelerator, self._unwrap = models, accelerator, unwrap

    def trained(self) -> list[str]:
        """Names of the models an optimizer updates (all but the running averages), in build order."""
        return [n for n in self.models if n not in self.averages]

    def unwrap(self, name: str) -> nn.Module:
        return self._unwrap(self.models[name])

    @contextmanager
    def frozen(self, *names: str):
        """Models that a phase runs but does not update (e.g. D in a GAN's G step): their parameters need no
        gradient, and under DDP their replicas skip the all-reduce, so only the phase's own models are synced."""
        params = [p for n in names for p in self.models[n].parameters()]
        for p in params:
            p.requires_grad_(False)
        try:
            with contextlib.ExitStack() as stack:
                if self._accelerator is not None:
                    for n in names:
                        stack.enter_context(self._accelerator.no_sync(self.models[n]))
                yield
        finally:
            for p in params:
                p.requires_grad_(True)

    @torch.no_grad()
    def save_sample_variations(self, ctx: ReportContext) -> Path:
        """Seed 001's "one sample with variations": 8 random latents (first column: their samples), each row
        that latent plus 0.3 x Gaussian perturbations. For generative methods (noise and sample)."""
        from dgen.eval.images import save_variations

        z0 = self.noise(8, ctx.generator).to(ctx.device)
        eps = rearrange(self.noise(8 * 8, ctx.generator).to(ctx.device), "(r k) d -> r k d", r=8)
        rows = torch.stack([self.sample(z0[i] + 0.3 * eps[i]) for i in range(8)])
        rows[:, 0] = self.sample(z0)
        return save_variations(rows, ctx.images_dir / "variations.png")

    def adam(self, params, lr: float | None = None) -> torch.optim.Adam:
        """Adam with the run's settings; the fused kernel (one launch for all parameters, CPU and CUDA)."""
        c = self.cfg
        return torch.optim.Adam(params, lr=lr or c.lr, betas=(c.beta1, c.beta2), weight_decay=c.weight_decay,
                                fused=True)


@contextmanager
def evaluating(*modules: nn.Module):
    """Eval mode (BatchNorm running stats, no dropout) and no_grad for the modules, restoring their modes
    afterwards. Yields the module (or the tuple of them)."""
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad():
            yield modules[0] if len(modules) == 1 else modules
    finally:
        for m, mode in zip(modules, was):
            m.train(mode)
