"""`dgen verify` catches damaged shards and manifests that do not match them."""

from __future__ import annotations

import hashlib
import io
import json

import webdataset as wds

from dgen.cli import main
from dgen.data.verify import verify


def _rewrite_manifest(folder, edit):
    m = json.loads((folder / "manifest.json").read_text())
    edit(m)
    (folder / "manifest.json").write_text(json.dumps(m))


def _reseal(folder, name):
    """Make the manifest's sha256 agree with the (damaged) file, so the deeper checks must catch it."""
    digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()

    def edit(m):
        for split in m["splits"].values():
            for sh in split["shards"]:
                if sh["name"] == name:
                    sh["sha256"] = digest
    _rewrite_manifest(folder, edit)


def test_clean_shards_pass(digits_shards, capsys):
    assert verify(digits_shards) == []
    assert main(["verify", str(digits_shards)]) == 0
    assert verify(digits_shards / "manifest.json") == []  # the manifest's path means its folder, as elsewhere


def test_flipped_byte(digits_copy, capsys):
    path = digits_copy / "train-000002.tar"
    data = bytearray(path.read_bytes())
    data[5000] ^= 0x01
    path.write_bytes(bytes(data))
    problems = verify(digits_copy)
    assert len(problems) == 1 and problems[0].startswith("train-000002.tar: sha256")
    assert main(["verify", str(digits_copy)]) == 1
    assert "first: train-000002.tar" in capsys.readouterr().err


def test_truncated_shard(digits_copy):
    path = digits_copy / "test-000000.tar"
    path.write_bytes(path.read_bytes()[:100_000])
    assert verify(digits_copy)[0].startswith("test-000000.tar: sha256")
    _reseal(digits_copy, "test-000000.tar")
    problem = verify(digits_copy)[0]
    assert problem.startswith("test-000000.tar: ") and ("cannot be read to the end" in problem or "holds" in problem)


def test_corrupt_image_inside_a_valid_tar(digits_copy):
    path = digits_copy / "train-000000.tar"
    samples = list(wds.tariterators.tarfile_samples([{"url": str(path)}]))
    buf = io.BytesIO()
    with wds.TarWriter(buf, encoder=False, mtime=0) as tar:
        for k, s in enumerate(samples):
            tar.write({"__key__": s["__key__"], "png": b"not a png" if k == 7 else s["png"], "cls": s["cls"]})
    path.write_bytes(buf.getvalue())
    _reseal(digits_copy, "train-000000.tar")
    problems = verify(digits_copy)
    assert len(problems) == 1
    assert problems[0].startswith(f"train-000000.tar: sample {samples[7]['__key__']}: image does not decode")
    assert verify(digits_copy, decode=False) == []  # --no-decode skips exactly that check


def test_manifest_count_mismatch(digits_copy):
    def edit(m):
        m["splits"]["test"]["shards"][1]["samples"] += 1
        m["splits"]["test"]["samples"] += 1
    _rewrite_manifest(digits_copy, edit)
    assert verify(digits_copy) == ["test-000001.tar: holds 60 samples, the manifest says 61"]


def test_missing_and_extra_shards(digits_copy):
    (digits_copy / "train-000004.tar").rename(digits_copy / "train-000099.tar")
    problems = verify(digits_copy)
    assert problems[0].startswith("train-000004.tar: cannot be read")
    assert problems[1].startswith("train-000099.tar: not listed in the manifest")
