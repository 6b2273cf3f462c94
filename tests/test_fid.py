"""FID / KID in classifier feature space: the formulas against hand-computed values, the classifier on
real digits shards (accuracy, FID ordering train-vs-test < blur < noise, caching), merging statistics
across 2 real processes, and the optional Inception extractor's structure and error path."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

import dgen.eval.fid as fidmod
from dgen.data.stream import eval_loader
from dgen.eval.fid import (FID, FeatureStats, InceptionFeatures, frechet_distance, inception_extractor,
                           kernel_inception_distance, load_or_train_feature_classifier, train_feature_classifier)
from dgen.models.classifier import DigitClassifier
from tests.test_distributed import torchrun

STEPS, BATCH = 300, 64  # ~10 s on one CPU core; measured test accuracy 0.992


@contextlib.contextmanager
def one_thread():
    """Train with one torch thread: on a shared 2-core machine two spinning OpenMP threads under
    contention made this 8x slower (measured 93 s instead of 10 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- formulas -----------------------------------------------------------------------------------------
def test_frechet_distance_diagonal_gaussians_by_hand():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))  # 7.25 + 4 + 1 + 0
    assert expected == pytest.approx(12.25)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_identical_is_zero_and_symmetric():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(500, 8)), rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8)) + 0.3
    mu1, c1, mu2, c2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    assert abs(frechet_distance(mu1, c1, mu1, c1)) < 1e-8
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(frechet_distance(mu2, c2, mu1, c1), rel=1e-8)
    assert frechet_distance(mu1, c1, mu2, c2) > 1.0


def test_frechet_distance_singular_covariances_stay_finite():
    """Dead ReLU units: a feature that is always 0 makes both covariances singular."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 5)), rng.normal(size=(200, 5)) + 1
    a[:, 0] = b[:, 0] = 0
    d = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert np.isfinite(d) and d == pytest.approx(4.0, abs=1.0)  # ||mu1 - mu2||^2 = 4 in expectation


def test_kid_same_distribution_near_zero_shifted_clearly_positive():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(1000, 32)), rng.normal(size=(1000, 32))
    same, same_std = kernel_inception_distance(x, y, subsets=10, subset_size=500, seed=0)
    shifted, _ = kernel_inception_distance(x, y + 0.5, subsets=10, subset_size=500, seed=0)
    assert abs(same) < 3 * same_std + 1e-3 and abs(same) < 0.01
    assert shifted > 0.1 and shifted > 50 * abs(same)
    assert kernel_inception_distance(x, y, seed=0) == kernel_inception_distance(x, y, seed=0)  # deterministic
    assert kernel_inception_distance(x[:50], y, subset_size=500)[1] >= 0  # subset size capped at 50


def test_feature_stats_match_numpy_and_keep_a_bounded_sample():
    x = torch.randn(1234, 6, generator=torch.Generator().manual_seed(0)) * 3 + 1
    stats = FeatureStats(kid_max=100)
    for chunk in x.split(77):
        stats.update(chunk)
    mu, cov = stats.mean_cov()
    np.testing.assert_allclose(mu, x.double().mean(0).numpy(), rtol=1e-10)
    np.testing.assert_allclose(cov, np.cov(x.double().numpy(), rowvar=False), rtol=1e-9, atol=1e-12)
    assert stats.count == 1234 and stats.rows.shape == (100, 6)
    full = {tuple(r) for r in x.tolist()}
    assert all(tuple(r) in full for r in stats.rows.tolist())
    assert stats.merge_across_ranks() is stats  # no process group: nothing to merge


# -- the classifier on real shards -------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier(digits_shards, tmp_path_factory):
    cache = tmp_path_factory.mktemp("fid-cache")
    t0 = time.perf_counter()
    with one_thread():
        model, acc = load_or_train_feature_classifier(digits_shards, cache, steps=STEPS, batch_size=BATCH, seed=0)
    return model, acc, cache, time.perf_counter() - t0


def test_classifier_shapes_for_sizes_and_channels():
    for channels in (1, 3):
        for size in (28, 32, 64):
            net = DigitClassifier(channels, size).eval()
            x = torch.zeros(2, channels, size, size)
            assert net.features(x).shape == (2, 128) and net(x).shape == (2, 10)


def test_training_is_deterministic_and_leaves_the_global_rng_alone(digits_shards):
    before = torch.random.get_rng_state()
    with one_thread():
        a, _ = train_feature_classifier(digits_shards, steps=3, batch_size=16, seed=0)
        b, _ = train_feature_classifier(digits_shards, steps=3, batch_size=16, seed=0)
        c, _ = train_feature_classifier(digits_shards, steps=3, batch_size=16, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_classifier_accuracy_and_fid_ordering(classifier, digits_shards):
    model, acc, _, _ = classifier
    assert acc > 0.95, acc  # measured 0.992 (300 steps of 64)
    fid = FID(model)
    train = fid.real_stats(eval_loader(digits_shards, "train", batch_size=256))
    test_images = torch.cat([b["image"] for b in eval_loader(digits_shards, "test", batch_size=256)])
    test = fid.real_stats([test_images])
    assert (train.count, test.count) == (1437, 360)
    noise = torch.rand(test_images.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    blurred = TF.gaussian_blur(test_images, kernel_size=[9, 9], sigma=[2.0, 2.0])
    same = fid.score(train, test)
    vs_blur = fid.score(test, fid.fake_stats([blurred]))
    vs_noise = fid.score(test, fid.fake_stats(noise.split(100)))
    # measured: train-test 3.0, blur 112, noise 2675 (KID -12, 387, 131369)
    assert 0 <= same["fid"] < 10
    assert vs_blur["fid"] > 10 * same["fid"]
    assert vs_noise["fid"] > 100 * same["fid"] and vs_noise["fid"] > 5 * vs_blur["fid"]
    assert vs_noise["kid"] > vs_blur["kid"] > 10 * abs(same["kid"])
    assert fid.score(test, test)["fid"] == pytest.approx(0, abs=1e-6)


def test_fid_brings_other_sizes_and_channels_to_the_classifier():
    fid = FID(DigitClassifier(1, 32))
    assert fid.prepare(torch.zeros(2, 3, 28, 28)).shape == (2, 1, 32, 32)
    assert fid.prepare(torch.zeros(2, 1, 64, 64)).shape == (2, 1, 32, 32)
    fid3 = FID(DigitClassifier(3, 32))
    assert fid3.prepare(torch.zeros(2, 1, 32, 32)).shape == (2, 3, 32, 32)
    assert fid3.stats([torch.zeros(4, 1, 28, 28)]).count == 4


def test_second_load_uses_the_cache(classifier, digits_shards, monkeypatch):
    model, acc, cache, first_seconds = classifier
    (pt,) = cache.glob("classifier-*.pt")
    meta = json.loads(pt.with_suffix(".json").read_text())
    assert meta["dataset"] == "digits" and (meta["image_size"], meta["channels"]) == (32, 1)
    assert (meta["steps"], meta["seed"], meta["accuracy"]) == (STEPS, 0, acc) and len(meta["train_sha256"]) == 64
    assert model.cache_hit is False
    mtime = pt.stat().st_mtime_ns

    class Trained(Exception):
        pass

    def no_training(*a, **k):
        raise Trained

    monkeypatch.setattr(fidmod, "train_feature_classifier", no_training)
    t0 = time.perf_counter()
    again, acc2 = load_or_train_feature_classifier(digits_shards, cache, steps=STEPS, batch_size=BATCH, seed=0)
    assert again.cache_hit and acc2 == acc and time.perf_counter() - t0 < first_seconds / 5
    assert pt.stat().st_mtime_ns == mtime and not list(cache.glob("*.tmp"))
    x = torch.linspace(-1, 1, 2 * 32 * 32).reshape(2, 1, 32, 32)
    assert torch.equal(again.features(x), model.eval().features(x))
    with pytest.raises(Trained):  # other options are another classifier
        load_or_train_feature_classifier(digits_shards, cache, steps=STEPS, batch_size=BATCH, seed=1)


def test_default_cache_dir_is_next_to_the_shards(digits_shards):
    assert fidmod._default_cache_dir(digits_shards) == digits_shards / ".dgen-cache"
    assert fidmod._default_cache_dir(digits_shards / "manifest.json") == digits_shards / ".dgen-cache"


# -- across real processes ----------------------------------------------------------------------------
@pytest.mark.slow
def test_feature_stats_merge_across_two_ranks(tmp_path):
    from tests.scripts.fid_ranks import CUT, matrix

    out = tmp_path / "fid_ranks.json"
    torchrun(2, Path(__file__).parent / "scripts" / "fid_ranks.py", out)
    r0, r1 = json.loads(out.read_text())
    x = matrix().double().numpy()
    full = {tuple(r) for r in matrix().tolist()}
    assert CUT < len(x) - CUT  # an uneven split
    for case, kept in [("subsampled", 100), ("all_rows", len(x)), ("one_empty", len(x))]:
        a, b = r0[case], r1[case]
        assert a == b, case  # every rank holds the same merged statistics
        assert a["count"] == len(x)
        np.testing.assert_allclose(a["mu"], x.mean(0), rtol=1e-10)
        np.testing.assert_allclose(a["cov"], np.cov(x, rowvar=False), rtol=1e-8, atol=1e-10)
        rows = [tuple(r) for r in a["rows"]]
        assert len(rows) == kept and len(set(rows)) == kept and set(rows) <= full, case


# -- optional Inception -------------------------------------------------------------------------------
def test_inception_extractor_missing_weights_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Inception weights not found"):
        inception_extractor(tmp_path / "inception_v3_google.pth")


def test_inception_structure_gives_2048_features():
    net = InceptionFeatures()  # random weights, same structure as inception_extractor builds
    stats = FID(net).stats([torch.zeros(2, 1, 32, 32).uniform_(-1, 1)])
    assert stats.dim == 2048 and stats.count == 2
