"""Sample-quality scores at evaluation ticks: FID and KID of generated images against the
evaluation split, in the features of a classifier dgen trains on the labelled train split
("FID (classifier features)", see dgen.eval.fid), or of Inception where `--inception-weights`
points at a local state dict. Real statistics are computed once; fakes come from fixed noise, so
successive scores of a run differ only by the model. Every rank takes part (its share of the real
and of the fake images); torchmetrics merges the statistics across ranks, so every rank gets the same score.
"""

from __future__ import annotations

import logging

import torch

from dgen.data.stream import eval_loader
from dgen.eval.fid import FID, inception_extractor, load_or_train_feature_classifier

log = logging.getLogger(__name__)


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
    """FID/KID (classifier features) of a trained run's latest checkpoint against its test split, in one
    process; `untrained=True` scores the same architecture freshly initialised (the ceiling)."""
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
    return scores()


def score_floor(data: str, *, steps: int = 600, device: str = "cpu") -> dict[str, float]:
    """FID/KID (classifier features) between the train and test splits: the best a generator can expect."""
    extractor, _ = load_or_train_feature_classifier(data, device=device, steps=steps)
    fid = FID(extractor, device, batch_size=256)
    fid.real_stats(eval_loader(data, "test", batch_size=256))
    fid.fake_stats(eval_loader(data, "train", batch_size=256))
    score = fid.score()
    return {"test/fid_classifier": score["fid"], "test/kid_classifier": score["kid"]}
