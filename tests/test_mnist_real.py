"""The real MNIST, where a copy of the four official idx files is on the machine (the project's shared data, or
DGEN_MNIST_ROOT): it shards as distributed, in the dotted spelling some mirrors use too, into an MNIST-M on the
embedded photos, and a short training run on it writes its FID (classifier features) and sample grid. Skipped
where there is no copy. Accuracy and FID targets are measured by the commands in docs/results.md, not here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dgen.data.manifest import load_manifest
from dgen.data.shard import write_shards
from dgen.data.sources import get_source
from dgen.data.stream import eval_loader
from tests.test_train import ROOT, TRAIN, env

MNIST = Path(os.environ.get("DGEN_MNIST_ROOT", ROOT.parent / "shared" / "data" / "mnist"))
pytestmark = pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte.gz").is_file(),
                                reason=f"no MNIST copy at {MNIST} (set DGEN_MNIST_ROOT)")
# class counts of the official files (train, test), as their distribution states them
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist_shards(tmp_path_factory) -> Path:
    """All 70,000 digits, 10,000 per shard (~15 s on one core)."""
    out = tmp_path_factory.mktemp("real") / "mnist"
    write_shards(get_source("mnist")(root=MNIST), out, per_shard=10_000, progress=False)
    return out


def test_the_shared_copy_shards_whole(mnist_shards):
    m = load_manifest(mnist_shards)
    assert (m.dataset, m.image_size, m.channels) == ("mnist", [28, 28], 1)
    assert {s: i.samples for s, i in m.splits.items()} == {"train": 60_000, "test": 10_000}
    assert [len(i.shards) for i in m.splits.values()] == [6, 1]
    labels = [b["label"] for b in eval_loader(mnist_shards, "test", batch_size=1000)]
    import torch

    assert torch.bincount(torch.cat(labels), minlength=10).tolist() == TEST_COUNTS


def test_mirror_spelling_reads_the_same_digits(tmp_path):
    """`train-images.idx3-ubyte.gz` (a dot before idx), as some mirrors ship the files, gives the same source."""
    for f in MNIST.glob("*-ubyte.gz"):
        shutil.copy(f, tmp_path / f.name.replace("-idx", ".idx"))
    dotted, plain = get_source("mnist")(root=tmp_path), get_source("mnist")(root=MNIST)
    assert dotted.splits() == plain.splits() == {"train": 60_000, "test": 10_000}
    images, labels = dotted.arrays("train")
    assert labels.tolist().count(1) == TRAIN_COUNTS[1]
    assert (images[59_999] == plain.arrays("train")[0][59_999]).all()


def test_mnist_m_on_the_embedded_photos(tmp_path):
    source = get_source("mnist-m")(mnist_root=MNIST, backgrounds="embedded")
    assert source.options()["photos"].startswith("sklearn+skimage:")
    sample = source.read("test", 3)
    assert sample.image.mode == "RGB" and sample.image.size == (28, 28) and sample.label == 0


@pytest.mark.slow
def test_a_short_dcgan_run_on_real_mnist(mnist_shards, tmp_path):
    """The MNIST preset's network (seed 003's 28x28 DCGAN at width 32) for a few steps: FID, KID and a grid."""
    run = tmp_path / "run"
    cmd = [sys.executable, str(TRAIN), "--model", "dcgan", "--data", str(mnist_shards), "--max-steps", "6",
           "--batch-size", "32", "--num-workers", "0", "--tracker", "none", "--eval-every", "6", "--log-every", "3",
           "--fid-samples", "256", "--fid-classifier-steps", "40", "--out", str(run)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((run / "config.json").read_text())
    assert (config["method"]["arch"], config["method"]["width"], config["image_size"]) == ("mnist", 32, 28)
    scored = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
              if "test/fid_classifier" in line]
    assert scored and scored[-1]["step"] == 6 and scored[-1]["test/fid_classifier"] > 0
    assert list((run / "images").glob("*.png"))
    # the judge on MNIST is the FID feature classifier (the 8x8 judge is fitted to the embedded digits' framing)
    verdict = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "judge/" in line][-1]
    assert 0.1 <= verdict["judge/confidence"] <= 1 and 1 <= verdict["judge/classes_covered"] <= 10
    assert "FID feature classifier" in (run / "report.md").read_text()
    # `dgen eval --run` gives the same FID and verdict from the checkpoint, in another process
    again = subprocess.run([sys.executable, "-m", "dgen", "eval", "--run", str(run), "--samples", "256"],
                           capture_output=True, text=True, timeout=300, env=env(), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    scores = json.loads(again.stdout)
    assert scores["test/fid_classifier"] == pytest.approx(scored[-1]["test/fid_classifier"], rel=1e-4)
    assert scores["judge/confidence"] == pytest.approx(verdict["judge/confidence"], rel=1e-4)
    # the results page's row and figure come from the run folder alone
    from dgen.eval.results import markdown, sample_figure, summary

    row = summary(run)
    assert (row["model"], row["steps"], row["batch"], row["fid"]) == ("dcgan", 6, 32, scored[-1]["test/fid_classifier"])
    assert markdown([row]).splitlines()[2].startswith(f"| dcgan | 6 x 32 | 28 | {row['fid']:.1f} |")
    with Image.open(sample_figure([row, row], tmp_path / "figure.png")) as im:
        assert im.width > 500
    # `make figures`: a run folder named by its model gives the samples figure and the FID-per-step plot
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "dcgan").symlink_to(run)
    done = subprocess.run([sys.executable, "-m", "dgen.eval.figures", "--runs", str(runs), "--out", str(tmp_path / "fig")],
                          capture_output=True, text=True, timeout=120, env=env())
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["mnist-gan-fid.png", "mnist-samples.png"]
