"""A domain-adaptation method written the way docs/contributing.md says, outside dgen: DAN (Long et al. 2015),
DANN's extractor and classifier with a Gaussian-kernel MMD between the source's and the target's features
instead of a domain discriminator.

    DGEN_METHODS=tests.plugins.dan dgen train --model dan --data digits:digits-m
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dgen.methods import register
from dgen.methods.adapt import Classify, ClassifierConfig


@dataclass
class DANConfig(ClassifierConfig):
    mmd_weight: float = 1.0  # weight of the MMD between source and target features


def mmd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared MMD with a Gaussian kernel at the median distance (biased estimate)."""
    x = torch.cat([a, b])
    d = torch.cdist(x, x).pow(2)
    k = torch.exp(-d / d.detach().median().clamp_min(1e-6))
    n = len(a)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


class DAN(Classify):
    Config = DANConfig
    domains = "both"
    label = "DAN (MMD)"
    loss_terms = ("cls_loss", "mmd")

    def loss(self, phase, batch):
        hs, ht = self.models["F"](self.labelled_images(batch)), self.models["F"](batch["target_image"])
        logits = self.models["C"](hs).float()
        ce = F.cross_entropy(logits, batch["label"])
        m = mmd(hs.float(), ht.float())
        return {"loss": ce + self.hp.mmd_weight * m, "cls_loss": ce.detach(), "mmd": m.detach()}


register("dan", DAN)
