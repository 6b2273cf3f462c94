"""FID / KID in classifier feature space: what dgen wires into torchmetrics (the scores against hand-computed
values on known features, KID's bounded uniform sample, the global RNG left alone), the classifier on real
digits shards (accuracy, FID ordering train-vs-test < blur < noise, caching), the merge across 2 real
processes, and the optional Inception extractor's structure and error path."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import linalg
from torchvision.transforms.v2 import functional as TF

import dgen.eval.fid as fidmod
from dgen.data.stream import eval_loader
from dgen.eval.fid import (FID, InceptionFeatures, SampledKID, inception_extractor, load_or_train_feature_classifier,
                           train_feature_classifier)
from dgen.models.classifier import DigitClassifier
from tests.scripts.fid_ranks import Pixels
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


# -- what dgen wires into torchmetrics ----------------------------------------------------------------
def _known(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """n "images" [1, 4, 4] whose features (Pixels: the 16 pixels) are correlated and of unequal scales."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 16, generator=g) @ torch.randn(16, 16, generator=g) / 4 + shift).reshape(n, 1, 4, 4)


def test_scores_are_the_formulas_on_known_features():
    """FID of the two Gaussian fits (unbiased covariances), and KID as the unbiased MMD^2 of the cubic kernel
    (x.y / d + 1)^3: with two sets of 160 rows, every subset (min(500, 160, 160) rows) is both whole sets, so
    KID is exact and its std 0. By hand in float64 (float32 features would miss rel=1e-9)."""
    real, fake = _known(160, 0), _known(160, 1, shift=0.5)
    fid = FID(Pixels())
    fid.real_stats(real.split(64))
    fid.fake_stats(fake.split(100))
    got = fid.score()
    x, y = real.flatten(1).double().numpy(), fake.flatten(1).double().numpy()
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    expected_fid = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    kxx, kyy, kxy = ((a @ b.T / 16 + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    n = len(x)
    expected_kid = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (n * (n - 1)) - 2 * kxy.mean()
    assert got["fid"] == pytest.approx(expected_fid, rel=1e-9)
    assert got["kid"] == pytest.approx(expected_kid, rel=1e-9) and got["kid_std"] == pytest.approx(0, abs=1e-9)
    assert expected_fid > 1 and expected_kid > 1  # far from 0, where rel=1e-9 would be loose


def test_kid_keeps_a_bounded_uniform_sample():
    """At most kid_max rows per set, distinct, in arrival order; over 200 seeds every part of the stream is
    sampled equally often (10% each for a tenth of it: a sample of the first rows, or of the latest, fails)."""
    rows = torch.arange(1000, dtype=torch.float64)[:, None]  # row i is [i]
    per_tenth = np.zeros(10)
    for seed in range(200):
        kid = SampledKID(1, kid_max=100, subsets=10, subset_size=500, seed=seed)
        for chunk in rows.split(77):
            kid.update(chunk, real=True)
        got = kid.sample(True)[:, 0]
        assert len(got) == 100 and torch.all(got[1:] > got[:-1])  # distinct, in arrival order
        per_tenth += np.bincount((got // 100).long().numpy(), minlength=10)
    np.testing.assert_allclose(per_tenth / per_tenth.sum(), 0.1, atol=0.01)  # measured within 0.004


def test_a_reset_replaces_the_fakes_sampled_alike_and_keeps_the_reals():
    """What FID.fake_stats relies on: each evaluation's fakes are sampled at the same positions (successive
    scores differ only by the model), and the real set survives."""
    kid = SampledKID(1, kid_max=10, subsets=10, subset_size=500, seed=0)
    rows = torch.arange(100, dtype=torch.float64)[:, None]
    kid.update(rows, real=True)
    kid.update(rows, real=False)
    real, fake = kid.sample(True).clone(), kid.sample(False).clone()
    kid.reset()
    kid.update(rows + 1000, real=False)
    assert torch.equal(kid.sample(True), real)
    assert torch.equal(kid.sample(False), fake + 1000)


def test_a_score_leaves_the_global_rng_alone_and_repeats():
    """KID draws its subsets with torch.randperm (torch's global generator): FID.score runs it inside
    outside_the_step, so training's random stream is untouched and the score is the same every time."""
    real, fake = _known(300, 0), _known(200, 1, shift=0.2)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    scores = []
    for _ in range(2):
        fid = FID(Pixels(), kid_subset_size=50)  # subsets of 50 of 300 and of 200 rows: random
        fid.real_stats([real])
        fid.fake_stats([fake])
        scores.append(fid.score())
    assert torch.equal(torch.random.get_rng_state(), before)
    assert scores[0] == scores[1] and scores[0]["kid_std"] > 0
    with pytest.raises(RuntimeError, match="before real_stats"):
        FID(Pixels()).fake_stats([fake])


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
    fid.real_stats(eval_loader(digits_shards, "train", batch_size=256))
    test_images = torch.cat([b["image"] for b in eval_loader(digits_shards, "test", batch_size=256)])
    fid.fake_stats([test_images])
    assert (int(fid.fid.real_features_num_samples), int(fid.fid.fake_features_num_samples)) == (1437, 360)
    same = fid.score()
    fid.real_stats([test_images])
    fid.fake_stats([TF.gaussian_blur(test_images, kernel_size=[9, 9], sigma=[2.0, 2.0])])
    vs_blur = fid.score()
    fid.fake_stats((torch.rand(test_images.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1).split(100))
    vs_noise = fid.score()
    # measured: train-test 3.0, blur 112, noise 2675 (KID -7, 387, 131369)
    assert 0 <= same["fid"] < 10
    assert vs_blur["fid"] > 10 * same["fid"]
    assert vs_noise["fid"] > 100 * same["fid"] and vs_noise["fid"] > 5 * vs_blur["fid"]
    assert vs_noise["kid"] > vs_blur["kid"] > 10 * abs(same["kid"])
    fid.fake_stats([test_images])
    assert fid.score()["fid"] == pytest.approx(0, abs=1e-6)


def test_fid_brings_other_sizes_and_channels_to_the_classifier():
    fid = FID(DigitClassifier(1, 32))
    assert fid.prepare(torch.zeros(2, 3, 28, 28)).shape == (2, 1, 32, 32)
    assert fid.prepare(torch.zeros(2, 1, 64, 64)).shape == (2, 1, 32, 32)
    fid3 = FID(DigitClassifier(3, 32))
    assert fid3.prepare(torch.zeros(2, 1, 32, 32)).shape == (2, 3, 32, 32)
    fid3.real_stats([torch.zeros(4, 1, 28, 28)])
    assert int(fid3.fid.real_features_num_samples) == 4 and fid3.kid.sample(True).shape == (4, 128)


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
    assert fidmod.default_cache_dir(digits_shards) == digits_shards / ".dgen-cache"
    assert fidmod.default_cache_dir(digits_shards / "manifest.json") == digits_shards / ".dgen-cache"


# -- across real processes ----------------------------------------------------------------------------
@pytest.mark.slow
def test_scores_merge_across_two_ranks(tmp_path):
    """Each rank feeds its part; torchmetrics merges in score(): every rank gets the single-process score. With
    kid_max below the totals, KID's merged sample is kid_max distinct rows from both ranks' parts, in proportion
    (about 40 of 100 from rank 0's 120 of 301 rows: a sample capped per rank would take 50)."""
    from tests.scripts.fid_ranks import CUT_REAL, images, score

    out = tmp_path / "fid_ranks.json"
    torchrun(2, Path(__file__).parent / "scripts" / "fid_ranks.py", out)
    r0, r1 = json.loads(out.read_text())
    real, fake = images()
    for case, kid_max in [("all_rows", 1000), ("subsampled", 100), ("one_empty", 100)]:
        a, b, one = r0[case], r1[case], score(real, fake, kid_max)  # one: in this process alone
        assert a == b, case
        assert a["fid"] == pytest.approx(one["fid"], rel=1e-12), case
        if case != "subsampled":  # the same rows (all, or rank 0's with rank 0's keys): the same KID
            assert (a["kid"], a["kid_std"], a["real_sample"]) == (one["kid"], one["kid_std"], one["real_sample"])
    assert len(r0["all_rows"]["real_sample"]) == len(real) and len(r0["all_rows"]["fake_sample"]) == len(fake)
    sample = [tuple(r) for r in r0["subsampled"]["real_sample"]]
    rows = [tuple(r) for r in real.flatten(1).double().tolist()]
    assert len(sample) == len(set(sample)) == 100 and set(sample) <= set(rows)
    assert 28 <= len(set(sample) & set(rows[:CUT_REAL])) <= 46  # measured 37 (expected 40, sd 4)
    assert len(r0["subsampled"]["fake_sample"]) == 100


# -- optional Inception -------------------------------------------------------------------------------
def test_inception_extractor_missing_weights_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Inception weights not found"):
        inception_extractor(tmp_path / "inception_v3_google.pth")


def test_inception_structure_gives_2048_features():
    net = InceptionFeatures()  # random weights, same structure as inception_extractor builds
    fid = FID(net)
    fid.real_stats([torch.zeros(2, 1, 32, 32).uniform_(-1, 1)])
    assert int(fid.fid.real_features_num_samples) == 2 and fid.kid.sample(True).shape == (2, 2048)
