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


def plain_step(model: str, nets: dict, cfg, device) -> Callable[[torch.Tensor], float]:
    """One training step of `model` on a batch of real images, as a hand-written loop does it."""
    if model == "dcgan":
        return _dcgan(nets["G"], nets["D"], cfg, device)
    if model == "vae":
        return _vae(nets["vae"], cfg)
    raise ValueError(f"no plain baseline for {model!r} (there are: dcgan, vae)")


def _dcgan(G, D, cfg, device):
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    nz = cfg.method.nz

    def step(real: torch.Tensor) -> float:
        b = real.size(0)
        ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
        opt_d.zero_grad()
        fake = G(torch.randn(b, nz, device=device))
        err_d = (F.binary_cross_entropy_with_logits(D(real), ones)
                 + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros))
        err_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        err_g = F.binary_cross_entropy_with_logits(D(fake), ones)
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
