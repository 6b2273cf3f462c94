"""The seeds' GANs, checked against the seeds' own printouts (layers, output shapes, parameter counts).

Every expected number below is transcribed from the seed text (or summed from the layers it prints),
never read off the code under test.

    pytest tests/test_gan_models.py -q
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dgen.models.gan import (DCGANDiscriminator, DCGANGenerator, MlpCritic, MlpGenerator, MnistDiscriminator,
                             MnistGenerator, UnbalancedDiscriminator, UnbalancedGenerator, dcgan_init)
from dgen.models.vae import ConvVAE


def count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def leaves(m: nn.Module) -> list[nn.Module]:
    return [x for x in m.modules() if not list(x.children())]


def trace_shapes(m: nn.Module, inp: torch.Tensor) -> list[tuple[str, tuple[int, ...], int]]:
    """(layer type, output shape without batch, parameter count) per leaf layer, like torchsummary."""
    rows = []
    hooks = [x.register_forward_hook(lambda mod, _, out: rows.append(
        (type(mod).__name__, tuple(out.shape[1:]), count(mod)))) for x in leaves(m)]
    try:
        m.eval()
        with torch.no_grad():
            m(inp)
    finally:
        for h in hooks:
            h.remove()
    return [r for r in rows if r[0] != "Flatten"]  # torchsummary's table lists no Flatten


# ---------------------------------------------------------------- shapes


GENERATORS = [
    (lambda: DCGANGenerator(100, 8, 3, 64), 100, (3, 64, 64)),
    (lambda: DCGANGenerator(64, 8, 1, 32), 64, (1, 32, 32)),
    (lambda: DCGANGenerator(16, 8, 3, 32), 16, (3, 32, 32)),
    (lambda: MnistGenerator(100, 1), 100, (1, 28, 28)),
    (lambda: MnistGenerator(20, 3), 20, (3, 28, 28)),
    (lambda: MlpGenerator(100, 28, 1), 100, (1, 28, 28)),
    (lambda: MlpGenerator(16, 32, 3), 16, (3, 32, 32)),
    (lambda: UnbalancedGenerator(128, 3, 64), 128, (3, 64, 64)),
    (lambda: UnbalancedGenerator(32, 1, 32), 32, (1, 32, 32)),
    (lambda: UnbalancedGenerator(16, 3, 32), 16, (3, 32, 32)),
]


@pytest.mark.parametrize("make, nz, shape", GENERATORS)
def test_generator_shapes_and_range(make, nz, shape):
    g = make()
    out = g(torch.randn(3, nz))
    assert out.shape == (3, *shape)
    assert out.abs().max() <= 1  # tanh


DISCRIMINATORS = [
    (lambda: DCGANDiscriminator(8, 3, 64), (3, 64, 64)),
    (lambda: DCGANDiscriminator(8, 1, 32), (1, 32, 32)),
    (lambda: DCGANDiscriminator(8, 3, 32), (3, 32, 32)),
    (lambda: MnistDiscriminator(1), (1, 28, 28)),
    (lambda: MnistDiscriminator(3), (3, 28, 28)),
    (lambda: MnistDiscriminator(1), (1, 32, 32)),
    (lambda: MlpCritic(28, 1), (1, 28, 28)),
    (lambda: MlpCritic(32, 3), (3, 32, 32)),
    (lambda: UnbalancedDiscriminator(3, 64), (3, 64, 64)),
    (lambda: UnbalancedDiscriminator(1, 32), (1, 32, 32)),
    (lambda: UnbalancedDiscriminator(3, 32), (3, 32, 32)),
]


@pytest.mark.parametrize("make, shape", DISCRIMINATORS)
def test_discriminator_returns_one_logit_per_image(make, shape):
    d = make()
    out = d(torch.rand(3, *shape) * 2 - 1)
    assert out.shape == (3,) and out.dtype == torch.float32
    assert not any(isinstance(m, nn.Sigmoid) for m in d.modules())  # logits, not probabilities


def test_discriminator_logits_work_under_autocast():
    """The reason for dropping the seeds' Sigmoid: BCE-with-logits is allowed under autocast."""
    d, g = DCGANDiscriminator(8, 1, 32), DCGANGenerator(16, 8, 1, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = d(g(torch.randn(4, 16)))
        loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("cls", [DCGANGenerator, DCGANDiscriminator])
@pytest.mark.parametrize("size", [28, 48, 128])
def test_dcgan_refuses_other_sizes(cls, size):
    with pytest.raises(ValueError, match="32 or 64"):
        cls(image_size=size)


# ---------------------------------------------------------------- seed 002 (and 004): DCGAN 64x64


# Seed 002's printout, nz 100, ngf = ndf = 64: (in, out, kernel, stride, padding); all bias=False.
SEED_002_G = [(100, 512, 4, 1, 0), (512, 256, 4, 2, 1), (256, 128, 4, 2, 1), (128, 64, 4, 2, 1), (64, 3, 4, 2, 1)]
SEED_002_D = [(3, 64, 4, 2, 1), (64, 128, 4, 2, 1), (128, 256, 4, 2, 1), (256, 512, 4, 2, 1), (512, 1, 4, 1, 0)]


def _conv_specs(m: nn.Module, kind: type) -> list[tuple[int, int, int, int, int]]:
    convs = [x for x in m.modules() if isinstance(x, kind)]
    assert all(c.bias is None for c in convs)
    return [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs]


def test_dcgan_generator_is_seed_002_printout():
    g = DCGANGenerator(nz=100, ngf=64, channels=3, image_size=64)
    assert _conv_specs(g, nn.ConvTranspose2d) == SEED_002_G
    # printed order: ConvT, BN, ReLU (x4), ConvT, Tanh
    assert [type(x).__name__ for x in g.main] == ["ConvTranspose2d", "BatchNorm2d", "ReLU"] * 4 + ["ConvTranspose2d", "Tanh"]
    assert [x.num_features for x in g.main if isinstance(x, nn.BatchNorm2d)] == [512, 256, 128, 64]
    # sum over the printed layers: cin*cout*4*4 per ConvT + 2*C per BatchNorm
    assert count(g) == sum(i * o * 16 for i, o, *_ in SEED_002_G) + 2 * (512 + 256 + 128 + 64) == 3_576_704


def test_dcgan_discriminator_is_seed_002_printout_without_sigmoid():
    d = DCGANDiscriminator(ndf=64, channels=3, image_size=64)
    assert _conv_specs(d, nn.Conv2d) == SEED_002_D
    names = [type(x).__name__ for x in d.main]
    # printed order, minus the final Sigmoid (logits): Conv, LReLU, (Conv, BN, LReLU) x3, Conv
    assert names == ["Conv2d", "LeakyReLU"] + ["Conv2d", "BatchNorm2d", "LeakyReLU"] * 3 + ["Conv2d"]
    assert all(x.negative_slope == 0.2 for x in d.main if isinstance(x, nn.LeakyReLU))
    assert [x.num_features for x in d.main if isinstance(x, nn.BatchNorm2d)] == [128, 256, 512]
    assert count(d) == sum(i * o * 16 for i, o, *_ in SEED_002_D) + 2 * (128 + 256 + 512) == 2_765_568


def test_dcgan_intermediate_sizes_follow_seed_comments():
    """Seed 000/004's '# state size' comments: 4, 8, 16, 32, 64 in G; 32, 16, 8, 4 in D."""
    g_sizes = [s[1][1:] for s in trace_shapes(DCGANGenerator(), torch.randn(2, 100)) if s[0] == "ConvTranspose2d"]
    assert g_sizes == [(4, 4), (8, 8), (16, 16), (32, 32), (64, 64)]
    d_sizes = [s[1] for s in trace_shapes(DCGANDiscriminator(), torch.randn(2, 3, 64, 64)) if s[0] == "Conv2d"]
    assert d_sizes == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (1, 1, 1)]


def test_dcgan_32px_drops_one_stage():
    g, d = DCGANGenerator(100, 64, 1, 32), DCGANDiscriminator(64, 1, 32)
    assert _conv_specs(g, nn.ConvTranspose2d) == [(100, 256, 4, 1, 0), (256, 128, 4, 2, 1), (128, 64, 4, 2, 1),
                                                  (64, 1, 4, 2, 1)]
    assert _conv_specs(d, nn.Conv2d) == [(1, 64, 4, 2, 1), (64, 128, 4, 2, 1), (128, 256, 4, 2, 1), (256, 1, 4, 1, 0)]


# ---------------------------------------------------------------- seed 003: MNIST DCGAN and WGAN MLPs


def test_mnist_dcgan_is_seed_003():
    g = MnistGenerator(nz=100, channels=1)
    convs = [x for x in g.modules() if isinstance(x, nn.ConvTranspose2d)]
    # seed 003: kernel 5, 5, 5 (stride 2), 5, then 4; base_width 64; bias=False
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [
        (100, 512, 5, 1, 0), (512, 256, 5, 1, 0), (256, 128, 5, 2, 0), (128, 64, 5, 1, 0), (64, 1, 4, 1, 0)]
    assert all(c.bias is None for c in convs)
    sides = [s[1][1] for s in trace_shapes(g, torch.randn(2, 100)) if s[0] == "ConvTranspose2d"]
    assert sides == [5, 9, 21, 25, 28]  # "an image of size (28, 28) as output"

    d = MnistDiscriminator(channels=1)
    convs = [x for x in d.modules() if isinstance(x, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [
        (1, 64, 4, 2, 1), (64, 128, 4, 2, 1), (128, 256, 4, 2, 1)]
    assert [x.num_features for x in d.modules() if isinstance(x, nn.BatchNorm2d)] == [128, 256]
    assert all(x.negative_slope == 0.01 for x in d.modules() if isinstance(x, nn.LeakyReLU))  # nn.LeakyReLU()
    lin = [x for x in d.modules() if isinstance(x, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in lin] == [(256, 1)]


def test_wgan_mlps_are_seed_003():
    g = MlpGenerator()
    assert g.nz == 100  # seed: nn.Linear(100, 64)
    names = [type(x).__name__ for x in g.net]
    assert names == ["Linear", "LeakyReLU", "BatchNorm1d"] * 3 + ["Linear", "Tanh"]
    lin = [(l.in_features, l.out_features) for l in g.net if isinstance(l, nn.Linear)]
    assert lin == [(100, 64), (64, 256), (256, 512), (512, 784)]
    assert g(torch.randn(4, 100)).shape == (4, 1, 28, 28)

    c = MlpCritic()
    names = [type(x).__name__ for x in c.net]
    assert names == ["Flatten", "Linear", "ReLU", "Linear", "ReLU", "Linear"]  # no sigmoid
    lin = [(l.in_features, l.out_features) for l in c.net if isinstance(l, nn.Linear)]
    assert lin == [(784, 64), (64, 128), (128, 1)]
    assert count(c) == 784 * 64 + 64 + 64 * 128 + 128 + 128 + 1


# ---------------------------------------------------------------- seed 001: unbalanced GAN


# Seed 001's torchsummary tables at 64x64 RGB, latent 128: (layer, output shape, params).
SEED_001_G = [
    ("Linear", (2048,), 264_192),
    ("ConvTranspose2d", (256, 4, 4), 1_179_904), ("BatchNorm2d", (256, 4, 4), 512), ("LeakyReLU", (256, 4, 4), 0),
    ("ConvTranspose2d", (128, 8, 8), 295_040), ("BatchNorm2d", (128, 8, 8), 256), ("LeakyReLU", (128, 8, 8), 0),
    ("ConvTranspose2d", (64, 16, 16), 73_792), ("BatchNorm2d", (64, 16, 16), 128), ("LeakyReLU", (64, 16, 16), 0),
    ("ConvTranspose2d", (32, 32, 32), 18_464), ("BatchNorm2d", (32, 32, 32), 64), ("LeakyReLU", (32, 32, 32), 0),
    ("ConvTranspose2d", (32, 64, 64), 9_248), ("BatchNorm2d", (32, 64, 64), 64), ("LeakyReLU", (32, 64, 64), 0),
    ("Conv2d", (3, 64, 64), 867), ("Tanh", (3, 64, 64), 0),
]
SEED_001_D = [
    ("Conv2d", (32, 32, 32), 896), ("BatchNorm2d", (32, 32, 32), 64), ("LeakyReLU", (32, 32, 32), 0),
    ("Conv2d", (64, 16, 16), 18_496), ("BatchNorm2d", (64, 16, 16), 128), ("LeakyReLU", (64, 16, 16), 0),
    ("Conv2d", (128, 8, 8), 73_856), ("BatchNorm2d", (128, 8, 8), 256), ("LeakyReLU", (128, 8, 8), 0),
    ("Conv2d", (256, 4, 4), 295_168), ("BatchNorm2d", (256, 4, 4), 512), ("LeakyReLU", (256, 4, 4), 0),
    ("Linear", (128,), 524_416), ("LeakyReLU", (128,), 0), ("Linear", (1,), 129),
]


def test_unbalanced_generator_is_seed_001_table():
    g = UnbalancedGenerator(latent_dim=128, channels=3, image_size=64)
    assert trace_shapes(g, torch.randn(2, 128)) == SEED_001_G
    assert count(g) == 1_842_531  # "Total params" in the table


def test_unbalanced_discriminator_is_seed_001_table():
    d = UnbalancedDiscriminator(channels=3, image_size=64)
    rows = trace_shapes(d, torch.randn(2, 3, 64, 64))
    assert rows == SEED_001_D
    assert count(d) == 913_921


@pytest.mark.parametrize("size, channels, latent", [(64, 3, 128), (32, 1, 16), (32, 3, 32)])
def test_load_vae_decoder_reproduces_vae_decode(size, channels, latent):
    torch.manual_seed(0)
    vae = ConvVAE(size, channels, latent)
    with torch.no_grad():  # random BatchNorm statistics too, so eval mode really uses the copied buffers
        for m in vae.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2)
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)
    g = UnbalancedGenerator(latent, channels, size)
    for name in ("decode_input", "decoder", "final_layer"):
        assert {k: v.shape for k, v in getattr(g, name).state_dict().items()} == \
               {k: v.shape for k, v in getattr(vae, name).state_dict().items()}
    g.load_vae_decoder(vae.state_dict())
    vae.eval(), g.eval()
    z = torch.randn(4, latent)
    with torch.no_grad():
        assert torch.allclose(g(z), vae.decode(z), atol=1e-6)


def test_load_vae_decoder_refuses_a_mismatched_vae():
    g = UnbalancedGenerator(128, 3, 64)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    with pytest.raises(ValueError, match=r"decode_input\.weight"):
        g.load_vae_decoder(ConvVAE(64, 3, 64).state_dict())  # other latent_dim
    with pytest.raises(ValueError, match=r"final_layer\.0\.weight"):
        g.load_vae_decoder(ConvVAE(64, 1, 128).state_dict())  # other channels: first misfit is the last conv
    sd = ConvVAE(64, 3, 128).state_dict()
    del sd["decoder.2.1.running_var"]
    with pytest.raises(ValueError, match=r"decoder\.2\.1\.running_var"):
        g.load_vae_decoder(sd)
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())  # nothing half-copied


# ---------------------------------------------------------------- DCGAN init


def test_dcgan_init_uses_0_02():
    torch.manual_seed(0)
    g, d = DCGANGenerator(), DCGANDiscriminator()
    g.apply(dcgan_init)
    dcgan_init(d)  # on a whole model too
    for m in (g, d):
        weights = torch.cat([x.weight.flatten() for x in m.modules() if isinstance(x, (nn.Conv2d, nn.ConvTranspose2d))])
        assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001
        for bn in (x for x in m.modules() if isinstance(x, nn.BatchNorm2d)):
            assert abs(bn.weight.mean().item() - 1) < 0.01 and bn.weight.std().item() < 0.04
            assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    big = max((x for x in g.modules() if isinstance(x, nn.ConvTranspose2d)), key=lambda x: x.weight.numel())
    assert abs(big.weight.std().item() - 0.02) < 0.0005


# ---------------------------------------------------------------- DiffAugment, critic normalisation


def test_diffaugment_keeps_shapes_and_passes_gradients():
    from dgen.models.augment import DiffAugment

    torch.manual_seed(0)
    x = (torch.rand(8, 3, 32, 32) * 2 - 1).requires_grad_(True)
    y = DiffAugment("color,translation,cutout")(x)
    assert y.shape == x.shape and not torch.equal(y, x)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # channels-last batches (the trainer's layout) stay channels-last
    cl = x.detach().contiguous(memory_format=torch.channels_last)
    assert DiffAugment("translation")(cl).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(DiffAugment("")(x), x)  # off


def test_translation_and_cutout_move_and_blank_whole_pixels():
    from dgen.models.augment import cutout, translation

    torch.manual_seed(1)
    x = torch.arange(1.0, 65.0).view(1, 1, 8, 8).repeat(16, 1, 1, 1)
    shifted = translation(x, ratio=0.25)
    for img in shifted[:, 0]:  # each image is the original moved by (dy, dx) with zeros where nothing moved in
        kept = img[img != 0]
        assert len(kept) >= 36 and set(kept.tolist()) <= set(range(1, 65))
        rows, cols = (img != 0).nonzero(as_tuple=True)
        dy, dx = int(img[rows[0], cols[0]] - 1) // 8 - int(rows[0]), int(img[rows[0], cols[0]] - 1) % 8 - int(cols[0])
        src = x[0, 0, (rows + dy), (cols + dx)]
        assert torch.equal(img[rows, cols], src) and abs(dy) <= 2 and abs(dx) <= 2
    blanked = cutout(torch.ones(64, 1, 8, 8))
    zeros = (blanked == 0).flatten(1).sum(1)
    assert zeros.max() == 16 and zeros.min() >= 4  # a 4x4 square, clipped at the borders


def test_unknown_augmentation_is_named():
    from dgen.models.augment import DiffAugment

    with pytest.raises(ValueError, match="unknown augmentation flip"):
        DiffAugment("color,flip")


@pytest.mark.parametrize("norm, kind", [("batch", nn.BatchNorm2d), ("layer", nn.GroupNorm), ("none", nn.Identity)])
def test_critic_normalisation(norm, kind):
    d = DCGANDiscriminator(8, 1, 32, norm=norm)
    assert any(isinstance(m, kind) for m in d.modules())
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    if norm != "batch":  # a per-image critic: one image's score does not depend on the rest of the batch
        assert torch.allclose(d(x)[:1], d(x[:1]), atol=1e-6)


def _gan(model: str, **method):
    from dgen.methods import get_method
    from dgen.methods.base import DataSpec
    from dgen.options import resolve

    cfg = resolve({"model": model, "method": method})
    return get_method(model)(cfg, DataSpec("digits", 32, 1, [str(i) for i in range(10)], None))


def test_bad_gan_switches_are_refused_by_name():
    from dgen.errors import ConfigError

    with pytest.raises(ConfigError, match="--label-flip-every and --label-noise change D's real/fake targets, which "
                                          "the wgan loss"):
        _gan("wgan-gp", label_flip_every=16, label_noise=0.1)
    with pytest.raises(ConfigError, match="unknown augmentation zoom"):
        _gan("dcgan", augment="color,zoom")
    with pytest.raises(ConfigError, match="--gp-every must be >= 1"):
        _gan("wgan-gp", gp_every=0)
    with pytest.raises(ConfigError, match="--update simultaneous needs --loss wgan .* got --loss bce"):
        _gan("dcgan", update="simultaneous")
    with pytest.raises(ConfigError, match="--update simultaneous needs .* got --loss wgan and --n-critic 5"):
        _gan("wgan", update="simultaneous", n_critic=5)


def test_simultaneous_update_gives_d_and_g_their_own_losses_gradients():
    """--update simultaneous: one backward of D's loss through the reversed G output gives D the gradient of
    D(fake) - D(real) and G the gradient of its own loss, -D(fake), on the same z, images and augmentations."""
    method = _gan("wgan", update="simultaneous", augment="color,translation,cutout", width=8)
    G, D = method.models["G"], method.models["D"]
    real = torch.rand(8, 1, 32, 32) * 2 - 1
    assert method.phases_at(0) == ("DG",) and method.phase_models("DG") == ["D", "G"]

    torch.manual_seed(3)
    out = method.loss("DG", {"image": real})
    out["loss"].backward()
    got = {n: p.grad.clone() for n, p in [*D.named_parameters(prefix="D"), *G.named_parameters(prefix="G")]}

    torch.manual_seed(3)  # the same draws, in the same order: z, then the augmentations of real and fake
    z = torch.randn(8, method.hp.nz)
    fake = G(z)
    d_real, d_fake = D(method.augment(real)).mean(), D(method.augment(fake)).mean()
    d_loss, g_loss = d_fake - d_real, -d_fake
    want = dict(zip([f"D.{n}" for n, _ in D.named_parameters()], torch.autograd.grad(d_loss, list(D.parameters()),
                                                                                       retain_graph=True)))
    want |= dict(zip([f"G.{n}" for n, _ in G.named_parameters()], torch.autograd.grad(g_loss, list(G.parameters()))))
    assert got.keys() == want.keys()
    for name in got:
        torch.testing.assert_close(got[name], want[name], msg=name)
    assert float(out["g_loss"]) == pytest.approx(g_loss.item()) and float(out["d_loss"]) == pytest.approx(d_loss.item())


def test_lazy_gradient_penalty_joins_every_kth_step_weighted_k_times():
    """--gp-every K: the penalty is in D's loss on steps 0, K, 2K, ... only, K times heavier (StyleGAN2's lazy
    regularisation): the same penalty on average for 1/K of its cost."""
    method = _gan("wgan-gp", gp_every=3, gp_weight=10.0)
    x = torch.rand(8, 1, 32, 32) * 2 - 1

    def d_loss(step: int, penalty: float) -> float:
        method.step = step
        method._gradient_penalty = lambda *a: torch.tensor(penalty)
        torch.manual_seed(step)  # the same noise and augmentations for both calls
        return float(method.loss("D", {"image": x})["loss"].detach())

    added = [d_loss(step, 1.0) - d_loss(step, 0.0) for step in range(6)]
    assert added == pytest.approx([30.0, 0.0, 0.0, 30.0, 0.0, 0.0])
