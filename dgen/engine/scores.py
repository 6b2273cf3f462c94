"""Sample-quality scores at evaluation ticks: FID and KID of generated images against the
evaluation split, in the features of a classifier dgen trains on the labelled train split
("FID (classifier features)", see dgen.eval.fid), or of Inception where `--inception-weights`
points at a local state dict. Real statistics are computed once; fakes come from fixed noise, so
successive scores of a run differ only by the model. Every rank takes part (its share of the real
and of the fake images); torchmetrics merges the statistics across ranks, so every rank gets the same score.
"""

from __future__ import annotations

import itertools
import logging

import torch

from dgen.data.stream import eval_loader, to_float
from dgen.eval.fid import FID, feature_image_shape, inception_extractor, load_or_train_feature_classifier
from dgen.eval.image_files import load_images

log = logging.getLogger(__name__)

FEW_IMAGES = 2000  # FID's bias (upward, ~1/N) makes scores of fewer images hard to compare


class SampleScores:
    def __init__(self, acc, method, location: str, split: str, cfg):
        self.acc, self.method, self.cfg = acc, method, cfg
        if cfg.inception_weights:
            extractor, self.name = inception_extractor(cfg.inception_weights), "inception"
        else:
            extractor, accuracy = load_or_train_feature_classifier(
                location, image_size=cfg.image_size, channels=cfg.channels, device=str(acc.device),
                steps=cfg.fid_classifier_steps)
            self.name = "classifier"
            if acc.is_main_process:
                log.info("FID (classifier features): feature classifier test accuracy %.3f (%s)", accuracy,
                         getattr(extractor, "cache_path", ""))
        self.fid = FID(extractor, acc.device, batch_size=256)
        loader = eval_loader(location, split, batch_size=256, image_size=cfg.image_size, channels=cfg.channels,
                             rank=acc.process_index, world_size=acc.num_processes, verify=cfg.verify_shards)
        self.fid.real_stats(batch["image"] for batch in loader)
        share = -(-cfg.fid_samples // acc.num_processes)
        g = torch.Generator().manual_seed(cfg.seed * 1000 + acc.process_index)
        self.noise = method.noise(share, g).to(acc.device)

    @torch.no_grad()
    def __call__(self) -> dict[str, float]:
        fakes = (self.method.sample(z).float() for z in self.noise.split(256))
        self.fid.fake_stats(fakes)
        score = self.fid.score()
        return {f"test/fid_{self.name}": score["fid"], f"test/kid_{self.name}": score["kid"]}


def score_run(run_dir, *, untrained: bool = False, samples: int = 2000, device: str = "cpu") -> dict[str, float]:
    """FID/KID (classifier features) of a trained run's latest checkpoint against its test split, and the judge's
    verdict on its samples (labelled data), in one process; `untrained=True` scores the same architecture freshly
    initialised (the ceiling)."""
    from types import SimpleNamespace

    from dgen.data.auto import check_data
    from dgen.engine.run import load_generator, load_trained
    from dgen.methods import get_method

    cfg, method, _ = load_generator(run_dir, device)
    if untrained:  # as training starts: vaegan's G is its VAE's decoder
        torch.manual_seed(cfg.seed)
        method = get_method(cfg.model)(cfg, method.data)
        method.initialise(load_trained)
        for m in method.models.values():
            m.to(device).eval()
    cfg.fid_samples = samples
    location = check_data(cfg.data, cfg.shards_root)
    acc = SimpleNamespace(device=torch.device(device), process_index=0, num_processes=1, is_main_process=True)
    scores = SampleScores(acc, method, location, "test", cfg)
    result = scores()
    from dgen.data.manifest import load_manifest
    from dgen.engine.report import judge, judge_kind

    kind = judge_kind(method.data.dataset, load_manifest(location).classes, cfg)  # a generator's spec has no classes
    if kind:  # as the run's report: how class-like its samples are
        result.update(judge(method, cfg, location, kind))
    return result


def score_floor(data: str, *, steps: int = 600, samples: int | None = 2000, image_size: int | None = None,
                device: str = "cpu") -> dict:
    """FID/KID (classifier features) of the first `samples` training images (all if None) against the test split:
    the best a generator scored on `samples` images can expect (FID's bias grows as the sample shrinks, so a run's
    2,000 samples are compared with 2,000 real ones). `image_size`: that of the runs compared with (default: the
    shards')."""
    image_size, channels = feature_image_shape(data, image_size)
    extractor, _ = load_or_train_feature_classifier(data, device=device, steps=steps, image_size=image_size,
                                                    channels=channels)
    fid = FID(extractor, device, batch_size=256)
    fid.real_stats(eval_loader(data, "test", batch_size=256, image_size=image_size, channels=channels))
    train = (b["image"] for b in eval_loader(data, "train", batch_size=256, image_size=image_size, channels=channels))
    images = torch.cat(list(itertools.islice(train, -(-samples // 256)))) if samples else torch.cat(list(train))
    images = images[:samples]  # the loader's floats in [-1, 1]
    fid.fake_stats(images.split(256))
    score = fid.score()
    return {"test/fid_classifier": score["fid"], "test/kid_classifier": score["kid"], "images": len(images),
            "reference": f"{data} test split", "image_size": image_size}


def score_images(images, data: str, *, split: str = "test", samples: int = 2000, steps: int = 600,
                 image_size: int | None = None, device: str = "cpu") -> dict:
    """FID/KID (classifier features) of the first `samples` images of `images` (a folder of PNG/JPEG files, a .npy
    or a .npz: dgen.eval.image_files) against `split` of `data`, with the classifier and the reference images a
    run on `data` uses (same cache): with split "test" and a run's fid_classifier_steps, comparable with that run's
    test/fid_classifier. The keys name the reference split ("train/fid_classifier" against the train split)."""
    image_size, channels = feature_image_shape(data, image_size)
    # The input is read and checked, and the reference opened, before the classifier's possibly long training.
    fakes, found = load_images(images, image_size=image_size, channels=channels, limit=samples)
    reference = eval_loader(data, split, batch_size=256, image_size=image_size, channels=channels)
    if found > len(fakes):
        log.info("scoring the first %d of the %d images in %s (in sorted order)", len(fakes), found, images)
    if len(fakes) < FEW_IMAGES:
        log.warning("scoring %d images: FID is biased upward below %d, so compare only scores of as many images",
                    len(fakes), FEW_IMAGES)
    extractor, _ = load_or_train_feature_classifier(data, device=device, steps=steps, image_size=image_size,
                                                    channels=channels)
    fid = FID(extractor, device, batch_size=256)
    fid.real_stats(reference)
    fid.fake_stats(to_float(fakes).split(256))
    score = fid.score()
    return {f"{split}/fid_classifier": score["fid"], f"{split}/kid_classifier": score["kid"], "images": len(fakes),
            "reference": f"{data} {split} split", "image_size": image_size}
