"""dgen.eval: every output is a readable PNG of a plausible size, the numbers printed on them are right,
and the digit judge tells real digits from noise and blank images.

    pytest tests/test_eval_outputs.py
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from dgen.data.images import fit_image
from dgen.data.sources import get_source
from dgen.eval.curves import ema, save_curves
from dgen.eval.digits_judge import DigitJudge
from dgen.eval.images import save_grid, save_progress_collage, save_reconstructions, save_variations, to_unit
from dgen.eval.tsne import save_tsne


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()  # decodes every pixel: a truncated file fails here
        assert im.format == "PNG"
        return im.size


def rand_images(n: int, c: int = 1, side: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---- images ----------------------------------------------------------------------------------------
def test_to_unit_maps_and_clamps():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0])
    assert to_unit(x).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_grid_upsamples_small_digits_and_keeps_pixel_values(tmp_path):
    images = -torch.ones(16, 1, 28, 28)
    images[1] = 1.0  # second cell white
    path = save_grid(images, tmp_path / "a" / "b" / "grid.png", nrow=8)
    assert path == tmp_path / "a" / "b" / "grid.png"
    # 28 px cells: 8 * (28 + 2) + 2 = 242 px < 256, so nearest x2 -> 8 * (56 + 2) + 2 = 466 px.
    assert png_size(path) == (466, 2 * 58 + 2)
    with Image.open(path) as im:
        px = np.asarray(im.convert("L"))
    assert px[2 + 28, 2 + 28] == 0  # inside the first (black) cell
    assert px[2 + 28, 2 + 58 + 28] == 255  # inside the second (white) cell

    path = save_grid(rand_images(10, 3, 32), tmp_path / "rgb.png", nrow=5, scale=1)
    assert png_size(path) == (5 * 34 + 2, 2 * 34 + 2)


def test_reconstructions_report_per_image_mse(tmp_path):
    x = rand_images(10, 1, 28, seed=1)
    r = (x + 0.1 * torch.arange(10).view(10, 1, 1, 1) * rand_images(10, 1, 28, seed=2)).clamp(-1, 1)
    path, mse = save_reconstructions(x, r, tmp_path / "recon.png")
    expected = [float(((x[i] - r[i]) ** 2).mean()) for i in range(10)]
    assert mse == pytest.approx(expected, rel=1e-6)
    assert mse[0] == 0.0 and mse[9] > mse[1] > 0
    w, h = png_size(path)
    assert w >= 600 and 150 <= h <= 600

    path, mse = save_reconstructions(rand_images(4, 3, 32), rand_images(4, 3, 32, seed=5), tmp_path / "rgb.png")
    assert len(mse) == 4 and png_size(path)[0] > 200
    with pytest.raises(ValueError):
        save_reconstructions(x, r[:5], tmp_path / "bad.png")


def test_progress_collage_one_row_per_snapshot(tmp_path):
    snaps = [rand_images(8, 1, 28, seed=s) for s in range(4)]
    path = save_progress_collage(snaps, [0, 500, 1000, 1500], tmp_path / "progress.png")
    w, h = png_size(path)
    assert w >= 256 and h >= 4 * 28 * 2  # rows drawn at least x2 so digits are readable
    with pytest.raises(ValueError):
        save_progress_collage(snaps, [0, 1], tmp_path / "bad.png")


def test_variations_with_and_without_labels(tmp_path):
    rows = rand_images(4 * 6, 1, 28).view(4, 6, 1, 28, 28)
    w, h = png_size(save_variations(rows, tmp_path / "labelled.png", row_labels=[f"z{i}" for i in range(4)]))
    assert w >= 256 and h >= 4 * 28
    # Without labels it is a plain grid, one variation row per grid row: 6 * 30 + 2 = 182 px -> x2.
    assert png_size(save_variations(rows, tmp_path / "plain.png")) == (6 * 58 + 2, 4 * 58 + 2)


# ---- curves ----------------------------------------------------------------------------------------
def records() -> list[dict]:
    out = []
    for step in range(0, 200, 10):
        r = {"step": step, "loss": 1.0 / (1 + step), "kl": 5.0 + step / 100}
        if step % 50 == 0:
            r["fid"] = 100.0 - step / 4  # logged less often: other records lack it
        out.append(r)
    out[3]["loss"] = float("nan")
    return out


def test_curves_png_and_missing_key(tmp_path):
    path = save_curves(records(), tmp_path / "c" / "curves.png", keys=["loss", "kl", "fid"], title="run", smooth=0.9)
    w, h = png_size(path)
    assert w >= 500 and h >= 3 * 150
    assert png_size(save_curves(records(), tmp_path / "log.png", keys=["loss"], log=True))[1] >= 200
    with pytest.raises(ValueError, match="'recon'"):
        save_curves(records(), tmp_path / "missing.png", keys=["loss", "recon"])
    with pytest.raises(ValueError):
        save_curves(records(), tmp_path / "bad.png", keys=["loss"], smooth=1.0)


def test_ema_matches_its_definition():
    x = np.array([4.0, 0.0, 2.0, 8.0])
    y, a = [x[0]], 0.75
    for v in x[1:]:
        y.append(a * y[-1] + (1 - a) * v)
    assert ema(x, a) == pytest.approx(y)
    assert ema(x, 0.0) == pytest.approx(x)


# ---- t-SNE -----------------------------------------------------------------------------------------
def clusters(n_per: int = 100, k: int = 3, d: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, size=(k, d))
    labels = np.repeat(np.arange(k), n_per)
    return centres[labels] + rng.normal(size=(k * n_per, d)), labels


def test_tsne_shape_determinism_and_separation(tmp_path):
    x, y = clusters()
    path, xy = save_tsne(torch.from_numpy(x), torch.from_numpy(y), tmp_path / "t" / "tsne.png",
                         label_names=["a", "b", "c"], title="clusters")
    assert xy.shape == (300, 2) and np.isfinite(xy).all()
    w, h = png_size(path)
    assert w >= 400 and h >= 400
    # Well separated clusters stay separated: each point's nearest neighbour shares its label.
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (y[d.argmin(1)] == y).mean() > 0.95

    _, a = save_tsne(x, y, tmp_path / "a.png", seed=1, max_points=120)
    _, b = save_tsne(x, y, tmp_path / "b.png", seed=1, max_points=120)
    assert a.shape == (120, 2)
    np.testing.assert_allclose(a, b)


# ---- digit judge -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def judge() -> DigitJudge:
    return DigitJudge.fit()


@pytest.fixture(scope="module")
def real_test_digits() -> tuple[torch.Tensor, np.ndarray]:
    """The 360 held-out digits exactly as `dgen shard digits` renders them (32 px gray) and the stream decodes them."""
    src = get_source("digits")()
    samples = [src.read("test", i) for i in range(src.splits()["test"])]
    pixels = np.stack([np.asarray(fit_image(s.image, 32, 1), dtype=np.float32) for s in samples])
    return torch.from_numpy(pixels / 127.5 - 1.0).unsqueeze(1), np.array([s.label for s in samples])


def test_judge_accuracy_on_held_out_digits(judge, real_test_digits):
    assert judge.test_accuracy() > 0.97  # 8x8 originals; measured 0.981
    x, labels = real_test_digits
    assert (judge.predict_proba(x).argmax(1) == labels).mean() > 0.96  # rendered at 32 px; measured 0.981


def test_judge_trusts_real_digits_at_any_size_and_channels(judge, real_test_digits):
    x, _ = real_test_digits
    r = judge.judge(x)
    assert r["n"] == 360 and sum(r["class_histogram"]) == 360
    assert r["confidence"] > 0.85 and r["confident_fraction"] > 0.75  # measured 0.955 / 0.875
    assert r["classes_covered"] == 10
    rgb = judge.judge(x.repeat(1, 3, 1, 1))  # gray as RGB is the same image (up to float rounding)
    assert rgb["class_histogram"] == r["class_histogram"] and rgb["confidence"] == pytest.approx(r["confidence"])
    for side in (28, 64):
        rs = judge.judge(F.interpolate(x, size=side, mode="bilinear", antialias=True))
        assert rs["confidence"] > 0.85 and rs["classes_covered"] == 10  # measured 0.94 (28), 0.95 (64)


def test_judge_tolerates_blur(judge, real_test_digits):
    x, _ = real_test_digits
    r = judge.judge(TF.gaussian_blur(x, [9, 9], [2.0, 2.0]))
    assert r["confidence"] > 0.8 and r["classes_covered"] == 10  # measured 0.90


def test_judge_distrusts_noise_and_blank_images(judge, real_test_digits):
    noise = torch.rand(360, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for name, images in [("noise", noise), ("black", -torch.ones(64, 1, 32, 32)), ("white", torch.ones(64, 3, 32, 32))]:
        r = judge.judge(images)
        assert r["confidence"] < 0.4, name  # measured 0.24 / 0.23 / 0.27
        assert r["confident_fraction"] == 0.0, name
        assert r["classes_covered"] <= 3, name


def test_judge_sees_a_collapsed_generator(judge, real_test_digits):
    x, labels = real_test_digits
    r = judge.judge(x[labels == 3])  # confident digits, but only one class
    assert r["confidence"] > 0.85 and r["class_histogram"][3] >= 35 and r["classes_covered"] <= 2
    with pytest.raises(ValueError):
        judge.judge(x[:0])
