"""The seeds' networks, checked against the seeds' own printouts (layer shapes and parameter counts)."""

from __future__ import annotations

import pytest
import torch

from dgen.models.vae import ConvVAE, MlpVAE, conv_sizes


def count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_conv_vae_matches_seed_001_parameter_counts():
    """Seed 001's torchsummary of the 64x64 RGB VAE with latent 128 (encoder side and the linears)."""
    m = ConvVAE(64, 3, 128)
    assert [count(block[0]) for block in m.encoder] == [896, 18_496, 73_856, 295_168, 1_180_160]
    assert [count(block[1]) for block in m.encoder] == [64, 128, 256, 512, 1_024]  # BatchNorm
    assert (count(m.fc_mu), count(m.fc_var), count(m.decode_input)) == (262_272, 262_272, 264_192)


def test_conv_vae_matches_seed_002_layers():
    """Seed 002's printed model at 64x64 RGB, latent 512: 2048 -> 512 linears, five transposed blocks
    (the last keeps 32 channels) and a final 3x3 conv + tanh."""
    m = ConvVAE(64, 3, 512)
    assert (m.fc_mu.in_features, m.fc_mu.out_features, m.decode_input.out_features) == (2048, 512, 2048)
    convs = [block[0] for block in m.decoder]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(512, 256), (256, 128), (128, 64), (64, 32), (32, 32)]
    assert all(c.kernel_size == (3, 3) and c.stride == (2, 2) and c.output_padding == (1, 1) for c in convs)
    final = m.final_layer[0]
    assert (final.in_channels, final.out_channels, final.kernel_size) == (32, 3, (3, 3))
    assert isinstance(m.final_layer[1], torch.nn.Tanh)


@pytest.mark.parametrize("size, channels", [(28, 1), (32, 1), (32, 3), (64, 3), (64, 1)])
def test_conv_vae_shapes(size, channels):
    m = ConvVAE(size, channels, 16)
    x = torch.rand(2, channels, size, size) * 2 - 1
    out, mu, logvar = m(x)
    assert out.shape == x.shape and mu.shape == logvar.shape == (2, 16)
    assert out.abs().max() <= 1


def test_conv_sizes_retrace_28px():
    assert conv_sizes(28) == [28, 14, 7, 4, 2, 1]


def test_conv_vae_refuses_tiny_images():
    with pytest.raises(ValueError, match="at least 16 px"):
        ConvVAE(8, 1, 16)


def test_mlp_vae_seed_003_layers():
    m = MlpVAE(28, 1, 32)
    linears = [l for l in m.encoder if isinstance(l, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(784, 512), (512, 256), (256, 128)]
    linears = [l for l in m.decoder if isinstance(l, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(32, 128), (128, 256), (256, 512), (512, 784)]
    logits, mu, _ = m(torch.rand(3, 1, 28, 28))
    assert logits.shape == (3, 1, 28, 28) and mu.shape == (3, 32)
    assert m.images(mu).min() >= -1 and m.images(mu).max() <= 1
