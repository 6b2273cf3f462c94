"""The celeba and folder sources on small fixtures written in the real on-disk formats."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

import dgen.data.sources.celeba  # noqa: F401  (registers celeba)
import dgen.data.sources.folder  # noqa: F401  (registers folder)
from dgen.data.images import fit_image
from dgen.data.sources.base import get_source
from dgen.errors import DataError, UnreadableSample
from tests.fixtures.image_formats import CELEBA_ATTRIBUTES, write_celeba, write_folder


def make(name: str, *argv: str):
    """Build a source the way `dgen shard NAME ...` does: its own flags plus the shared size/channels."""
    cls = get_source(name)
    parser = argparse.ArgumentParser()
    cls.add_arguments(parser)
    args = parser.parse_args(list(argv))
    args.size, args.channels = cls.default_size, cls.default_channels
    return cls.from_args(args)


def read_all(source) -> dict[str, list]:
    return {split: [source.read(split, i) for i in range(n)] for split, n in source.splits().items()}


def assert_keys_ok(samples) -> None:
    keys = [s.key for s in samples]
    assert len(set(keys)) == len(keys)
    assert not any("." in k or "/" in k for k in keys)


# ---- celeba ----------------------------------------------------------------------------------------


def test_celeba_reads_splits_pixels_and_attributes(tmp_path):
    expected = write_celeba(tmp_path, n=10)
    source = make("celeba", "--root", str(tmp_path))

    assert source.splits() == {"train": 6, "valid": 2, "test": 2}
    assert list(source.splits()) == ["train", "valid", "test"]
    assert source.attributes == CELEBA_ATTRIBUTES and len(source.attributes) == 40
    assert source.classes is None and source.options() == {}
    for split, samples in read_all(source).items():
        assert_keys_ok(samples)
        for sample, (pixels, attrs) in zip(samples, expected[split], strict=True):
            assert sample.image.mode == "RGB" and sample.image.size == (178, 218)
            np.testing.assert_array_equal(np.asarray(sample.image), pixels)
            assert sample.attrs == attrs and sample.label is None
    assert [s.key for s in read_all(source)["train"]] == [f"{i:06d}" for i in range(1, 7)]

    # what the shard writer does with it: the 148px center crop, then 64x64
    out = fit_image(source.read("train", 0).image, source.default_size, source.default_channels, source.default_crop)
    assert out.size == (64, 64) and out.mode == "RGB"


def test_celeba_accepts_torchvision_layout(tmp_path):
    write_celeba(tmp_path / "celeba", n=3)
    assert make("celeba", "--root", str(tmp_path)).splits() == {"train": 1, "valid": 1, "test": 1}


def test_celeba_missing_files_are_all_named(tmp_path):
    write_celeba(tmp_path, n=3)
    (tmp_path / "list_attr_celeba.txt").unlink()
    with pytest.raises(DataError, match="list_attr_celeba.txt"):
        make("celeba", "--root", str(tmp_path))
    (tmp_path / "list_eval_partition.txt").unlink()
    with pytest.raises(DataError, match="list_attr_celeba.txt, list_eval_partition.txt"):
        make("celeba", "--root", str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        make("celeba", "--root", str(tmp_path / "nowhere"))


def _edit_line(path, lineno, edit):
    lines = path.read_text().splitlines()
    lines[lineno - 1] = edit(lines[lineno - 1])
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "file, lineno, edit, message",
    [
        ("list_attr_celeba.txt", 1, lambda line: "11", "says 11 images but the file has 10 rows"),
        ("list_attr_celeba.txt", 4, lambda line: line + "  1", "41 values for 40 attributes"),
        ("list_attr_celeba.txt", 4, lambda line: line[:-2] + " 0", "must be -1 or 1"),
        ("list_attr_celeba.txt", 12, lambda line: line.replace("000010.jpg", "000099.jpg"), "no row in"),
        ("list_eval_partition.txt", 2, lambda line: line[:-1] + "3", "000002.jpg 3"),
    ],
)
def test_celeba_inconsistent_metadata(tmp_path, file, lineno, edit, message):
    write_celeba(tmp_path, n=10)
    _edit_line(tmp_path / file, lineno, edit)
    with pytest.raises(DataError, match=message):
        make("celeba", "--root", str(tmp_path))


def test_celeba_missing_and_truncated_images_are_unreadable_samples(tmp_path):
    write_celeba(tmp_path, n=10)
    images = tmp_path / "img_align_celeba"
    (images / "000002.jpg").unlink()
    data = (images / "000003.jpg").read_bytes()
    (images / "000003.jpg").write_bytes(data[: len(data) // 2])
    (images / "000004.jpg").write_text("not a jpeg")
    source = make("celeba", "--root", str(tmp_path))  # constructing does not open images

    with pytest.raises(UnreadableSample, match="000002.jpg"):
        source.read("train", 1)
    with pytest.raises(UnreadableSample, match="000003.jpg"):
        source.read("train", 2)
    with pytest.raises(UnreadableSample, match="000004.jpg"):
        source.read("train", 3)
    assert source.read("train", 4).key == "000005"  # the others still read


# ---- folder ----------------------------------------------------------------------------------------


def test_folder_split_class_layout(tmp_path):
    expected = write_folder(tmp_path, "split-classes", n=3, classes=("dog", "cat"), splits=("train", "valid", "test"))
    source = make("folder", "--root", str(tmp_path))

    assert source.splits() == {"train": 6, "valid": 6, "test": 6}
    assert source.classes == ["cat", "dog"]
    assert source.options() == {}  # the folders fix the split
    for split, samples in read_all(source).items():
        assert_keys_ok(samples)
        for sample, (pixels, label) in zip(samples, expected[split], strict=True):
            assert sample.image.mode == "RGB" and sample.image.size == pixels.shape[1::-1]
            np.testing.assert_array_equal(np.asarray(sample.image), pixels)
            assert sample.label == label
    assert source.read("train", 0).key == "cat__img_000"


def test_folder_classes_are_the_union_over_splits(tmp_path):
    write_folder(tmp_path, "split-classes", n=2, classes=("dog", "cat"))
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "loose.PNG")
    assert make("folder", "--root", str(tmp_path)).classes is None  # one image outside a class folder
    (tmp_path / "train" / "ant").mkdir()
    (tmp_path / "train" / "loose.PNG").rename(tmp_path / "train" / "ant" / "loose.PNG")  # a class only in train

    source = make("folder", "--root", str(tmp_path))
    assert source.classes == ["ant", "cat", "dog"]
    assert [s.label for s in read_all(source)["test"]] == [1, 1, 2, 2]
    assert read_all(source)["train"][0].key == "ant__loose"


def test_folder_flat_split_is_reproducible(tmp_path):
    expected = write_folder(tmp_path, "flat", n=30)["all"]
    (tmp_path / ".hidden").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / ".hidden" / "x.png")  # hidden folders are skipped
    (tmp_path / "._img_000.png").write_bytes(b"macOS resource fork")  # so are hidden files

    source = make("folder", "--root", str(tmp_path), "--test-fraction", "0.2")
    assert source.splits() == {"train": 24, "test": 6}
    assert source.classes is None
    assert source.options() == {"test_fraction": 0.2, "split_seed": 0}
    samples = read_all(source)
    assert_keys_ok(samples["train"] + samples["test"])

    # every image lands in exactly one split, with its own pixels
    paths = sorted(f"sub/img_{i:03d}" if i % 3 == 2 else f"img_{i:03d}" for i in range(30))  # writer's order
    by_key = dict(zip((p.replace("/", "__") for p in paths), expected, strict=True))
    for sample in samples["train"] + samples["test"]:
        pixels, label = by_key.pop(sample.key)
        np.testing.assert_array_equal(np.asarray(sample.image), pixels)
        assert sample.label is None
    assert not by_key

    def test_keys(*argv):
        source = make("folder", "--root", str(tmp_path), "--test-fraction", "0.2", *argv)
        return [s.key for s in read_all(source)["test"]]

    assert test_keys() == test_keys("--split-seed", "0")
    assert test_keys() != test_keys("--split-seed", "1")


def test_folder_class_layout_without_split_folders(tmp_path):
    write_folder(tmp_path, "classes", n=5, classes=("b", "a"))
    source = make("folder", "--root", str(tmp_path))
    assert source.classes == ["a", "b"]
    assert source.splits() == {"train": 9, "test": 1}
    for sample in read_all(source)["train"]:
        assert sample.label == ["a", "b"].index(sample.key.split("__")[0])


def test_folder_small_counts(tmp_path):
    write_folder(tmp_path, "flat", n=2)
    assert make("folder", "--root", str(tmp_path)).splits() == {"train": 1, "test": 1}  # at least one test item
    (tmp_path / "img_001.png").unlink()
    assert make("folder", "--root", str(tmp_path)).splits() == {"train": 1}  # only non-empty splits


def test_folder_empty_or_missing_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no images"):
        make("folder", "--root", str(tmp_path))
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DataError, match="no images"):
        make("folder", "--root", str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        make("folder", "--root", str(tmp_path / "nowhere"))


def test_folder_modes_keys_and_corrupt_files(tmp_path):
    Image.fromarray(np.full((4, 5), 7, np.uint8)).save(tmp_path / "gray.png")
    Image.new("RGBA", (5, 4), (10, 20, 30, 0)).save(tmp_path / "alpha.PNG")
    Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(tmp_path / "deep.tif")  # 16-bit grayscale
    Image.new("RGB", (5, 4), (1, 2, 3)).save(tmp_path / "x.v2.jpg")
    Image.new("RGB", (5, 4)).save(tmp_path / "x_v2.bmp")  # the same key after dots become "_"
    data = (tmp_path / "x.v2.jpg").read_bytes()
    (tmp_path / "broken.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "fake.webp").write_text("not an image")
    source = make("folder", "--root", str(tmp_path), "--test-fraction", "0")

    assert source.splits() == {"train": 7}
    samples = {}
    for i, name in enumerate(sorted(p.name for p in tmp_path.iterdir())):  # the reader's order
        try:
            samples[name] = source.read("train", i)
        except UnreadableSample as e:
            samples[name] = str(e)
    assert "broken.jpg" in samples["broken.jpg"] and "fake.webp" in samples["fake.webp"]
    assert samples["gray.png"].image.mode == "L"
    assert samples["alpha.PNG"].image.mode == "RGB" and samples["alpha.PNG"].image.getpixel((0, 0)) == (10, 20, 30)
    assert samples["deep.tif"].image.mode == "L" and samples["deep.tif"].image.getpixel((0, 0)) == 255
    keys = [s.key for s in samples.values() if not isinstance(s, str)]
    assert_keys_ok([s for s in samples.values() if not isinstance(s, str)])
    assert {"x_v2", "x_v2_2"} <= set(keys)
