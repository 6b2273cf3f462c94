"""The GANs of the seeds: generators, discriminators and critics (nn.Modules only, no losses).

DCGANGenerator / DCGANDiscriminator (seeds 000, 002, 004): the PyTorch DCGAN tutorial network.
At 64x64 it is exactly seed 002's printout (nz 100, ngf = ndf = 64; seed 000 is the same with
nz 64): G = ConvT(nz, 8ngf, 4, 1, 0) then stride-2 ConvT(4, 2, 1) blocks halving the width, each
with BatchNorm + ReLU, and a last ConvT to `channels` + Tanh, all bias-free; D mirrors it with
Conv(4, 2, 1) + LeakyReLU(0.2), BatchNorm on every conv but the first, and Conv(8ndf, 1, 4, 1, 0).
32x32 (dgen's digits) drops the widest stage: G starts at 4ngf, D ends at 4ndf.

MnistGenerator / MnistDiscriminator (seed 003): its 28x28 DCGAN variant. The transposed convs are
kernel 5 (stride 1, 1, 2, 1) and kernel 4, so 1 -> 5 -> 9 -> 21 -> 25 -> 28; the discriminator is
three Conv(4, 2, 1) (28 -> 14 -> 7 -> 3), a global average pool and Linear(4 * base_width, 1).

MlpGenerator / MlpCritic (seed 003): the WGAN-with-weight-clipping MLPs. G = Linear 100-64-256-512
with LeakyReLU then BatchNorm1d after each, Linear to the pixels and Tanh; the critic is
Linear pixels-64-128-1 with ReLU.

UnbalancedGenerator / UnbalancedDiscriminator (seed 001): the "unbalanced" GAN pre-trained from the
VAE. G is layer for layer the ConvVAE decoder (`decode_input`, `decoder`, `final_layer`; seed 001's
generator table equals ConvVAE(64, 3, 128)'s decoder), so `load_vae_decoder` starts it from a
trained VAE. D is four Conv(3, 2, 1) + BatchNorm + LeakyReLU blocks (32 -> 256 channels),
Linear(256 * 4 * 4, 128) + LeakyReLU and Linear(128, 1).

Every discriminator returns raw logits/scores of shape [B], never probabilities: the seeds' final
Sigmoid + BCELoss is refused under autocast and unstable in fp16, so dgen applies
BCE-with-logits (the same loss, computed stably) or the LSGAN/WGAN losses to the raw output.
Every generator takes z of shape [B, nz] and returns images [B, C, H, W] in [-1, 1] (tanh).

    python -c "from dgen.models.gan import DCGANGenerator; print(DCGANGenerator())"
    pytest tests/test_gan_models.py -q
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from dgen.models.vae import WIDTHS, conv_sizes, decode, decoder_layers

DCGAN_SIZES = (32, 64)
# A discriminator's normalisation between convolutions. "batch" is DCGAN's; a WGAN-GP critic must not
# mix the images of a batch (its penalty is per image, Gulrajani et al. sec. 4): "layer" (per image over
# channels and pixels, as GroupNorm with one group) or "none".
NORMS = {"batch": nn.BatchNorm2d, "layer": lambda c: nn.GroupNorm(1, c), "none": lambda c: nn.Identity()}


def dcgan_init(module: nn.Module) -> nn.Module:
    """DCGAN initialisation (Radford et al. 2015): conv and transposed-conv weights ~ N(0, 0.02),
    BatchNorm weights ~ N(1, 0.02) and biases 0. Other layers (Linear, conv biases) keep PyTorch's
    defaults, as in seed 003's `weights_init`.

    Seed 002's text says "stdev=0.2" but shows no code and cites the PyTorch DCGAN tutorial, whose
    `weights_init` (like seed 003's code and the paper) uses 0.02; we follow 0.02.

    Works on a whole model (`dcgan_init(g)`) and through `g.apply(dcgan_init)` alike.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.conv._ConvNd):  # Conv1d/2d/3d and ConvTranspose*
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def _dcgan_stages(image_size: int) -> int:
    """Number of stride-2 (de)convolutions: 4 at 64 px (4 -> 8 -> 16 -> 32 -> 64), 3 at 32 px."""
    if image_size not in DCGAN_SIZES:
        raise ValueError(f"the DCGAN networks support image_size 32 or 64, got {image_size}")
    return image_size.bit_length() - 3  # log2(image_size) - 2


class DCGANGenerator(nn.Module):
    """Seeds 000/002/004 DCGAN generator: z [B, nz] -> images [B, channels, 64, 64] (or 32x32)."""

    def __init__(self, nz: int = 100, ngf: int = 64, channels: int = 3, image_size: int = 64):
        super().__init__()
        stages = _dcgan_stages(image_size)
        self.nz, self.channels, self.image_size = nz, channels, image_size
        width = ngf * 2 ** (stages - 1)  # 8 * ngf at 64 px, 4 * ngf at 32 px
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, width, 4, 1, 0, bias=False),  # 1 -> 4
                                   nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(stages - 1):  # each doubles the side and halves the width, down to ngf
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)  # same indices as the seeds' `main`, so their checkpoints load

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """Seeds 000/002/004 DCGAN discriminator: images [B, channels, 64, 64] (or 32x32) -> logits [B].

    norm: "batch" (the seeds'), "layer" or "none" between the convolutions (see NORMS).
    The seeds end with nn.Sigmoid(); it is left out on purpose: dgen uses BCE-with-logits, which is
    safe under autocast (BCELoss on probabilities is not). sigmoid(logits) gives the seeds' D(x).
    """

    def __init__(self, ndf: int = 64, channels: int = 3, image_size: int = 64, norm: str = "batch"):
        super().__init__()
        stages = _dcgan_stages(image_size)
        if norm not in NORMS:
            raise ValueError(f"unknown discriminator norm {norm!r} ({', '.join(NORMS)})")
        self.channels, self.image_size = channels, image_size
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, 2, 1, bias=False),  # no normalisation here
                                   nn.LeakyReLU(0.2, inplace=True)]
        width = ndf
        for _ in range(stages - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=norm == "none"),
                       NORMS[norm](width * 2), nn.LeakyReLU(0.2, inplace=True)]
            width *= 2
        layers.append(nn.Conv2d(width, 1, 4, 1, 0, bias=False))  # 4x4 -> 1x1, no Sigmoid (logits)
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(x.shape[0])


class MnistGenerator(nn.Module):
    """Seed 003 DCGAN generator for MNIST: z [B, nz] -> images [B, channels, 28, 28].

    The seed offers Sigmoid (data in [0, 1]) or Tanh (data normalised to [-1, 1]) as the last
    activation; dgen's data is in [-1, 1], so this is the Tanh option.
    """

    def __init__(self, nz: int = 100, channels: int = 1, base_width: int = 64):
        super().__init__()
        self.nz, self.channels, self.image_size = nz, channels, 28
        w = base_width
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(nz, w * 8, kernel_size=5, bias=False),  # 1 -> 5
            nn.BatchNorm2d(w * 8), nn.ReLU(),
            nn.ConvTranspose2d(w * 8, w * 4, kernel_size=5, bias=False),  # 5 -> 9
            nn.BatchNorm2d(w * 4), nn.ReLU(),
            nn.ConvTranspose2d(w * 4, w * 2, kernel_size=5, stride=2, bias=False),  # 9 -> 21
            nn.BatchNorm2d(w * 2), nn.ReLU(),
            nn.ConvTranspose2d(w * 2, w, kernel_size=5, bias=False),  # 21 -> 25
            nn.BatchNorm2d(w), nn.ReLU(),
            nn.ConvTranspose2d(w, channels, kernel_size=4, bias=False),  # 25 -> 28
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z.view(z.shape[0], -1, 1, 1))


class MnistDiscriminator(nn.Module):
    """Seed 003 DCGAN discriminator for MNIST: images [B, channels, 28, 28] -> logits [B].

    LeakyReLU keeps PyTorch's default slope 0.01 as in the seed. The global average pool makes it
    accept other sizes too (e.g. 32x32 digits). The seed's final Sigmoid is left out: logits for
    BCE-with-logits, which is safe under autocast.
    """

    def __init__(self, channels: int = 1, base_width: int = 64):
        super().__init__()
        self.channels = channels
        w = base_width
        self.layers = nn.Sequential(
            nn.Conv2d(channels, w, kernel_size=4, stride=2, padding=1, bias=False),  # 28 -> 14
            nn.LeakyReLU(),
            nn.Conv2d(w, w * 2, kernel_size=4, stride=2, padding=1, bias=False),  # 14 -> 7
            nn.BatchNorm2d(w * 2), nn.LeakyReLU(),
            nn.Conv2d(w * 2, w * 4, kernel_size=4, stride=2, padding=1, bias=False),  # 7 -> 3
            nn.BatchNorm2d(w * 4), nn.LeakyReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(w * 4, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).flatten()


class MlpGenerator(nn.Module):
    """Seed 003 WGAN generator (MLP): z [B, nz] -> images [B, channels, 28, 28] via Tanh.

    Hidden layers 64, 256, 512, each Linear -> LeakyReLU (slope 0.01) -> BatchNorm1d, in the
    seed's order (activation before the norm).
    """

    def __init__(self, nz: int = 100, image_size: int = 28, channels: int = 1,
                 hidden: tuple[int, ...] = (64, 256, 512)):
        super().__init__()
        self.nz, self.image_size, self.channels = nz, image_size, channels
        layers: list[nn.Module] = []
        cin = nz
        for h in hidden:
            layers += [nn.Linear(cin, h), nn.LeakyReLU(), nn.BatchNorm1d(h)]
            cin = h
        layers += [nn.Linear(cin, channels * image_size * image_size), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, self.channels, self.image_size, self.image_size)


class MlpCritic(nn.Module):
    """Seed 003 WGAN critic (MLP): images [B, channels, 28, 28] -> scores [B] (no sigmoid).

    Flatten -> Linear 64 -> ReLU -> Linear 128 -> ReLU -> Linear 1. The WGAN method clips its
    weights to [-0.01, 0.01] after each step; that is training code, not part of the module.
    """

    def __init__(self, image_size: int = 28, channels: int = 1, hidden: tuple[int, ...] = (64, 128)):
        super().__init__()
        self.image_size, self.channels = image_size, channels
        layers: list[nn.Module] = [nn.Flatten()]
        cin = channels * image_size * image_size
        for h in hidden:
            layers += [nn.Linear(cin, h), nn.ReLU()]
            cin = h
        layers.append(nn.Linear(cin, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(x.shape[0])


class UnbalancedGenerator(nn.Module):
    """Seed 001 "unbalanced" GAN generator: z [B, latent_dim] -> images [B, channels, S, S], S = image_size.

    Seed 001's torchsummary (64x64 RGB, latent 128): Linear 128 -> 2048 (512 x 2 x 2), four
    ConvTranspose(3x3, stride 2) + BatchNorm + LeakyReLU blocks 512 -> 256 -> 128 -> 64 -> 32, a
    fifth 32 -> 32, then Conv2d(32, 3, 3x3) + Tanh: 1,842,531 parameters. That is exactly
    ConvVAE(64, 3, 128)'s decode_input / decoder / final_layer, so no deviation was needed; the
    attributes carry the same names and shapes (any ConvVAE size, e.g. 32 px digits, where
    decode_input is latent -> 512 x 1 x 1), and `load_vae_decoder` copies a trained decoder in.
    """

    def __init__(self, latent_dim: int = 128, channels: int = 3, image_size: int = 64):
        super().__init__()
        if image_size < 16:
            raise ValueError(f"UnbalancedGenerator needs images of at least 16 px, got {image_size}")
        self.latent_dim, self.channels, self.image_size = latent_dim, channels, image_size
        self.sizes = conv_sizes(image_size)  # e.g. 64 -> [64, 32, 16, 8, 4, 2]
        self.decode_input, self.decoder, self.final_layer = decoder_layers(latent_dim, channels, self.sizes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return decode(self, z)

    @torch.no_grad()
    def load_vae_decoder(self, state_dict: Mapping[str, torch.Tensor] | nn.Module) -> None:
        """Initialise from a ConvVAE's state_dict (its decode_input.*, decoder.*, final_layer.*
        parameters and BatchNorm buffers; the encoder keys are ignored). Checks every key before
        copying anything; raises ValueError naming the first missing or mis-shaped key."""
        if isinstance(state_dict, nn.Module):
            state_dict = state_dict.state_dict()
        own = self.state_dict()
        for key, mine in own.items():
            if key not in state_dict:
                raise ValueError(f"VAE state_dict has no {key!r}; it is not a ConvVAE decoder for this generator")
            theirs = state_dict[key]
            if theirs.shape != mine.shape:
                raise ValueError(f"VAE state_dict {key!r} has shape {tuple(theirs.shape)}, the generator needs "
                                 f"{tuple(mine.shape)} (latent_dim={self.latent_dim}, channels={self.channels}, "
                                 f"image_size={self.image_size})")
        for key, mine in own.items():
            mine.copy_(state_dict[key])


class UnbalancedDiscriminator(nn.Module):
    """Seed 001 "unbalanced" GAN discriminator: images [B, channels, S, S] -> scores [B] (no sigmoid;
    the seed trains it with the LSGAN loss on the raw output).

    Seed 001's torchsummary (64x64 RGB): Conv2d(3x3, stride 2, padding 1) + BatchNorm + LeakyReLU
    with 32, 64, 128, 256 channels (64 -> 4 px), Linear(256 * 4 * 4, 128) + LeakyReLU, Linear(128, 1):
    913,921 parameters. At 32 px the flattened features are 256 * 2 * 2.
    """

    def __init__(self, channels: int = 3, image_size: int = 64):
        super().__init__()
        if image_size < 16:
            raise ValueError(f"UnbalancedDiscriminator needs images of at least 16 px, got {image_size}")
        self.channels, self.image_size = channels, image_size
        widths = WIDTHS[:4]  # 32, 64, 128, 256: the VAE encoder's first four blocks
        blocks, cin = [], channels
        for w in widths:
            blocks.append(nn.Sequential(nn.Conv2d(cin, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.LeakyReLU()))
            cin = w
        self.features = nn.Sequential(*blocks)
        side = conv_sizes(image_size, len(widths))[-1]  # 64 -> 4, 32 -> 2, 28 -> 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * side * side, 128), nn.LeakyReLU(),
                                  nn.Linear(128, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).view(x.shape[0])
