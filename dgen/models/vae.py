"""The VAEs of the seeds.

ConvVAE (seeds 000/001/002): five encoder blocks Conv(3x3, stride 2) + BatchNorm + LeakyReLU with
32, 64, 128, 256, 512 channels; fc_mu and fc_var on the flattened features; a linear layer into
the decoder; five mirrored ConvTranspose(3x3, stride 2) + BatchNorm + LeakyReLU blocks (the last
one keeps 32 channels), and a final Conv(3x3) + Tanh. At 64x64 RGB with latent 512 this is
exactly seed 002's printed model; 28 and 32 px work by recording the encoder's spatial sizes and
choosing each transposed conv's output_padding to retrace them (28 -> 14 -> 7 -> 4 -> 2 -> 1).

MlpVAE (seed 003): Linear 512-256-128 with ReLU + BatchNorm1d on both sides, latent 32, and a
decoder that returns logits (the seed's Sigmoid + BCELoss is refused under autocast; the method
applies BCE-with-logits, which is the same loss computed stably).

Both return (reconstruction, mu, logvar); `decode(z)` maps latents to images in [-1, 1]
(ConvVAE) or to logits (MlpVAE; `images(z)` gives [-1, 1]).
"""

from __future__ import annotations

import torch
from torch import nn

WIDTHS = (32, 64, 128, 256, 512)


def conv_sizes(size: int, blocks: int = len(WIDTHS)) -> list[int]:
    """Spatial sizes through the stride-2, padding-1, 3x3 encoder: 28 -> [28, 14, 7, 4, 2, 1]."""
    sizes = [size]
    for _ in range(blocks):
        sizes.append((sizes[-1] - 1) // 2 + 1)
    return sizes


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def decoder_layers(latent_dim: int, channels: int, sizes: list[int]) -> tuple[nn.Linear, nn.Sequential, nn.Sequential]:
    """The conv VAE's decoder, also seed 001's unbalanced GAN generator: a linear layer from the latent to
    512 x s x s (s: the encoder's last size), five ConvTranspose(3x3, stride 2) + BatchNorm + LeakyReLU blocks
    512 -> 256 -> 128 -> 64 -> 32 -> 32 retracing the encoder's `sizes`, and Conv(3x3) + Tanh to `channels`."""
    decode_input = nn.Linear(latent_dim, WIDTHS[-1] * sizes[-1] ** 2)
    outs = list(reversed(WIDTHS[:-1])) + [WIDTHS[0]]  # 256, 128, 64, 32, 32
    blocks, cin = [], WIDTHS[-1]
    for k, w in enumerate(outs):
        small, big = sizes[-1 - k], sizes[-2 - k]
        pad = big - (2 * small - 1)  # transposed conv: out = 2 * in - 1 + output_padding
        blocks.append(nn.Sequential(nn.ConvTranspose2d(cin, w, 3, stride=2, padding=1, output_padding=pad),
                                    nn.BatchNorm2d(w), nn.LeakyReLU()))
        cin = w
    return decode_input, nn.Sequential(*blocks), nn.Sequential(nn.Conv2d(WIDTHS[0], channels, 3, padding=1), nn.Tanh())


def decode(net: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Latents -> images in [-1, 1] through a module holding decoder_layers as decode_input/decoder/final_layer."""
    h = net.decode_input(z).view(-1, WIDTHS[-1], net.sizes[-1], net.sizes[-1])
    return net.final_layer(net.decoder(h))


class ConvVAE(nn.Module):
    def __init__(self, image_size: int = 64, channels: int = 3, latent_dim: int = 128):
        super().__init__()
        if image_size < 16:
            raise ValueError(f"ConvVAE needs images of at least 16 px, got {image_size}")
        self.image_size, self.channels, self.latent_dim = image_size, channels, latent_dim
        self.sizes = conv_sizes(image_size)
        blocks, cin = [], channels
        for w in WIDTHS:
            blocks.append(nn.Sequential(nn.Conv2d(cin, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.LeakyReLU()))
            cin = w
        self.encoder = nn.Sequential(*blocks)
        flat = WIDTHS[-1] * self.sizes[-1] ** 2
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_var = nn.Linear(flat, latent_dim)
        self.decode_input, self.decoder, self.final_layer = decoder_layers(latent_dim, channels, self.sizes)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x).flatten(1)
        return self.fc_mu(h), self.fc_var(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return decode(self, z)

    def to_images(self, decoded: torch.Tensor) -> torch.Tensor:
        return decoded  # already in [-1, 1] (tanh)

    def images(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_images(self.decode(z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar)), mu, logvar


def _mlp(sizes: list[int]) -> list[nn.Module]:
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(), nn.BatchNorm1d(b)]
    return layers


class MlpVAE(nn.Module):
    def __init__(self, image_size: int = 28, channels: int = 1, latent_dim: int = 32):
        super().__init__()
        self.image_size, self.channels, self.latent_dim = image_size, channels, latent_dim
        dim = channels * image_size * image_size
        self.encoder = nn.Sequential(nn.Flatten(), *_mlp([dim, 512, 256, 128]))
        self.fc_mu = nn.Linear(128, latent_dim)
        self.fc_var = nn.Linear(128, latent_dim)
        self.decoder = nn.Sequential(*_mlp([latent_dim, 128, 256, 512]), nn.Linear(512, dim))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_var(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of the pixels being 'on', shaped like the images."""
        return self.decoder(z).view(-1, self.channels, self.image_size, self.image_size)

    def to_images(self, decoded: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(decoded) * 2 - 1

    def images(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_images(self.decode(z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar)), mu, logvar
