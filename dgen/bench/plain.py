"""The baselines `dgen bench` measures dgen against, written by us the way a user's own script would
be: the PyTorch DCGAN tutorial's loop (fp32, NCHW, `torch.optim.Adam` with its defaults, `.item()`
of the losses every step, batches copied with a plain `.to(device)`) and torchvision's
`ImageFolder` reading one PNG file per image. The networks, losses, batch size and learning rates
are dgen's own (the same `nn.Module`s built by the method), so the work per image is the same.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader


def folder_loader(root: Path, channels: int, batch_size: int, workers: int) -> DataLoader:
    """torchvision's ImageFolder + DataLoader: open, decode and normalise one PNG file per image."""
    from PIL import Image
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    mode = "L" if channels == 1 else "RGB"

    def load(path: str):
        with open(path, "rb") as f:
            return Image.open(io.BytesIO(f.read())).convert(mode)

    tf = T.Compose([T.PILToTensor(), T.ConvertImageDtype(torch.float32), T.Normalize([0.5] * channels, [0.5] * channels)])
    ds = ImageFolder(str(root), transform=tf, loader=load)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                      persistent_workers=workers > 0)


PLAIN_MODELS = ("dcgan", "lsgan", "wgan-gp", "vae")


def plain_step(model: str, nets: dict, cfg, device) -> Callable[[torch.Tensor], float]:
    """One training step of `model` on a batch of real images, as a hand-written loop does it."""
    if model in ("dcgan", "lsgan", "wgan-gp"):
        return _gan(model, nets["G"], nets["D"], cfg, device)
    if model == "vae":
        return _vae(nets["vae"], cfg)
    raise ValueError(f"no plain baseline for {model!r} (there are: {', '.join(PLAIN_MODELS)})")


def _gan(model, G, D, cfg, device):
    """The tutorial's loop: D on real and G's fakes, then G through D reusing the same fakes. WGAN-GP
    (Gulrajani et al.'s algorithm 1): critic loss + 10 x gradient penalty, G every n_critic-th step."""
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.method.lr_d or cfg.lr, betas=(cfg.beta1, cfg.beta2))
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    nz, n_critic, gp = cfg.method.nz, cfg.method.n_critic, cfg.method.gp_weight
    adversarial = {"dcgan": F.binary_cross_entropy_with_logits, "lsgan": F.mse_loss}.get(model)
    steps = [0]

    def step(real: torch.Tensor) -> float:
        b = real.size(0)
        ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
        opt_d.zero_grad()
        fake = G(torch.randn(b, nz, device=device))
        if adversarial is not None:
            err_d = adversarial(D(real), ones) + adversarial(D(fake.detach()), zeros)
        else:
            err_d = D(fake.detach()).mean() - D(real).mean()
            eps = torch.rand(b, 1, 1, 1, device=device)
            x_hat = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
            (grad,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
            err_d = err_d + gp * ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
        err_d.backward()
        opt_d.step()
        steps[0] += 1
        if steps[0] % n_critic:
            return err_d.item()
        opt_g.zero_grad()
        err_g = adversarial(D(fake), ones) if adversarial is not None else -D(fake).mean()
        err_g.backward()
        opt_g.step()
        return err_d.item() + err_g.item()

    return step


def _vae(vae, cfg):
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    kl_weight = cfg.method.kl_weight

    def step(x: torch.Tensor) -> float:
        out, mu, logvar = vae(x)
        recon = F.mse_loss(out, x)
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
        loss = recon + kl_weight * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return step
