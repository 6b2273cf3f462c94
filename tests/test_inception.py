"""Inception FID/KID by default: torchvision's weights found in torch's hub cache (placed there as torchvision
stores them; random weights: what is tested is the finding, the loading, the features and the metric, not the
numbers), the reference statistics cached, one and two processes, and a notice, never a traceback, without them;
an unlabelled folder also scored in the features of an encoder trained on it without labels."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from dgen.eval import inception
from dgen.eval.fid import FID
from tests.http_server import ShardServer
from tests.test_train import _launch2, rows, train

WEIGHTS = "hub/checkpoints/inception_v3_google-0cc3c7bd.pth"


def test_weights_are_found_where_torchvision_keeps_them_or_a_notice_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("DGEN_INCEPTION_DOWNLOAD", "0")
    path, why = inception.find_weights()
    assert path is None and str(tmp_path / "torch" / WEIGHTS) in why and "inception_v3(weights='DEFAULT')" in why

    # a download that stalls ends at DGEN_INCEPTION_TIMEOUT, leaves no partial file and says why
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "weights.pth").write_bytes(b"x" * 1000)
    monkeypatch.setenv("DGEN_INCEPTION_TIMEOUT", "1")
    with ShardServer(tmp_path / "site", stall_s=20) as server:
        server.faults["weights.pth"] = "stall"
        monkeypatch.setattr(inception, "URL", server.url("weights.pth"))
        t0 = time.monotonic()
        path, why = inception.find_weights(download=True)
        assert path is None and "could not be downloaded" in why and "timed out" in why
        assert time.monotonic() - t0 < 10
        server.faults.clear()  # served whole, but not the file whose sha256 its name promises
        path, why = inception.find_weights(download=True)
        assert path is None and "sha256" in why
    assert list((tmp_path / "torch" / "hub" / "checkpoints").iterdir()) == []

    (tmp_path / "torch" / WEIGHTS).write_bytes(b"any")
    assert inception.find_weights() == (tmp_path / "torch" / WEIGHTS, "")


class _Tiny(nn.Module):
    feature_dim = 8

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 8 * 8, 8)

    def features(self, x):
        return self.proj(x.flatten(1))


def test_cached_real_statistics_score_as_the_computed_ones():
    torch.manual_seed(0)
    net, real, fake = _Tiny(), torch.rand(300, 3, 8, 8) * 2 - 1, torch.rand(200, 3, 8, 8)
    computed = FID(net, kid_subset_size=50)
    computed.real_stats(real.split(64))
    computed.fake_stats(fake.split(64))
    cached = FID(net, kid_subset_size=50)
    cached.load_real_state(computed.real_state())
    cached.fake_stats(fake.split(64))
    assert cached.score() == computed.score()


# -- whole runs on an unlabelled folder --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """scikit-image's 200 LFW faces as a folder of PNGs without classes, sharded at 32 px (180 train, 20 test),
    and a TORCH_HOME whose hub cache holds Inception-v3 weights in torchvision's file (random weights, with
    batch-norm statistics set so the features do not vanish)."""
    import skimage.data
    from PIL import Image

    root = tmp_path_factory.mktemp("faces")
    (root / "photos").mkdir()
    for i, face in enumerate(skimage.data.lfw_subset()):
        Image.fromarray((face * 255).astype("uint8")).save(root / "photos" / f"{i:03d}.png")
    subprocess.run([sys.executable, "-m", "dgen", "shard", "folder", "--root", str(root / "photos"), "--size", "32",
                    "--out", str(root / "shards" / "faces")], check=True, capture_output=True)
    torch.manual_seed(0)
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=True, init_weights=True)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # the running statistics of the batch below
    with torch.no_grad():
        net.train()(torch.rand(4, 3, 299, 299) * 2 - 1)
    (root / "torch" / WEIGHTS).parent.mkdir(parents=True)
    torch.save(net.state_dict(), root / "torch" / WEIGHTS)
    return root


RUN = ["--model", "dcgan", "--data", "faces", "--max-steps", "4", "--batch-size", "16", "--num-workers", "0",
       "--tracker", "none", "--fid-samples", "32", "--fid-encoder-steps", "10", "--eval-every", "1000",
       "--sample-every", "1000"]


@pytest.mark.slow
def test_an_unlabelled_folder_gets_inception_scores_on_one_and_two_processes(faces, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(faces / "torch"))
    one = train(faces, *RUN, "--out", faces / "one")
    assert "computing the test split's real statistics once" in one.stderr
    (last,) = [r for r in rows(faces / "one") if "test/fid_inception" in r]
    assert math.isfinite(last["test/fid_inception"]) and last["test/fid_inception"] > 0
    assert (last["test/fid_images"], last["test/fid_reference_images"]) == (32, 20)
    # no labels: no classifier features, but those of an encoder trained on the folder without labels
    assert "test/fid_classifier" not in last and math.isfinite(last["test/fid_contrastive"])
    report = (faces / "one" / "report.md").read_text()
    assert "Best FID (Inception features)" in report and "32 generated images against the 20 of the" in report
    assert "Best FID (contrastive features)" in report
    # 20 test images against 128 and 2,048 feature dimensions: both FIDs are flagged, KID named instead
    assert "FID (contrastive features) is unreliable" in report and "test/kid_inception (unbiased)" in report
    assert len(list((faces / "shards" / "faces" / ".dgen-cache").glob("inception-real-*.pt"))) == 1
    assert len(list((faces / "shards" / "faces" / ".dgen-cache").glob("encoder-*.pt"))) == 1

    # the same run scored again by `dgen eval` (one process, the same noise and model, the real statistics from
    # the cache): the same number
    done = subprocess.run([sys.executable, "-m", "dgen", "eval", "--run", str(faces / "one"), "--samples", "32"],
                          capture_output=True, text=True, timeout=300, check=True)
    assert "real statistics of the test split from" in done.stderr
    assert json.loads(done.stdout)["test/fid_inception"] == pytest.approx(last["test/fid_inception"], rel=1e-6)

    # two processes compute the statistics again, each its share, merged before they are cached: the same ones
    (cached,) = (faces / "shards" / "faces" / ".dgen-cache").glob("inception-real-*.pt")
    alone = torch.load(cached, weights_only=True)
    cached.unlink()
    two = _launch2(faces, *RUN, "--out", faces / "two")
    assert "computing the test split's real statistics once" in two.stderr
    merged = torch.load(cached, weights_only=True)
    assert int(merged["fid"]["real_features_num_samples"]) == 20
    for k in ("real_features_sum", "real_features_cov_sum"):
        # (float32 features of other batch compositions: equal to about 1e-4)
        torch.testing.assert_close(merged["fid"][k], alone["fid"][k], rtol=2e-3, atol=1e-2)
    order = [rows_.sum(1).sort().values for rows_ in (merged["kid_rows"], alone["kid_rows"])]
    torch.testing.assert_close(*order, rtol=2e-3, atol=1e-2)  # the same 20 rows (the ranks' in their order)
    (last2,) = [r for r in rows(faces / "two") if "test/fid_inception" in r]
    assert math.isfinite(last2["test/fid_inception"]) and last2["test/fid_images"] == 32


@pytest.mark.slow
def test_without_the_weights_an_unlabelled_folder_has_contrastive_scores_and_says_why_not_inception(
        faces, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    done = train(faces, *RUN, "--out", tmp_path / "run")
    assert "Traceback" not in done.stderr
    assert done.stderr.count("No Inception FID") == 1 and "inception_v3(weights='DEFAULT')" in done.stderr
    (last,) = [r for r in rows(tmp_path / "run") if any(k.startswith("test/fid") for k in r)]
    assert "test/fid_inception" not in last and math.isfinite(last["test/fid_contrastive"])
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Best FID (contrastive features)" in report and "No Inception FID" in report


@pytest.mark.slow
def test_dgen_eval_scores_an_unlabelled_folder_in_contrastive_features(faces, capsys, monkeypatch):
    """The floor and any images against an unlabelled folder: in the features of the encoder runs on it use."""
    from dgen.cli import main

    monkeypatch.setenv("TORCH_HOME", str(faces / "empty"))
    shards = faces / "shards" / "faces"
    assert main(["eval", "--data", str(shards), "--fid-encoder-steps", "10"]) == 0
    floor = json.loads(capsys.readouterr().out)
    assert floor["images"] == 180 and math.isfinite(floor["test/fid_contrastive"]) and floor["test/fid_contrastive"] > 0
    assert main(["eval", "--images", str(faces / "photos"), "--data", str(shards), "--fid-encoder-steps", "10"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["images"] == 200 and math.isfinite(scored["test/fid_contrastive"])
    # the 20 test photos are among the 200: closer to the test split than its own train split is
    assert scored["test/fid_contrastive"] < floor["test/fid_contrastive"]
