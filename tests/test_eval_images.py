"""`dgen eval --images PATH --data SHARDS`: the digits shards' own test images written as real PNG/JPEG files, .npy
and .npz, scored through `dgen.cli.main` against the same shards: every format gives the same score, real digits
score far below noise, the train-split reference reproduces the floor (`dgen eval --data`), and bad input is one
line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dgen.cli import main
from dgen.data.stream import eval_loader
from dgen.eval.fid import load_or_train_feature_classifier
from tests.test_fid import one_thread

STEPS = 150  # feature classifier steps (of 128): ~8 s on one core, trained once per session into the shards' cache


@pytest.fixture(scope="module")
def shards(digits_shards) -> Path:
    """The digits shards with the --fid-classifier-steps STEPS classifier already in their cache (the CLI's)."""
    with one_thread():
        load_or_train_feature_classifier(digits_shards, steps=STEPS)
    return digits_shards


@pytest.fixture(scope="module")
def digits(shards) -> np.ndarray:
    """The shards' test split as uint8 N x H x W (360 x 32 x 32), in the stream's order."""
    x = torch.cat([b["image"] for b in eval_loader(shards, "test", batch_size=512)])  # [-1, 1] = u / 127.5 - 1
    return ((x[:, 0] + 1) * 127.5).round().to(torch.uint8).numpy()


def write_pngs(folder: Path, images: np.ndarray, mode: str = "L", suffix: str = ".png") -> Path:
    """One file per image, in two subfolders, named so that sorted paths keep the array's order."""
    for i, img in enumerate(images):
        path = folder / f"part{i // 200}" / f"{i:04d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).convert(mode).save(path)
    return folder


def score(capsys, shards, images, *extra) -> tuple[dict, str]:
    with one_thread():
        rc = main(["eval", "--images", str(images), "--data", str(shards), "--fid-classifier-steps", str(STEPS),
                   *map(str, extra)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    (line,) = out.splitlines()
    return json.loads(line), err


def fid(result: dict) -> float:
    return result["test/fid_classifier"]


def test_png_folder_npy_and_npz_give_the_same_score(shards, digits, tmp_path, capsys):
    pngs = write_pngs(tmp_path / "pngs", digits)
    np.save(tmp_path / "nhwc.npy", digits[..., None])
    np.savez(tmp_path / "named.npz", images=digits, labels=np.arange(len(digits)))  # N x H x W, key "images"
    np.savez(tmp_path / "only.npz", digits[:, None])  # N x C x H x W, the only array (arr_0)
    png, err = score(capsys, shards, pngs)
    assert png["images"] == 360 and png["reference"] == f"{shards} test split"
    assert set(png) == {"test/fid_classifier", "test/kid_classifier", "images", "reference", "image_size"}
    assert png["image_size"] == 32
    assert fid(png) == pytest.approx(0, abs=1e-3)  # the reference images themselves
    # one warning line: fewer than 2,000 images
    (warning,) = [line for line in err.splitlines() if "warning" in line]
    assert warning.startswith("dgen: warning: scoring 360 images: FID is biased upward below 2000")
    for path in ("nhwc.npy", "named.npz", "only.npz"):
        got, _ = score(capsys, shards, tmp_path / path)
        assert got["images"] == 360
        for key in ("test/fid_classifier", "test/kid_classifier"):
            assert got[key] == pytest.approx(png[key], abs=1e-6), (path, key)


def test_digits_score_far_below_noise_and_the_train_split_gives_the_floor(shards, digits, tmp_path, capsys):
    noise = np.random.default_rng(0).integers(0, 256, size=digits.shape, dtype=np.uint8)
    np.save(tmp_path / "noise.npy", noise)
    np.save(tmp_path / "digits.npy", digits)
    vs_noise, _ = score(capsys, shards, tmp_path / "noise.npy")
    vs_train, _ = score(capsys, shards, tmp_path / "digits.npy", "--split", "train")
    assert set(vs_train) == {"train/fid_classifier", "train/kid_classifier", "images", "reference", "image_size"}
    assert vs_train["reference"] == f"{shards} train split"
    assert 0.5 < vs_train["train/fid_classifier"] < fid(vs_noise) / 10  # measured 2.6 vs 3477 (150 steps)
    # the test images against the train split are `dgen eval --data`'s floor (train against test; FID is symmetric)
    with one_thread():
        assert main(["eval", "--data", str(shards), "--fid-classifier-steps", str(STEPS)]) == 0
    floor = json.loads(capsys.readouterr().out)
    assert vs_train["train/fid_classifier"] == pytest.approx(floor["test/fid_classifier"], rel=1e-6)
    assert floor["images"] == 1437  # fewer training images than the default 2,000: all of them


def test_the_floor_takes_the_first_n_training_images_at_the_size_asked(shards, tmp_path, capsys):
    """`dgen eval --data --samples N` scores the first N training images (like a run's N samples), and
    `--image-size` scores at the size a run resizes to, with that size's classifier."""
    train = torch.cat([b["image"] for b in eval_loader(shards, "train", batch_size=512)])
    np.save(tmp_path / "first.npy", ((train[:300, 0] + 1) * 127.5).round().to(torch.uint8).numpy())
    with one_thread():
        assert main(["eval", "--data", str(shards), "--fid-classifier-steps", str(STEPS), "--samples", "300"]) == 0
    floor = json.loads(capsys.readouterr().out)
    assert floor["images"] == 300 and floor["image_size"] == 32
    same, _ = score(capsys, shards, tmp_path / "first.npy")
    assert fid(same) == pytest.approx(floor["test/fid_classifier"], rel=1e-6)
    smaller, _ = score(capsys, shards, tmp_path / "first.npy", "--image-size", "24")
    assert smaller["image_size"] == 24 and fid(smaller) != pytest.approx(fid(same), rel=1e-3)


def test_rgb_jpeg_mixed_sizes_and_floats_are_converted(shards, digits, tmp_path, capsys):
    gray, _ = score(capsys, shards, write_pngs(tmp_path / "gray", digits))
    rgb, _ = score(capsys, shards, write_pngs(tmp_path / "rgb", digits, mode="RGB"))
    assert fid(rgb) == pytest.approx(fid(gray), abs=1e-6)  # PIL's luma of (g, g, g) is g
    np.save(tmp_path / "float.npy", digits.astype(np.float32) / 255)
    floats, _ = score(capsys, shards, tmp_path / "float.npy")
    assert fid(floats) == pytest.approx(fid(gray), abs=1e-6)
    noise, _ = score(capsys, shards, write_pngs(tmp_path / "noise", np.random.default_rng(0).integers(
        0, 256, size=digits.shape, dtype=np.uint8)))
    mixed = tmp_path / "mixed"  # every other image at 48 px (resized back to 32 by the CLI), as JPEG
    write_pngs(mixed, digits, mode="RGB", suffix=".jpg")
    for path in sorted(mixed.rglob("*.jpg"))[::2]:
        with Image.open(path) as im:
            im.resize((48, 48), Image.BILINEAR).save(path)
    jpeg, err = score(capsys, shards, mixed)
    assert jpeg["images"] == 360 and len(err.strip().splitlines()) == 1  # the small-N warning only
    assert fid(jpeg) < fid(noise) / 10


def test_samples_takes_the_first_in_sorted_order(shards, digits, tmp_path, capsys):
    folder = write_pngs(tmp_path / "pngs", digits)
    np.save(tmp_path / "first.npy", digits[:100])
    capped, err = score(capsys, shards, folder, "--samples", 100)
    assert capped["images"] == 100 and "scoring the first 100 of the 360 images" in err
    first, _ = score(capsys, shards, tmp_path / "first.npy")
    assert fid(capped) == pytest.approx(fid(first), abs=1e-6)


def _corrupt_png(tmp_path: Path) -> Path:
    folder = tmp_path / "pngs"
    folder.mkdir()
    Image.new("L", (32, 32)).save(folder / "0000.png")
    (folder / "0001.png").write_bytes(Image.new("L", (32, 32)).tobytes())  # raw pixels, no PNG header
    return folder


BAD = {  # name: (the input to make, words of the message)
    "missing": (lambda d: d / "nowhere", ["nowhere", "does not exist"]),
    "empty folder": (lambda d: (d / "empty").mkdir() or d / "empty", ["empty", "no PNG or JPEG images"]),
    "corrupt png": (_corrupt_png, ["0001.png", "not a readable PNG or JPEG image"]),
    "5-D": (lambda d: np.save(d / "a.npy", np.zeros((2, 1, 1, 8, 8), np.uint8)) or d / "a.npy",
            ["a.npy", "(2, 1, 1, 8, 8)", "N x H x W"]),
    "float range": (lambda d: np.save(d / "a.npy", np.linspace(-1, 1, 2 * 64).reshape(2, 8, 8)) or d / "a.npy",
                    ["a.npy", "must be in [0, 1]", "[-1, 1]"]),
    "int64": (lambda d: np.save(d / "a.npy", np.zeros((2, 8, 8), np.int64)) or d / "a.npy",
              ["a.npy", "int64", "uint8"]),
    "npz of two": (lambda d: np.savez(d / "a.npz", x=np.zeros((2, 8, 8), np.uint8), y=np.zeros(2)) or d / "a.npz",
                   ["a.npz", "x, y", "'images'"]),
    "not an image source": (lambda d: (d / "a.txt").write_text("hi") and d / "a.txt", ["a.txt", "a folder"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_exit_2(case, digits_shards, tmp_path, capsys):
    make, words = BAD[case]
    rc = main(["eval", "--images", str(make(tmp_path)), "--data", str(digits_shards)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("dgen: error: ") and all(w in line for w in words), line


@pytest.mark.parametrize("argv, words", [
    (["--images", "x.npy"], ["--data"]),
    (["--images", "x.npy", "--data", "d", "--run", "r"], ["--run"]),
    (["--images", "x.npy", "--data", "d", "--table", "r"], ["--table"]),
    (["--data", "d", "--split", "train"], ["--split", "--images"]),
])
def test_images_goes_with_data_alone(argv, words, capsys):
    assert main(["eval", *argv]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("dgen: error: ") and all(w in line for w in words), line
