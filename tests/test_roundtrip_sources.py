"""Every source: fixture files in the dataset's real format -> `write_shards` -> eval stream gives
back exactly the images, labels and attributes the fixture wrote (after the writer's resize)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dgen.data.images import fit_image
from dgen.data.shard import write_shards
from dgen.data.sources import get_source
from dgen.data.stream import eval_loader
from tests.fixtures import digit_formats as df
from tests.fixtures import image_formats as imf


def _tensor_to_uint8(x) -> np.ndarray:
    """[-1, 1] float CHW -> uint8 HWC (or HW for one channel), exactly inverting the stream's scaling."""
    a = np.rint((x.numpy() + 1.0) * 127.5).astype(np.uint8).transpose(1, 2, 0)
    return a[..., 0] if a.shape[2] == 1 else a


def _setup(name, tmp_path):
    """(source, expected split -> [(array, label or None, attrs or None)], shard options)."""
    root = tmp_path / "raw"
    if name == "mnist":
        written = df.write_mnist(root, gz=True)
        src = get_source("mnist")(root=root)
    elif name == "usps":
        written = df.write_usps(root)
        src = get_source("usps")(root=root)
    elif name == "svhn":
        written = df.write_svhn(root, n_extra=3)
        src = get_source("svhn")(root=root)
    elif name == "mnist-m-png":
        written = df.write_mnistm_folder(root)
        src = get_source("mnist-m")(root=root)
    elif name == "mnist-m-pt":
        written = df.write_mnistm_pt(root)
        src = get_source("mnist-m")(root=root)
    elif name == "celeba":
        written = imf.write_celeba(root, n=10)
        src = get_source("celeba")(root=root)
        expected = {s: [(a, None, attrs) for a, attrs in items] for s, items in written.items() if items}
        return src, expected, dict(size=64, channels=3)
    elif name == "folder":
        written = imf.write_folder(root, layout="split-classes")
        src = get_source("folder")(root=root)
        expected = {s: [(a, label, None) for a, label in items] for s, items in written.items()}
        return src, expected, dict(size=16, channels=3)
    else:
        raise AssertionError(name)
    expected = {s: [(a, label, None) for a, label in items] for s, items in written.items() if items}
    return src, expected, dict(size=None, channels=src.default_channels)


@pytest.mark.parametrize("name", ["mnist", "usps", "svhn", "mnist-m-png", "mnist-m-pt", "celeba", "folder"])
def test_fixture_shard_stream_roundtrip(name, tmp_path):
    src, expected, opts = _setup(name, tmp_path)
    out = tmp_path / "shards"
    write_shards(src, out, per_shard=5, progress=False, **opts)  # several shards per split
    for split, items in expected.items():
        batches = list(eval_loader(out, split, batch_size=4))
        images = [img for b in batches for img in b["image"]]
        assert len(images) == len(items), split
        for k, (img, (array, label, attrs)) in enumerate(zip(images, items)):
            want = np.asarray(fit_image(Image.fromarray(array), opts["size"], opts["channels"], src.default_crop))
            np.testing.assert_array_equal(_tensor_to_uint8(img), want, err_msg=f"{name}/{split}[{k}]")
        if items[0][1] is not None:
            assert [int(x) for b in batches for x in b["label"]] == [label for _, label, _ in items]
        else:
            assert all("label" not in b for b in batches)
        if items[0][2] is not None:
            names = src.attributes
            got = [row.tolist() for b in batches for row in b["attrs"]]
            assert got == [[attrs[a] for a in names] for _, _, attrs in items]


def test_mnistm_recipe_roundtrip(tmp_path):
    written = df.write_mnist(tmp_path / "mnist")
    df.write_backgrounds(tmp_path / "photos")
    src = get_source("mnist-m")(mnist_root=tmp_path / "mnist", backgrounds=tmp_path / "photos", seed=3)
    out = tmp_path / "shards"
    write_shards(src, out, per_shard=5, progress=False)
    batch = next(iter(eval_loader(out, "train", batch_size=len(written["train"]))))
    assert batch["image"].shape == (len(written["train"]), 3, 28, 28)
    assert batch["label"].tolist() == [label for _, label in written["train"]]
    for img, k in zip(batch["image"], range(len(written["train"]))):
        np.testing.assert_array_equal(_tensor_to_uint8(img), np.asarray(src.read("train", k).image))
