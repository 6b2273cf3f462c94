"""Differentiable augmentation of a discriminator's inputs (DiffAugment, Zhao et al. 2020).

    from dgen.models.augment import DiffAugment
    aug = DiffAugment("color,translation,cutout")
    d_real, d_fake = D(aug(real)), D(aug(G(z)))      # the same kind of transform on both, every step

On a small dataset D memorises the real images within a few thousand steps and its feedback to G turns
to noise. Showing D only randomly transformed images (real and fake alike, in D's step and in G's)
removes the shortcut. Every transform is differentiable, so G still learns through it, and real and
fake images go through the same kind of transforms, so G is pushed towards the untransformed data, not
towards producing the transforms.

Policies (each applied per image, with its own random draw, in the order given):
- color: brightness + U(-0.5, 0.5), saturation x U(0, 2) around the pixel's channel mean, contrast
  x U(0.5, 1.5) around the image mean (on images in [-1, 1]; saturation is a no-op for gray images).
- translation: a shift by up to 1/8 of the side in each direction, the uncovered border filled with 0.
- cutout: a square of half the side, at a random centre, set to 0.
Randomness comes from the global torch RNG, i.e. the training run's own generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    """"color,translation" -> ("color", "translation"); "" -> (); ValueError naming an unknown part."""
    parts = tuple(p.strip() for p in policy.split(",") if p.strip())
    bad = [p for p in parts if p not in POLICIES]
    if bad:
        raise ValueError(f"unknown augmentation {', '.join(bad)}: choose from {', '.join(POLICIES)} (comma-separated)")
    return parts


def color(x: torch.Tensor) -> torch.Tensor:
    n = len(x)
    x = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by whole pixels (up to ratio x side), filling with zeros: a gather from a padded copy."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + sh).expand(n, h, w)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + sw).expand(n, h, w)
    padded = F.pad(x, (sw, sw, sh, sh))
    flat = (rows * (w + 2 * sw) + cols).flatten(1)  # [n, h*w] indices into each padded image
    out = padded.flatten(2).gather(2, flat.unsqueeze(1).expand(-1, x.shape[1], -1))
    return out.view_as(x).contiguous(memory_format=_layout(x))


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero a square of ratio x side at a random centre of each image (clipped at the borders)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    oy, ox = ys - cy + ch // 2, xs - cx + cw // 2  # position inside the square
    inside = (oy >= 0) & (oy < ch) & (ox >= 0) & (ox < cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def _layout(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}


class DiffAugment(nn.Module):
    """Images [B, C, H, W] -> the same shape, each image randomly transformed; differentiable in x."""

    def __init__(self, policy: str = "color,translation,cutout"):
        super().__init__()
        self.policy = parse_policy(policy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.policy:
            x = TRANSFORMS[name](x)
        return x

    def extra_repr(self) -> str:
        return ",".join(self.policy) or "off"
