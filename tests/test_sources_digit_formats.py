"""The mnist, usps, svhn and mnist-m readers against tiny files in each dataset's real format."""

from __future__ import annotations

import argparse
import gzip
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

import dgen.data.sources.mnist  # noqa: F401  (registers mnist, mnist-m)
import dgen.data.sources.svhn  # noqa: F401
import dgen.data.sources.usps  # noqa: F401
from dgen.data.sources.base import get_source
from dgen.errors import DataError, UnreadableSample
from tests.fixtures.digit_formats import (
    write_backgrounds,
    write_mnist,
    write_mnistm_folder,
    write_mnistm_pt,
    write_svhn,
    write_usps,
)


def assert_reads(source, written, mode, size):
    assert source.splits() == {split: len(items) for split, items in written.items()}
    assert list(source.splits()) == list(written)  # train, test[, extra] in that order
    for split, items in written.items():
        keys = set()
        for i, (pixels, label) in enumerate(items):
            sample = source.read(split, i)
            assert sample.image.mode == mode and sample.image.size == (size, size)
            np.testing.assert_array_equal(np.asarray(sample.image), pixels)
            assert sample.label == label
            assert "." not in sample.key
            keys.add(sample.key)
        assert len(keys) == len(items)
    assert source.classes == [str(d) for d in range(10)]


def parse(name, argv):
    """What `dgen shard NAME ...` hands from_args: the source's flags plus size and channels."""
    cls = get_source(name)
    parser = argparse.ArgumentParser()
    cls.add_arguments(parser)
    args = parser.parse_args(argv)
    args.size, args.channels = None, cls.default_channels
    return cls.from_args(args)


# ---- mnist ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dotted", [False, True], ids=["idx3-ubyte", "dot-idx3-ubyte"])
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_mnist_reads_idx_files(tmp_path, gz, dotted):
    written = write_mnist(tmp_path, gz=gz, dotted=dotted)
    assert_reads(get_source("mnist")(root=tmp_path), written, "L", 28)


@pytest.mark.parametrize("dotted", [False, True], ids=["idx3-ubyte", "dot-idx3-ubyte"])
@pytest.mark.parametrize("sub", ["raw", "MNIST/raw"])
def test_mnist_finds_torchvision_layouts(tmp_path, sub, dotted):
    written = write_mnist(tmp_path / sub, n_train=3, n_test=2, dotted=dotted)
    source = parse("mnist", ["--root", str(tmp_path)])
    assert source.options() == {}
    assert_reads(source, written, "L", 28)


def test_mnist_pickles_without_its_arrays(tmp_path):
    write_mnist(tmp_path, n_train=3, n_test=2)
    source = get_source("mnist")(root=tmp_path)
    source.read("train", 0)
    clone = pickle.loads(pickle.dumps(source))
    assert clone._loaded == {}
    np.testing.assert_array_equal(np.asarray(clone.read("train", 2).image), np.asarray(source.read("train", 2).image))


def test_mnist_missing_files_are_named(tmp_path):
    with pytest.raises(DataError, match="does not exist.*train-images-idx3-ubyte.*--download"):
        get_source("mnist")(root=tmp_path / "nowhere")
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\[\.gz\].*--download") as err:
        get_source("mnist")(root=tmp_path)
    assert "missing t10k-labels-idx1-ubyte[.gz] (" in str(err.value)  # the one missing file, and only it
    # what the folders do hold is listed, so a misspelt or misplaced file shows up in the message
    assert "found only: t10k-images-idx3-ubyte.gz, train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in str(err.value)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "t10k-labels.idx1.ubyte").write_bytes(b"")
    with pytest.raises(DataError, match=r"raw/t10k-labels\.idx1\.ubyte"):
        get_source("mnist")(root=tmp_path)
    for f in list(tmp_path.glob("*.gz")) + list((tmp_path / "raw").iterdir()):
        f.unlink()
    with pytest.raises(DataError, match="those folders hold no files"):
        get_source("mnist")(root=tmp_path)


def test_mnist_mixed_spellings(tmp_path):
    """A folder where some files carry the dot and some the dash, plain and gzipped mixed, is complete."""
    write_mnist(tmp_path, gz=True)
    for gz in tmp_path.glob("t10k-*.gz"):
        gz.with_name(gz.name[:-3].replace("-idx", ".idx")).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    assert get_source("mnist")(root=tmp_path).splits() == {"train": 12, "test": 7}


def test_mnist_wrong_magic(tmp_path):
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[3] = 3  # labels file claiming three dimensions
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.*magic number 2051, expected 2049"):
        get_source("mnist")(root=tmp_path).splits()


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_truncated_idx(tmp_path, gz):
    write_mnist(tmp_path, gz=gz)
    path = tmp_path / ("t10k-images-idx3-ubyte" + ".gz" * gz)
    path.write_bytes(path.read_bytes()[:-50])  # cuts pixels (plain) or the gzip stream's end
    source = get_source("mnist")(root=tmp_path)
    assert source.splits()["test"] == 7  # the header alone is intact
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        source.read("test", 0)


def test_mnist_count_mismatch(tmp_path):
    write_mnist(tmp_path, n_train=5)
    write_mnist(tmp_path / "other", n_train=4)
    shutil.copy(tmp_path / "other" / "train-labels-idx1-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="5 images.*train-labels-idx1-ubyte.gz holds 4 labels"):
        get_source("mnist")(root=tmp_path).splits()


# ---- usps -----------------------------------------------------------------------------------
def test_usps_reads_libsvm_files(tmp_path):
    written = write_usps(tmp_path)
    source = parse("usps", ["--root", str(tmp_path)])
    assert_reads(source, written, "L", 16)
    assert pickle.loads(pickle.dumps(source))._loaded == {}


def test_usps_missing_and_corrupt(tmp_path):
    write_usps(tmp_path)
    (tmp_path / "usps.t.bz2").unlink()
    with pytest.raises(DataError, match=r"usps\.t\.bz2.*--download"):
        get_source("usps")(root=tmp_path)
    (tmp_path / "usps.t.bz2").write_bytes(b"not bzip2 at all")
    with pytest.raises(DataError, match=r"usps\.t\.bz2"):
        get_source("usps")(root=tmp_path).splits()


# ---- svhn -----------------------------------------------------------------------------------
def test_svhn_reads_mat_files(tmp_path):
    written = write_svhn(tmp_path)
    source = parse("svhn", ["--root", str(tmp_path)])
    assert list(source.splits()) == ["train", "test"]  # no extra file, no extra split
    assert_reads(source, written, "RGB", 32)
    assert written["train"][0][1] == 0  # stored as 10


def test_svhn_extra_split_when_present(tmp_path):
    written = write_svhn(tmp_path, n_train=3, n_test=2, n_extra=4)
    assert_reads(get_source("svhn")(root=tmp_path), written, "RGB", 32)


def test_svhn_missing_and_corrupt(tmp_path):
    write_svhn(tmp_path, n_train=3, n_test=2)
    (tmp_path / "train_32x32.mat").unlink()
    with pytest.raises(DataError, match=r"train_32x32\.mat.*--download") as err:
        get_source("svhn")(root=tmp_path)
    assert "extra" not in str(err.value)
    (tmp_path / "train_32x32.mat").write_bytes(b"garbage" * 50)
    with pytest.raises(DataError, match=r"train_32x32\.mat"):
        get_source("svhn")(root=tmp_path).splits()


# ---- mnist-m, pre-built ---------------------------------------------------------------------
@pytest.mark.parametrize("nested", [False, True])
def test_mnistm_folder_layout(tmp_path, nested):
    written = write_mnistm_folder(tmp_path / "mnist_m" if nested else tmp_path)
    source = parse("mnist-m", ["--root", str(tmp_path)])
    assert_reads(source, written, "RGB", 28)
    assert source.read("train", 3).key == "00000003"  # the png's stem
    assert source.options() == {"mode": "prebuilt-png"}


def test_mnistm_pt_layout(tmp_path):
    written = write_mnistm_pt(tmp_path)
    source = parse("mnist-m", ["--root", str(tmp_path)])
    assert_reads(source, written, "RGB", 28)
    assert source.options() == {"mode": "prebuilt-pt"}
    assert pickle.loads(pickle.dumps(source)).prebuilt._loaded == {}


def test_mnistm_corrupt_or_missing_png_is_one_unreadable_sample(tmp_path):
    written = write_mnistm_folder(tmp_path, n_train=4, n_test=2)
    png = tmp_path / "mnist_m_train" / "00000001.png"
    png.write_bytes(png.read_bytes()[:60])  # truncated
    (tmp_path / "mnist_m_train" / "00000002.png").unlink()
    source = get_source("mnist-m")(root=tmp_path)
    with pytest.raises(UnreadableSample, match="00000001.png"):
        source.read("train", 1)
    with pytest.raises(UnreadableSample, match="00000002.png"):
        source.read("train", 2)
    np.testing.assert_array_equal(np.asarray(source.read("train", 3).image), written["train"][3][0])


def test_mnistm_bad_labels_line(tmp_path):
    write_mnistm_folder(tmp_path, n_train=2, n_test=2)
    with open(tmp_path / "mnist_m_test_labels.txt", "a") as f:
        f.write("00000009.png eleven\n")
    with pytest.raises(DataError, match=r"mnist_m_test_labels\.txt:3"):
        get_source("mnist-m")(root=tmp_path).splits()


def test_mnistm_needs_one_of_two_modes(tmp_path):
    MnistM = get_source("mnist-m")
    for kwargs in ({}, {"mnist_root": tmp_path}, {"root": tmp_path, "mnist_root": tmp_path, "backgrounds": tmp_path}):
        with pytest.raises(DataError, match="--root.*--mnist-root.*--backgrounds"):
            MnistM(**kwargs)
    (tmp_path / "mnist_m_train").mkdir()  # partly there: the message names what is missing
    with pytest.raises(DataError, match=r"mnist_m_train_labels\.txt.*mnist_m_test.*--mnist-root"):
        MnistM(root=tmp_path)
    with pytest.raises(DataError, match="pre-built MNIST-M has no official download"):
        parse("mnist-m", ["--root", str(tmp_path), "--download"])


# ---- mnist-m, the recipe --------------------------------------------------------------------
def test_mnistm_recipe(tmp_path):
    digits = write_mnist(tmp_path / "mnist", n_train=4, n_test=3)
    write_backgrounds(tmp_path / "photos", n=3)
    paths = sorted((tmp_path / "photos").iterdir())  # PhotoSet's order
    photos = [np.asarray(Image.open(p).convert("RGB")).astype(np.int16) for p in paths]
    argv = ["--mnist-root", str(tmp_path / "mnist"), "--backgrounds", str(tmp_path / "photos")]
    source = parse("mnist-m", argv)
    assert source.splits() == {"train": 4, "test": 3}
    assert source.options()["seed"] == 0 and source.options()["photos"] == 3
    other_seed = parse("mnist-m", argv + ["--seed", "1"])

    for split, items in digits.items():
        for i, (digit, label) in enumerate(items):
            sample = source.read(split, i)
            assert sample.image.mode == "RGB" and sample.image.size == (28, 28) and sample.label == label
            out = np.asarray(sample.image)
            np.testing.assert_array_equal(out, np.asarray(source.read(split, i).image))  # deterministic
            # some crop of some photo gives out = |patch - digit| exactly (so where digit == 0, out == patch)
            d = digit.astype(np.int16)[:, :, None]
            assert any(
                np.array_equal(np.abs(p[y : y + 28, x : x + 28] - d), out)
                for p in photos
                for y in range(p.shape[0] - 27)
                for x in range(p.shape[1] - 27)
            ), f"{split}/{i} is not |photo patch - digit|"
    same = [np.array_equal(np.asarray(source.read("train", i).image), np.asarray(other_seed.read("train", i).image))
            for i in range(4)]
    assert not all(same)


def test_mnistm_recipe_on_the_embedded_photos(tmp_path):
    """`--backgrounds embedded`: the 7 photos that ship in scikit-learn and scikit-image, as digits-m uses."""
    from dgen.data.sources.digits import EmbeddedPhotos

    digits = write_mnist(tmp_path / "mnist", n_train=4, n_test=3)
    source = parse("mnist-m", ["--mnist-root", str(tmp_path / "mnist"), "--backgrounds", "embedded"])
    assert source.options() == {"mode": "recipe", "seed": 0,
                                "photos": "sklearn+skimage:astronaut,chelsea,coffee,rocket,immunohistochemistry"}
    photos = EmbeddedPhotos()
    sample = pickle.loads(pickle.dumps(source)).read("test", 2)  # a loader worker's copy builds the same image
    digit = digits["test"][2][0].astype(np.int16)[:, :, None]
    out = np.asarray(sample.image)
    assert sample.label == digits["test"][2][1] and np.array_equal(out, np.asarray(source.read("test", 2).image))
    assert any(np.array_equal(np.abs(p[y:y + 28, x:x + 28].astype(np.int16) - digit), out)
               for p in (photos.get(i) for i in range(len(photos)))
               for y in range(0, p.shape[0] - 27) for x in range(0, p.shape[1] - 27)
               if np.array_equal(np.abs(p[y, x].astype(np.int16) - digit[0, 0]), out[0, 0]))
    with pytest.raises(DataError, match="background folder embeded does not exist"):
        parse("mnist-m", ["--mnist-root", str(tmp_path / "mnist"), "--backgrounds", "embeded"])


def test_mnistm_recipe_pickles_and_where_digit_is_zero_shows_the_photo(tmp_path):
    # a real-looking digit: mostly black background
    write_mnist(tmp_path / "mnist", n_train=1, n_test=1, gz=False)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[16:] = bytes(784)
    path.write_bytes(bytes(data))
    write_backgrounds(tmp_path / "photos", n=1)
    photo = np.asarray(Image.open(tmp_path / "photos" / "000.jpg").convert("RGB"))
    source = get_source("mnist-m")(mnist_root=tmp_path / "mnist", backgrounds=tmp_path / "photos")
    source = pickle.loads(pickle.dumps(source))
    out = np.asarray(source.read("train", 0).image)
    assert any(np.array_equal(photo[y : y + 28, x : x + 28], out)
               for y in range(photo.shape[0] - 27) for x in range(photo.shape[1] - 27))
