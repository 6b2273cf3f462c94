"""VAE training methods: `vae` (the seeds' conv VAE; MSE + weighted KL) and `mlp-vae` (seed 003;
BCE summed over pixels + KL).

    dgen train --model vae                                             # embedded digits, ~8 min on 2 CPU cores
    accelerate launch dgen/train.py --model vae --data celeba          # seed 001: latent 128, KL 0.00025
    accelerate launch dgen/train.py --model vae --data celeba --latent-dim 512 --kl-weight 1e-5   # seed 002

Loss units. `vae`: recon = mean squared error per pixel on [-1, 1] images; kl = KL(q(z|x) || N(0, I))
in nats per image (summed over latent dimensions, averaged over the batch); loss = recon +
kl_weight * kl (the convention of seeds 001/002). `mlp-vae`: recon = binary cross-entropy summed
over the pixels of an image (pixels mapped to [0, 1]), averaged over the batch; loss = recon + kl.
Averaging over the batch instead of summing (as seed 003 does) only rescales the loss by a
constant, which Adam's updates do not see.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dgen import presets
from dgen.eval.images import save_reconstructions, save_variations
from dgen.eval.tsne import save_tsne
from dgen.methods.base import Method, ReportContext, evaluating
from dgen.models.vae import ConvVAE, MlpVAE


def kl_per_image(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in nats, one value per image."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


@dataclass
class VAEConfig:
    latent_dim: int = 128  # size of the latent code z
    kl_weight: float = 0.00025  # weight of the KL term against the per-pixel reconstruction loss


class VAE(Method):
    Config = VAEConfig
    phases = ("vae",)
    loss_terms = ("recon", "kl")
    network = ConvVAE
    preset = staticmethod(lambda model, dataset, arch: presets.vae(dataset))

    def build(self):
        d = self.data
        return {"vae": self.network(d.image_size, d.channels, self.hp.latent_dim)}

    def optimizers(self):
        return {"vae": self.adam(self.models["vae"].parameters())}

    def phase_models(self, phase):
        return ["vae"]

    def recon_loss(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-image reconstruction loss (the method's units)."""
        return F.mse_loss(out.float(), x, reduction="none").flatten(1).mean(1)

    def loss(self, phase, batch):
        x = batch["image"]
        out, mu, logvar = self.models["vae"](x)
        recon = self.recon_loss(out, x).mean()
        kl = kl_per_image(mu.float(), logvar.float()).mean()
        return {"loss": recon + self.kl_scale() * kl, "recon": recon.detach(), "kl": kl.detach()}

    def noise(self, n, generator):
        return torch.randn(n, self.hp.latent_dim, generator=generator)

    def sample(self, z):
        with evaluating(self.unwrap("vae")) as vae:
            return vae.images(z)

    def encode(self, x):
        """(latent mean, log-variance, decoder output at the mean, images at the mean), eval mode."""
        with evaluating(self.unwrap("vae")) as vae:
            mu, logvar = vae.encode(x)
            decoded = vae.decode(mu)
            return mu, logvar, decoded, vae.to_images(decoded)

    def eval_sums(self, batch):
        """Test-set recon and KL from the latent mean (no sampling noise), and pixel MSE."""
        x = batch["image"]
        mu, logvar, decoded, images = self.encode(x)
        recon = self.recon_loss(decoded, x)
        kl = kl_per_image(mu.float(), logvar.float())
        mse = F.mse_loss(images.float(), x, reduction="none").flatten(1).mean(1)
        return {"recon": recon.sum(), "kl": kl.sum(), "loss": (recon + self.kl_scale() * kl).sum(), "mse": mse.sum()}

    def kl_scale(self) -> float:
        """Weight of the KL term in the loss."""
        return self.hp.kl_weight

    def report(self, ctx: ReportContext):
        x = torch.cat([b["image"] for b in ctx.test_batches])
        recon = self.encode(x[:10])[3]
        out = {}
        out["reconstructions"], _ = save_reconstructions(x[:10], recon, ctx.images_dir / "reconstructions.png")
        out["variations"] = self.save_sample_variations(ctx)
        # latent traversal: the 8 dimensions the encoder uses most, each swept over [-3, 3]
        means = torch.cat([self.encode(b["image"])[0] for b in ctx.test_batches])
        dims = means.var(0).argsort(descending=True)[:8]
        values = torch.linspace(-3, 3, 9, device=ctx.device)
        base = means.mean(0)
        rows = []
        for d in dims:
            z = base.repeat(len(values), 1)
            z[:, d] = values
            rows.append(self.sample(z))
        out["traversal"] = save_variations(torch.stack(rows), ctx.images_dir / "traversal.png",
                                           row_labels=[f"z{int(d)}" for d in dims])
        # t-SNE of latent means, coloured by class or by gender (CelebA's "Male" attribute)
        labels, names = self.tsne_labels(ctx)
        if labels is not None:
            out["tsne"], _ = save_tsne(means.float().cpu().numpy(), labels, ctx.images_dir / "tsne.png",
                                       label_names=names, title=f"t-SNE of latent means ({self.data.dataset} test)")
        return out

    def tsne_labels(self, ctx: ReportContext):
        batches = ctx.test_batches
        if "label" in batches[0]:
            return torch.cat([b["label"] for b in batches]).cpu().numpy(), self.data.classes
        attrs = self.data.attributes or []
        if "Male" in attrs:
            k = attrs.index("Male")
            return torch.cat([b["attrs"][:, k] for b in batches]).cpu().numpy(), ["female", "male"]
        return None, None


@dataclass
class MlpVAEConfig:
    latent_dim: int = 32  # size of the latent code z


class MlpVAEMethod(VAE):
    Config = MlpVAEConfig
    network = MlpVAE
    preset = staticmethod(lambda model, dataset, arch: presets.mlp_vae(dataset))

    def recon_loss(self, out, x):
        """Binary cross-entropy summed over an image's pixels; `out` are logits, targets in [0, 1]."""
        target = (x + 1) / 2
        return F.binary_cross_entropy_with_logits(out.float(), target, reduction="none").flatten(1).sum(1)

    def kl_scale(self) -> float:
        return 1.0


METHODS = {"vae": VAE, "mlp-vae": MlpVAEMethod}
