"""Sample-quality scores at evaluation ticks: FID and KID of generated images against the evaluation split,
in two feature spaces where they apply:

- classifier features ("FID (classifier features)", dgen.eval.fid): a classifier dgen trains on the labelled
  train split; labelled data only; every evaluation;
- Inception-v3 features ("FID (Inception v3, torchvision weights)", dgen.eval.inception): where the weights are
  in the torch hub cache or can be fetched there (`--no-inception`: off; `--inception-weights FILE`: that file);
  any data, labelled or not; at every evaluation on a GPU, at the last one on a CPU (Inception reads about 8
  images/s of 299 px on two CPU cores). Its real statistics are computed once per (split's shards,
  image size, weights) and cached beside the classifier.

Real statistics are computed once per run (or read from that cache); fakes come from fixed noise, so successive
scores of a run differ only by the model. Every rank takes part (its share of the real and of the fake images);
torchmetrics merges the statistics across ranks, so every rank gets the same score. Where neither space applies
(unlabelled data without the weights) `notes` says why, for the log and the report.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list

from dgen.atomic import atomic_write
from dgen.data.manifest import load_manifest
from dgen.data.stream import eval_loader, to_float
from dgen.eval.contrastive import load_or_train_feature_encoder
from dgen.eval.fid import (FID, default_cache_dir, feature_image_shape, inception_extractor,
                           load_or_train_feature_classifier)
from dgen.eval.image_files import load_images

log = logging.getLogger(__name__)

FEW_IMAGES = 2000  # FID's bias (upward, ~1/N) makes scores of fewer images hard to compare
INCEPTION_PREP = "q8-bicubic-aa-299"  # dgen.eval.fid.InceptionFeatures' preparation, part of the cache key


def inception_weights(acc, cfg) -> tuple[Path | None, str]:
    """(the weights file every rank uses, "") or (None, why not: a notice). The main process looks (and fetches)
    first; every rank must find the file, or none uses it (a collective over some ranks would hang)."""
    from dgen.eval.inception import find_weights

    if cfg.inception_weights:
        return Path(cfg.inception_weights), ""
    if not cfg.inception:
        return None, "Inception features are off (--no-inception)"
    if acc.num_processes == 1:
        return find_weights()
    with acc.main_process_first():  # one download, which the others then find (where the cache is shared)
        path, why = find_weights()
    reasons = [None] * acc.num_processes
    torch.distributed.all_gather_object(reasons, why if path is None else "")
    missing = [r for r in reasons if r]
    return (path, "") if not missing else (None, f"{len(missing)} of {acc.num_processes} processes: {missing[0]}")


def feature_network(data, *, image_size: int, channels: int, device: str = "cpu", classifier_steps: int = 600,
                    encoder_steps: int = 800, quiet: bool = False) -> tuple[str, torch.nn.Module]:
    """The feature space of dgen's own FID on `data`: ("classifier", the feature classifier) where the shards have
    class labels, else ("contrastive", the encoder trained on them without labels); both cached."""
    manifest = load_manifest(data)
    if manifest.classes:
        net, accuracy = load_or_train_feature_classifier(data, image_size=image_size, channels=channels,
                                                         device=device, steps=classifier_steps)
        if not quiet:
            log.info("FID (classifier features): feature classifier test accuracy %.3f (%s)", accuracy,
                     getattr(net, "cache_path", ""))
        return "classifier", net
    net, accuracy = load_or_train_feature_encoder(data, image_size=image_size, channels=channels, device=device,
                                                  steps=encoder_steps)
    if not quiet:
        log.info("FID (contrastive features): %r has no class labels; feature encoder trained without them, held-out "
                 "view accuracy %.3f (%s)", manifest.dataset, accuracy, getattr(net, "cache_path", ""))
    return "contrastive", net


class SampleScores:
    def __init__(self, acc, method, location: str, split: str, cfg):
        self.acc, self.method, self.cfg, self.split = acc, method, cfg, split
        self.scorers: dict[str, FID] = {}
        self.notes: list[str] = []
        manifest = load_manifest(location)
        kind, extractor = feature_network(location, image_size=cfg.image_size, channels=cfg.channels,
                                          device=str(acc.device), classifier_steps=cfg.fid_classifier_steps,
                                          encoder_steps=cfg.fid_encoder_steps, quiet=not acc.is_main_process)
        self.scorers[kind] = FID(extractor, acc.device, batch_size=256)
        self.scorers[kind].real_stats(self._real(location))
        path, why = inception_weights(acc, cfg)
        if path is not None:
            self.scorers["inception"] = FID(inception_extractor(path), acc.device, batch_size=64)
            self._inception_real(location, manifest, path)
        elif cfg.inception:
            self.notes.append(f"No Inception FID: {why}")
        self.real_images = manifest.split(split).samples
        for name, fid in self.scorers.items():
            if self.real_images <= fid.extractor.feature_dim:
                self.notes.append(f"FID ({name} features) is unreliable on these shards: the {split} split has "
                                  f"{self.real_images} images, no more than the features' {fid.extractor.feature_dim} "
                                  f"dimensions, so its covariance is degenerate; compare checkpoints and runs by "
                                  f"test/kid_{name} (unbiased) instead.")
        if acc.is_main_process:
            for note in self.notes:
                log.warning("%s", note)
        self.name = next(iter(self.scorers), None)  # the score that picks the best checkpoint
        share = -(-cfg.fid_samples // acc.num_processes)
        g = torch.Generator().manual_seed(cfg.seed * 1000 + acc.process_index)
        self.noise = method.noise(share, g).to(acc.device)

    def _real(self, location: str):
        loader = eval_loader(location, self.split, batch_size=256, image_size=self.cfg.image_size,
                             channels=self.cfg.channels, rank=self.acc.process_index,
                             world_size=self.acc.num_processes, verify=self.cfg.verify_shards)
        return (batch["image"] for batch in loader)

    def _inception_real(self, location: str, manifest, weights: Path) -> None:
        """The real set's Inception statistics: from the cache where an earlier run left them, else computed
        (every rank its share) and cached by the main process."""
        from dgen.eval.inception import weights_id

        fid, acc, cfg = self.scorers["inception"], self.acc, self.cfg
        meta = {"prep": INCEPTION_PREP, "weights": weights_id(weights), "dataset": manifest.dataset,
                "split": self.split, "image_size": cfg.image_size, "channels": cfg.channels,
                "shards": hashlib.sha256("".join(sh.sha256 for sh in manifest.split(self.split).shards).encode())
                .hexdigest()}
        key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
        path = default_cache_dir(location) / f"inception-real-{key}.pt"
        state = None
        if acc.is_main_process and path.is_file():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                state = state if state.get("meta") == meta else None
            except Exception as e:  # a damaged cache file is recomputed, not fatal
                log.warning("ignoring unreadable Inception statistics %s (%s)", path, e)
        if broadcast_object_list([state is not None])[0]:  # the main process's answer on every rank
            fid.load_real_state(state or {}, holder=acc.is_main_process)
            if acc.is_main_process:
                log.info("FID (Inception): real statistics of the %s split from %s", self.split, path)
            return
        if acc.is_main_process:
            log.info("FID (Inception): computing the %s split's real statistics once (cached in %s)", self.split,
                     path.parent)
        fid.real_stats(self._real(location))
        state = fid.real_state()  # every rank: the merge is a collective
        if acc.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: torch.save({**state, "meta": meta}, f))

    @torch.no_grad()
    def __call__(self, final: bool = True) -> dict[str, float]:
        """Scores of the current model; Inception only where it runs at every tick (a GPU) or when `final`."""
        out = {}
        for name, fid in self.scorers.items():
            if name == "inception" and not (final or self.acc.device.type == "cuda"):
                continue
            fakes = (self.method.sample(z).float() for z in self.noise.split(256))
            fid.fake_stats(fakes)
            score = fid.score()
            out.update({f"test/fid_{name}": score["fid"], f"test/kid_{name}": score["kid"]})
        if out:
            out.update({"test/fid_images": len(self.noise) * self.acc.num_processes,
                        "test/fid_reference_images": self.real_images})
        return out


def score_run(run_dir, *, untrained: bool = False, samples: int = 2000, device: str = "cpu",
              inception: bool = True) -> dict[str, float]:
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
    cfg.inception = cfg.inception and inception
    location = check_data(cfg.data, cfg.shards_root)
    acc = SimpleNamespace(device=torch.device(device), process_index=0, num_processes=1, is_main_process=True)
    scores = SampleScores(acc, method, location, "test", cfg)
    result = scores()
    if scores.notes:
        result["notes"] = scores.notes
    from dgen.data.manifest import load_manifest
    from dgen.engine.report import judge, judge_kind

    kind = judge_kind(method.data.dataset, load_manifest(location).classes, cfg)  # a generator's spec has no classes
    if kind:  # as the run's report: how class-like its samples are
        result.update(judge(method, cfg, location, kind))
    return result


def score_floor(data: str, *, steps: int = 600, encoder_steps: int = 800, samples: int | None = 2000,
                image_size: int | None = None, device: str = "cpu") -> dict:
    """FID/KID (classifier features; contrastive features where `data` has no labels) of the first `samples`
    training images (all if None) against the test split:
    the best a generator scored on `samples` images can expect (FID's bias grows as the sample shrinks, so a run's
    2,000 samples are compared with 2,000 real ones). `image_size`: that of the runs compared with (default: the
    shards')."""
    image_size, channels = feature_image_shape(data, image_size)
    kind, extractor = feature_network(data, image_size=image_size, channels=channels, device=device,
                                      classifier_steps=steps, encoder_steps=encoder_steps, quiet=True)
    fid = FID(extractor, device, batch_size=256)
    fid.real_stats(eval_loader(data, "test", batch_size=256, image_size=image_size, channels=channels))
    train = (b["image"] for b in eval_loader(data, "train", batch_size=256, image_size=image_size, channels=channels))
    images = torch.cat(list(itertools.islice(train, -(-samples // 256)))) if samples else torch.cat(list(train))
    images = images[:samples]  # the loader's floats in [-1, 1]
    fid.fake_stats(images.split(256))
    score = fid.score()
    return {f"test/fid_{kind}": score["fid"], f"test/kid_{kind}": score["kid"], "images": len(images),
            "reference": f"{data} test split", "image_size": image_size}


def score_images(images, data: str, *, split: str = "test", samples: int = 2000, steps: int = 600,
                 encoder_steps: int = 800, image_size: int | None = None, device: str = "cpu") -> dict:
    """FID/KID (classifier features; contrastive features where `data` has no labels) of the first `samples` images
    of `images` (a folder of PNG/JPEG files, a .npy or a .npz: dgen.eval.image_files) against `split` of `data`,
    with the feature network and the reference images a run on `data` uses (same cache): with split "test" and a
    run's fid_classifier_steps / fid_encoder_steps, comparable with that run's test/fid_classifier (or
    test/fid_contrastive). The keys name the reference split ("train/fid_classifier" against the train split)."""
    image_size, channels = feature_image_shape(data, image_size)
    # The input is read and checked, and the reference opened, before the classifier's possibly long training.
    fakes, found = load_images(images, image_size=image_size, channels=channels, limit=samples)
    reference = eval_loader(data, split, batch_size=256, image_size=image_size, channels=channels)
    if found > len(fakes):
        log.info("scoring the first %d of the %d images in %s (in sorted order)", len(fakes), found, images)
    if len(fakes) < FEW_IMAGES:
        log.warning("scoring %d images: FID is biased upward below %d, so compare only scores of as many images",
                    len(fakes), FEW_IMAGES)
    kind, extractor = feature_network(data, image_size=image_size, channels=channels, device=device,
                                      classifier_steps=steps, encoder_steps=encoder_steps, quiet=True)
    fid = FID(extractor, device, batch_size=256)
    fid.real_stats(reference)
    fid.fake_stats(to_float(fakes).split(256))
    score = fid.score()
    return {f"{split}/fid_{kind}": score["fid"], f"{split}/kid_{kind}": score["kid"], "images": len(fakes),
            "reference": f"{data} {split} split", "image_size": image_size}
