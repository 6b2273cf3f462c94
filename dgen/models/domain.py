"""Networks of the seeds' domain-adaptation experiments: feature extractors, label classifiers,
domain discriminators behind a gradient-reversal layer, and Generate-To-Adapt's G and D.

    from dgen.models.domain import build_classifier, DomainDiscriminator
    F, C = build_classifier("cnn", channels=3, image_size=28)   # seed 002's DANN CNN
    logits = C(F(x))                                            # x: [B, 3, 28, 28] in [-1, 1]
    D = DomainDiscriminator("cnn", F.dim)
    domain_logits = D(F(x), coeff=0.5)                          # gradient into F is multiplied by -0.5

Architectures (`arch`), each an extractor F (images -> [B, F.dim]) and a classifier C (features ->
class logits):
- "cnn": seed 002's DANN model (after fungtion/DANN): Conv5x5(64)+BN+MaxPool+ReLU,
  Conv5x5(50)+BN+Dropout2d(0.5)+MaxPool+ReLU (800 features at 28 px, 1,250 at 32 px); C: 100+BN+ReLU+
  Dropout, 100+BN+ReLU, classes; its domain head: 100+BN+ReLU, 2 classes.
- "conv5": seed 000's extractor, five Conv3x3+BN+ReLU (64, 128, 256, 512, 512) at full resolution
  and a global average pool (512 features); C: 256+ReLU, classes; its domain head: 256, 128 (LeakyReLU
  0.2), 1 logit. About 4 GMAC per 32 px image: meant for GPUs.
- "gta": seed 002's Generate-To-Adapt F (Conv5x5 64, pool, Conv5x5 64, pool, Conv5x5 128 at 32 px -> 128
  features) and C (128+ReLU, classes); see `GtaGenerator` and `GtaDiscriminator`.

Heads end in logits (no Sigmoid/LogSoftmax): the losses are the logits forms, safe under autocast.
"""

from __future__ import annotations

import torch
from torch import nn

from dgen.models.gan import dcgan_init

ARCHS = ("cnn", "conv5", "gta")


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coeff: float):
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coeff * grad, None


class GradientReversal(nn.Module):
    """Identity forward; the backward pass multiplies the gradient by -coeff (Ganin & Lempitsky)."""

    def forward(self, x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
        return _ReverseGradient.apply(x, coeff)


class Extractor(nn.Module):
    """Images -> features [B, dim]; `dim` is measured once with a dummy image of the configured size.

    input_norm: standardise each image per channel (zero mean, unit deviation over its pixels) before
    the body, as VADA/DIRT-T do for digits: it removes a domain's global colour and contrast (MNIST-M's
    photo backgrounds), which no later layer then has to learn to ignore.
    """

    def __init__(self, body: nn.Module, channels: int, image_size: int, input_norm: bool = False):
        super().__init__()
        self.body, self.input_norm = body, input_norm
        with torch.no_grad():
            was = body.training
            body.eval()
            self.dim = body(torch.zeros(1, channels, image_size, image_size)).flatten(1).shape[1]
            body.train(was)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_norm:
            x = (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True).clamp_min(1e-3)
        return self.body(x).flatten(1)


def _cnn_body(c: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c, 64, 5), nn.BatchNorm2d(64), nn.MaxPool2d(2), nn.ReLU(inplace=True),
        nn.Conv2d(64, 50, 5), nn.BatchNorm2d(50), nn.Dropout2d(0.5), nn.MaxPool2d(2), nn.ReLU(inplace=True))


def _conv5_body(c: int) -> nn.Sequential:
    layers, cin = [], c
    for w in (64, 128, 256, 512, 512):
        layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        cin = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))


def _gta_body(c: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c, 64, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 5), nn.ReLU(inplace=True))


def build_classifier(arch: str, channels: int, image_size: int, num_classes: int = 10,
                     input_norm: bool = False) -> tuple[Extractor, nn.Module]:
    """(F, C) for `arch`; ValueError if the images are too small for it (or the wrong size for "gta")."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if arch == "gta" and image_size != 32:
        raise ValueError(f"the Generate-To-Adapt networks take 32x32 images (pass --image-size 32), got {image_size}")
    if arch == "cnn" and image_size < 16:
        raise ValueError(f"the DANN CNN needs images of at least 16 px, got {image_size}")
    body = {"cnn": _cnn_body, "conv5": _conv5_body, "gta": _gta_body}[arch](channels)
    F = Extractor(body, channels, image_size, input_norm)
    if arch == "cnn":
        C = nn.Sequential(nn.Linear(F.dim, 100), nn.BatchNorm1d(100), nn.ReLU(inplace=True), nn.Dropout(0.5),
                          nn.Linear(100, 100), nn.BatchNorm1d(100), nn.ReLU(inplace=True), nn.Linear(100, num_classes))
    elif arch == "conv5":
        C = nn.Sequential(nn.Linear(F.dim, 256), nn.ReLU(inplace=True), nn.Linear(256, num_classes))
    else:
        C = nn.Sequential(nn.Linear(F.dim, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes))
    return F, C


class DomainDiscriminator(nn.Module):
    """Features -> domain logits behind a gradient-reversal layer: [B, 2] for "cnn" (seed 002, read with
    cross-entropy), [B, 1] otherwise (seed 000, read with BCE on logits)."""

    def __init__(self, arch: str, dim: int):
        super().__init__()
        self.grl = GradientReversal()
        if arch == "cnn":
            self.net = nn.Sequential(nn.Linear(dim, 100), nn.BatchNorm1d(100), nn.ReLU(inplace=True), nn.Linear(100, 2))
        else:
            self.net = nn.Sequential(nn.Linear(dim, 256), nn.LeakyReLU(0.2), nn.Linear(256, 128), nn.LeakyReLU(0.2),
                                     nn.Linear(128, 1))

    def forward(self, h: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
        return self.net(self.grl(h, coeff))


def gta_init(module: nn.Module) -> nn.Module:
    """The GTA reference code's initialisation: DCGAN's for (transposed) convolutions and BatchNorm, and
    Linear weights ~ N(0, 0.1) with zero biases."""
    dcgan_init(module)
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.1)
            nn.init.zeros_(m.bias)
    return module


class GtaGenerator(nn.Module):
    """Seed 002's GTA generator: [features, one-hot label (classes + 1 for "target"), noise] -> 32x32 image.

    Input width dim + classes + 1 + nz (128 + 11 + 512 = 651 in the seed); ConvTranspose 2x2 to 512 x 2x2, then
    stride-2 4x4 blocks 256, 128, 64, channels with BN+ReLU, and tanh.
    """

    def __init__(self, dim: int, num_classes: int, nz: int = 512, channels: int = 3, ngf: int = 64):
        super().__init__()
        self.nz, self.num_classes = nz, num_classes
        cin = dim + num_classes + 1 + nz
        self.main = nn.Sequential(
            nn.ConvTranspose2d(cin, ngf * 8, 2, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, channels, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, features: torch.Tensor, onehot: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = torch.cat([features, onehot.to(features.dtype), noise.to(features.dtype)], 1)
        return self.main(x[:, :, None, None])


class GtaDiscriminator(nn.Module):
    """Seed 002's GTA discriminator: four Conv3x3+BN+LeakyReLU(0.2)+MaxPool blocks (64, 128, 256, 128;
    pools 2, 2, 2, 4) on 32x32 images, then two heads: real/fake (1 logit) and class (classes logits)."""

    def __init__(self, channels: int = 3, num_classes: int = 10, ndf: int = 64):
        super().__init__()
        layers, cin = [], channels
        for w, pool in ((ndf, 2), (ndf * 2, 2), (ndf * 4, 2), (ndf * 2, 4)):
            layers += [nn.Conv2d(cin, w, 3, 1, 1), nn.BatchNorm2d(w), nn.LeakyReLU(0.2, inplace=True), nn.MaxPool2d(pool)]
            cin = w
        self.feature = nn.Sequential(*layers, nn.Flatten())
        self.real_fake = nn.Linear(ndf * 2, 1)
        self.classes = nn.Linear(ndf * 2, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.feature(x)
        return self.real_fake(h).squeeze(1), self.classes(h)
