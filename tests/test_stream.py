"""The streaming loader in one process: values, batch counts, determinism, exact resume, coverage
of the evaluation split for any rank x worker layout, remote locations, and bad data."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import contextlib
import json
import logging

import numpy as np
import pytest
import torch
import webdataset as wds

from dgen.data.sources import get_source
from dgen.data.stream import eval_loader, train_loader
from dgen.errors import DataError

TRAIN, TEST = 1437, 360


def _keys(loader) -> list[str]:
    return [k for b in loader for k in b["key"]]


def test_eval_stream_returns_the_source_exactly(digits_shards):
    src = get_source("digits")()
    batches = list(eval_loader(digits_shards, "test", batch_size=100))
    assert [len(b["key"]) for b in batches] == [100, 100, 100, 60]
    images = torch.cat([b["image"] for b in batches])
    assert images.shape == (TEST, 1, 32, 32) and images.dtype == torch.float32
    assert images.min() == -1.0 and images.max() == 1.0
    from dgen.data.images import fit_image

    for i in (0, 123, TEST - 1):
        sample = src.read("test", i)
        want = np.asarray(fit_image(sample.image, 32, 1)).astype(np.float32) / 127.5 - 1
        np.testing.assert_allclose(images[i, 0].numpy(), want, atol=1e-6)
        assert int(torch.cat([b["label"] for b in batches])[i]) == sample.label


def test_channels_and_size_on_request(digits_shards):
    b = next(iter(eval_loader(digits_shards, "test", batch_size=8, channels=3, image_size=16)))
    assert b["image"].shape == (8, 3, 16, 16)
    assert torch.equal(b["image"][:, 0], b["image"][:, 2])  # gray -> RGB repeats the channel


@pytest.mark.parametrize("workers", [0, 2])
def test_train_stream_epoch_determinism_and_resume(digits_shards, workers):
    loader = train_loader(digits_shards, batch_size=64, seed=7, num_workers=workers)
    assert len(loader) == TRAIN // 64  # one pass over the split per epoch (the last 1437 % 64 wait for the next)
    epoch0 = list(loader)
    assert len(epoch0) == len(loader) and all(b["image"].shape == (64, 1, 32, 32) for b in epoch0)
    again = list(loader)
    assert [b["key"] for b in again] == [b["key"] for b in epoch0]
    loader.set_epoch(1)
    assert [b["key"] for b in loader] != [b["key"] for b in epoch0]
    loader.set_epoch(0, start_batch=9)  # resume mid-epoch: exactly the remaining batches, same contents
    resumed = list(loader)
    assert [b["key"] for b in resumed] == [b["key"] for b in epoch0[9:]]
    assert torch.equal(resumed[0]["image"], epoch0[9]["image"])
    other_seed = train_loader(digits_shards, batch_size=64, seed=8, num_workers=workers)
    assert [b["key"] for b in other_seed] != [b["key"] for b in epoch0]


def test_train_stream_is_shuffled_and_covers_the_split(digits_shards):
    loader = train_loader(digits_shards, batch_size=50, num_workers=0)
    keys = _keys(loader)
    assert len(keys) == len(set(keys)) == TRAIN // 50 * 50  # a pass: every sample at most once, all but 1437 % 50
    first = keys[:300]
    assert sorted(first) != first  # not in shard order
    loader.set_epoch(1)
    assert set(_keys(loader)) != set(keys)  # another pass leaves out another few


def test_a_script_that_stops_iterating_still_exits(digits_shards):
    """Loader workers ignore SIGTERM (the trainer stops them itself after checkpointing); a script that leaves
    a loader open must still exit, not wait for them at interpreter exit."""
    code = ("import sys; from dgen.data.stream import train_loader\n"
            "it = iter(train_loader(sys.argv[1], batch_size=16, num_workers=2)); next(it); next(it)")
    done = subprocess.run([sys.executable, "-c", code, str(digits_shards)], timeout=60, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_global_batches_are_the_same_for_any_layout(digits_shards, workers):
    """Global batch k holds the same samples for 1, 2 or 4 ranks (at 64 / world each) and any worker count,
    resumed anywhere in any epoch; rank r's part is the r-th slice of it."""
    def global_batches(world, start):
        per_rank = []
        for rank in range(world):
            loader = train_loader(digits_shards, batch_size=64 // world, seed=3, num_workers=workers, rank=rank,
                                  world_size=world)
            loader.set_epoch(2, start_batch=start)
            per_rank.append([b["key"] for b in loader])
        return [sum(parts, []) for parts in zip(*per_rank)]

    reference = global_batches(1, 0)
    assert len(reference) == TRAIN // 64
    for world in (2, 4):
        assert global_batches(world, 0) == reference
    assert global_batches(2, 7) == reference[7:]


def test_train_ranks_get_equal_batches_and_different_samples(digits_shards):
    per_rank = [list(train_loader(digits_shards, batch_size=32, rank=r, world_size=3, num_workers=0)) for r in range(3)]
    assert len({len(batches) for batches in per_rank}) == 1 and len(per_rank[0]) == TRAIN // (32 * 3)
    keys = [k for batches in per_rank for b in batches for k in b["key"]]
    assert len(keys) == len(set(keys))  # the ranks' parts never overlap


@pytest.mark.parametrize("world, workers, batch", [(1, 0, 64), (2, 2, 64), (3, 1, 7), (4, 2, 10)])
def test_eval_covers_every_sample_once(digits_shards, world, workers, batch):
    """2 test shards: (1, 0) reads shards whole, (4, 2) has 8 slots for 2 shards and splits by sample."""
    keys, lengths = [], []
    for rank in range(world):
        loader = eval_loader(digits_shards, "test", batch_size=batch, rank=rank, world_size=world, num_workers=workers)
        batches = list(loader)
        assert len(batches) == len(loader)  # the length a loop can plan for is the real one
        lengths.append(len(batches))
        keys += [k for b in batches for k in b["key"]]
    assert len(keys) == TEST and len(set(keys)) == TEST


def test_pipe_location_streams_like_a_folder(digits_shards):
    remote = f"pipe:cat {digits_shards}/{{name}}"
    assert _keys(eval_loader(remote, "test", batch_size=64)) == _keys(eval_loader(digits_shards, "test", batch_size=64))
    assert len(list(train_loader(remote, batch_size=64, num_workers=1))) == TRAIN // 64


def test_bad_locations(tmp_path):
    with pytest.raises(DataError, match="does not exist .*dgen shard"):
        train_loader(tmp_path / "nope", batch_size=8)
    with pytest.raises(DataError, match="cannot read the manifest"):
        eval_loader(f"pipe:cat {tmp_path}/nope/{{name}}", batch_size=8)
    with pytest.raises(DataError, match="placeholder"):
        eval_loader("pipe:cat something", batch_size=8)


def test_unknown_split_and_bad_arguments(digits_shards):
    with pytest.raises(DataError, match="no split 'valid'.*train, test"):
        eval_loader(digits_shards, "valid", batch_size=8)
    with pytest.raises(DataError, match="batch size"):
        train_loader(digits_shards, batch_size=0)
    with pytest.raises(DataError, match="channels"):
        train_loader(digits_shards, batch_size=8, channels=2)


# -- damaged data ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _log_to_stderr():
    """dgen.data.stream's records also to stderr, as the trainer's handler writes them (loader workers inherit it)."""
    logger, handler = logging.getLogger("dgen.data.stream"), logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _corrupt_one_image(folder, shard, index) -> str:
    """Replace sample `index`'s PNG with garbage, keeping the tar and manifest consistent."""
    path = folder / shard
    samples = list(wds.tariterators.tarfile_samples([{"url": str(path)}]))
    buf = io.BytesIO()
    with wds.TarWriter(buf, encoder=False, mtime=0) as tar:
        for k, s in enumerate(samples):
            tar.write({"__key__": s["__key__"], "png": b"garbage" if k == index else s["png"], "cls": s["cls"]})
    path.write_bytes(buf.getvalue())
    m = json.loads((folder / "manifest.json").read_text())
    for split in m["splits"].values():
        for sh in split["shards"]:
            if sh["name"] == shard:
                sh["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(m))
    return samples[index]["__key__"]


@pytest.mark.parametrize("workers", [0, 2])
def test_undecodable_sample(digits_copy, caplog, capfd, workers):
    truth = {k: int(y) for b in eval_loader(digits_copy, "train", batch_size=256) for k, y in zip(b["key"], b["label"])}
    key = _corrupt_one_image(digits_copy, "test-000001.tar", 5)
    with pytest.raises(DataError, match=f"sample {key} in .*test-000001.tar cannot be decoded"):
        list(eval_loader(digits_copy, "test", batch_size=64))
    # training skips it, says so, and still delivers full batches of the planned number
    key = _corrupt_one_image(digits_copy, "train-000004.tar", 0)
    with caplog.at_level(logging.WARNING), _log_to_stderr():
        batches = list(train_loader(digits_copy, batch_size=64, epoch_batches=60, num_workers=workers))
    assert len(batches) == 60 and all(len(b["key"]) == len(b["label"]) == len(b["image"]) == 64 for b in batches)
    assert key not in {k for b in batches for k in b["key"]}
    assert all(truth[k] == int(y) for b in batches for k, y in zip(b["key"], b["label"]))  # still each its own
    # a worker process logs through the handlers it inherited: caplog's copy is lost, stderr's is seen
    assert f"skipping undecodable sample {key}" in caplog.text + capfd.readouterr().err
    skipped = sum(b["skipped"] for b in batches)  # counted, for metrics.jsonl and the report
    assert skipped[0] >= 1 and skipped[1] == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_truncated_shard(digits_copy, caplog, capfd, workers):
    path = digits_copy / "test-000000.tar"
    path.write_bytes(path.read_bytes()[:200_000])
    with pytest.raises(DataError, match="test-000000.tar"):
        list(eval_loader(digits_copy, "test", batch_size=64))
    path = digits_copy / "train-000001.tar"
    path.write_bytes(path.read_bytes()[:200_000])
    with caplog.at_level(logging.WARNING), _log_to_stderr():
        batches = list(train_loader(digits_copy, batch_size=64, epoch_batches=40, num_workers=workers))
    assert len(batches) == 40 and all(len(b["key"]) == len(b["image"]) == 64 for b in batches)
    assert sum(b["skipped"] for b in batches)[1] >= 1
    logged = caplog.text + capfd.readouterr().err
    assert "unreadable shard" in logged and "train-000001.tar" in logged


def _change_a_label(path) -> str:
    """Rewrite one .cls payload byte in place (3 -> 9, or whichever digit comes first): a valid tar whose
    bytes are no longer the manifest's."""
    import tarfile

    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".cls"))
    data = bytearray(path.read_bytes())
    old = data[member.offset_data]
    data[member.offset_data] = ord("9") if old != ord("9") else ord("3")
    path.write_bytes(bytes(data))
    return member.name.split(".")[0]


def test_altered_shard_is_caught_by_its_hash(digits_copy, caplog):
    _change_a_label(digits_copy / "test-000000.tar")
    with pytest.raises(DataError, match="test-000000.tar.*sha256"):
        list(eval_loader(digits_copy, "test", batch_size=64))
    assert len(list(eval_loader(digits_copy, "test", batch_size=64, verify=False))) == 6  # opted out: read as is
    key = _change_a_label(digits_copy / "train-000002.tar")
    with caplog.at_level(logging.WARNING):
        batches = list(train_loader(digits_copy, batch_size=64, epoch_batches=40, num_workers=0))
    assert len(batches) == 40 and key not in {k for b in batches for k in b["key"]}  # the shard is skipped...
    skipped = sum(b["skipped"] for b in batches)
    assert skipped[0] == 0 and skipped[1] >= 1  # ...counted (whole shards, no single samples)...
    assert "train-000002.tar" in caplog.text and "sha256" in caplog.text  # ...and named


def test_shard_with_fewer_samples_than_the_manifest(digits_copy):
    m = json.loads((digits_copy / "manifest.json").read_text())
    m["splits"]["test"]["shards"][0]["samples"] += 2
    m["splits"]["test"]["samples"] += 2
    (digits_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="holds 300 samples, the manifest says 302"):
        list(eval_loader(digits_copy, "test", batch_size=64))


def test_all_shards_broken_fails_instead_of_spinning(digits_copy):
    for p in digits_copy.glob("train-*.tar"):
        p.write_bytes(b"\0" * 10)
    with pytest.raises(DataError, match="no readable samples"):
        next(iter(train_loader(digits_copy, batch_size=8, num_workers=0)))


def test_more_slots_than_shards(tmp_path):
    """One training shard, 3 ranks x 2 workers: one lane, and still every rank gets its full epoch."""
    from dgen.data.shard import write_shards

    write_shards(get_source("digits")(), tmp_path, size=32, per_shard=2000, progress=False)
    lengths = []
    for rank in range(3):
        loader = train_loader(tmp_path, batch_size=32, rank=rank, world_size=3, num_workers=2)
        batches = list(loader)
        lengths.append(len(batches))
        assert all(len(b["key"]) == 32 for b in batches)
    assert lengths == [TRAIN // 96] * 3
    keys = [k for r in range(3) for b in eval_loader(tmp_path, "test", batch_size=50, rank=r, world_size=3,
                                                       num_workers=2) for k in b["key"]]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == TEST


def test_npy_shards_stream_the_same_pixels_as_png(digits_shards, tmp_path):
    """`--format npy` is lossless: the same images, labels and keys as the PNG shards, in uint8 or float."""
    from dgen.data.shard import write_shards
    from dgen.data.stream import to_float
    from dgen.data.verify import verify

    write_shards(get_source("digits")(), tmp_path, size=32, channels=1, per_shard=300, progress=False,
                 image_format="npy")
    assert verify(tmp_path) == []
    png = list(eval_loader(digits_shards, "test", batch_size=100))
    npy = list(eval_loader(tmp_path, "test", batch_size=100))
    for a, b in zip(png, npy, strict=True):
        assert a["key"] == b["key"] and torch.equal(a["label"], b["label"]) and torch.equal(a["image"], b["image"])
    raw = next(iter(train_loader(tmp_path, batch_size=16, seed=3, num_workers=0, uint8=True)))
    ref = next(iter(train_loader(digits_shards, batch_size=16, seed=3, num_workers=0)))
    assert raw["image"].dtype == torch.uint8 and raw["key"] == ref["key"]
    assert torch.equal(to_float(raw["image"]), ref["image"])
    rgb = next(iter(eval_loader(tmp_path, "test", batch_size=4, channels=3, image_size=16)))
    assert rgb["image"].shape == (4, 3, 16, 16)


def test_fast_tar_reader_matches_webdataset(digits_shards, tmp_path):
    import tarfile

    from dgen.data.tarread import TarError, shard_samples

    def wds_samples(path):
        return [{k: v for k, v in s.items() if not k.startswith("__local")}
                for s in wds.tariterators.tarfile_samples([{"url": str(path)}])]

    for path in sorted(digits_shards.glob("*.tar")):
        assert list(shard_samples(str(path))) == wds_samples(path)
    # anything but short regular-file headers (here a GNU long name) goes to webdataset's reader
    odd = tmp_path / "odd.tar"
    with tarfile.open(odd, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in ((f"{'d' * 120}/a.png", b"x"), ("b.png", b"yy"), ("b.cls", b"3")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert [s["__key__"] for s in shard_samples(str(odd))] == [f"{'d' * 120}/a", "b"]
    # a damaged header is an error, after the samples before it
    shard = sorted(digits_shards.glob("train-*.tar"))[0]
    data = bytearray(shard.read_bytes())
    with tarfile.open(shard) as tar:
        fourth = tar.getmembers()[3].offset  # the second sample's second member
    data[fourth + 10] ^= 0xFF
    (tmp_path / "bad.tar").write_bytes(bytes(data))
    got = []
    with pytest.raises(TarError, match="checksum"):
        for s in shard_samples(str(tmp_path / "bad.tar")):
            got.append(s)
    assert len(got) == 1
