"""The contrastive feature encoder of unlabelled data (dgen.eval.contrastive): trained on the digits shards
without their labels, its features must still put real images below dropped classes, noise and blur, as the
labelled classifier's do; it is cached like the classifier, and a damaged train shard stops it with the shard's
name."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from dgen.data.stream import eval_loader
from dgen.errors import DataError
from dgen.eval.contrastive import load_or_train_feature_encoder, nt_xent, views
from dgen.eval.fid import FID, load_or_train_feature_classifier
from tests.test_fid import one_thread

STEPS = 100  # of 128 images: ~15 s on one core


@pytest.fixture(scope="module")
def encoder(digits_shards, tmp_path_factory):
    cache = tmp_path_factory.mktemp("encoder-cache")
    with one_thread():
        net, acc = load_or_train_feature_encoder(digits_shards, cache, steps=STEPS, batch_size=128)
    return net, acc, cache


def test_views_differ_per_image_and_the_loss_prefers_matching_pairs():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(1, 1, 16, 16) * 2 - 1).expand(8, -1, -1, -1)  # one image 8 times
    a, b = views(x, g), views(x, g)
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert not torch.allclose(a, b)
    assert all(not torch.allclose(a[0], a[i]) for i in range(1, 8))  # each image its own warp
    z = torch.randn(8, 4)
    assert nt_xent(torch.cat([z, z])) < nt_xent(torch.cat([z, z.roll(1, 0)]))


def test_label_free_features_rank_damage_as_labels_would(digits_shards, encoder):
    """Real train images, blurred, noised, and with 7 of the 10 classes dropped: the encoder orders them as the
    labelled classifier does (real < blur < noise < classes < 3 on these shards). An untrained encoder puts the
    dropped classes before the noise."""
    net, acc, _ = encoder
    assert acc > 0.1  # an image's second view found among 2 x 256 - 1 others (chance: 0.002)
    train = [b for b in eval_loader(digits_shards, "train", batch_size=512)]
    x, y = torch.cat([b["image"] for b in train]), torch.cat([b["label"] for b in train])
    g = torch.Generator().manual_seed(0)
    sets = {"real": x, "blur 1": TF.gaussian_blur(x, kernel_size=7, sigma=1.0),
            "noise 0.3": (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1), "classes < 3": x[y < 3]}
    with one_thread():
        classifier, _ = load_or_train_feature_classifier(digits_shards, steps=150)  # test_eval_images' (cached)
        scores = {}
        for name, extractor in (("classifier", classifier), ("encoder", net)):
            fid = FID(extractor)
            fid.real_stats(eval_loader(digits_shards, "test", batch_size=512))
            scores[name] = {}
            for kind, images in sets.items():
                fid.fake_stats(images.split(512))
                scores[name][kind] = fid.score()["fid"]
    order = {name: sorted(sets, key=scores[name].get) for name in scores}
    assert order["encoder"] == order["classifier"] == list(sets), scores


def test_cached_like_the_classifier(digits_shards, encoder):
    net, acc, cache = encoder
    (pt,) = cache.glob("encoder-*.pt")
    record = json.loads(pt.with_suffix(".json").read_text())
    assert record["kind"] == "encoder" and record["steps"] == STEPS and record["accuracy"] == acc
    again, acc2 = load_or_train_feature_encoder(digits_shards, cache, steps=STEPS, batch_size=128)
    assert again.cache_hit and acc2 == acc
    for k, v in net.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])


def test_a_damaged_train_shard_is_named(digits_copy, tmp_path):
    shard = digits_copy / "train-000002.tar"
    shard.write_bytes(shard.read_bytes()[:5000])
    with pytest.raises(DataError, match="feature encoder trains on .* train-000002.tar is damaged"):
        load_or_train_feature_encoder(digits_copy, tmp_path, steps=5)
