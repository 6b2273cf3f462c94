"""Domain adaptation between a labelled source and an unlabelled target (seeds 000 and 002):
`source-only` (lower bound), `target-only` (upper bound), `dann` and `gta`, each evaluated on the
target's test split.

    accelerate launch dgen/train.py --model source-only --data digits:digits-m
    accelerate launch dgen/train.py --model dann        --data digits:digits-m
    accelerate launch dgen/train.py --model gta         --data digits:digits-m
    accelerate launch dgen/train.py --model target-only --data digits:digits-m
    dgen eval --table runs/*                             # the seeds' accuracy table

- source-only / target-only: extractor F and classifier C trained with cross-entropy on one
  domain's labels (one phase "C").
- dann (Ganin & Lempitsky 2015): one phase; F and C learn the source labels while a domain
  discriminator D reads F's features of both domains through a gradient-reversal layer whose
  coefficient follows 2 / (1 + exp(-gamma p)) - 1, p = training progress in [0, 1] (gamma 10), so F
  learns features D cannot tell apart. F sees each domain's batch in its own pass, so BatchNorm
  normalises each by its own statistics during training. Architectures: seed 002's CNN (`--arch cnn`)
  or seed 000's 5-conv extractor (`--arch conv5`).
- gta (Sankaranarayanan et al. 2018, seed 002): F, C, a generator G(features, one-hot label or
  "target", noise) -> image and a discriminator D with a real/fake and a class head, updated in the
  seed's order each step: D (real source images are real and of their class; G's images from
  source and target features are fake), G (its source images should pass as real and of their
  class), C (source labels), F (C's loss + adv_weight * D's class loss on G's source images +
  adv_weight * alpha * D's real/fake loss on G's target images, read as real). G and D are
  initialised as in the reference code (conv N(0, 0.02), BatchNorm N(1, 0.02), Linear N(0, 0.1)).
  F and C: `--arch gta` is seed 002's (the preset on the seeds' pairs); on the embedded pair the
  preset uses the same `cnn` F and C as the other rows, with G and D at `--width 16`.

dgen's addition, for any of them: `--invert-prob P` inverts each labelled training image's polarity
with probability P (digits on photos appear both light-on-dark and dark-on-light); its effect on the
lower bound is reported separately (`source-only --invert-prob 0.5`), so the table shows what the
augmentation and what the adaptation contribute.

Metrics: test/accuracy and test/class_accuracy/K on the target's test split, every sample once across
ranks; source_test/accuracy on the source's. The report draws t-SNE maps of F's features of both test
splits, coloured by class and by domain.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dgen import presets
from dgen.errors import ConfigError
from dgen.eval.tsne import save_tsne
from dgen.methods.base import Method, ReportContext, evaluating
from dgen.models.domain import ARCHS, DomainDiscriminator, GtaDiscriminator, GtaGenerator, build_classifier, gta_init

TSNE_POINTS = 1000  # per domain
STEP_INPUTS = "_gta_step"  # GTA's per-step inputs shared by its phases, kept in the batch until the F update


@dataclass
class ClassifierConfig:
    CHOICES: typing.ClassVar[dict] = {"arch": ARCHS}
    arch: str = "cnn"  # cnn (seed 002's DANN CNN) | conv5 (seed 000) | gta (seed 002's GTA F and C)
    input_norm: bool = True  # F standardises each image per channel first (see dgen.models.domain.Extractor)
    invert_prob: float = 0.0  # chance that a source training image's polarity is inverted (x -> -x); 0 = off


class Classify(Method):
    """F + C trained with cross-entropy on the labelled domain: source-only, the lower bound."""

    Config = ClassifierConfig
    label = "Train on source (lower bound)"
    # the seeds' pairs: their networks, steps and batch; every adaptation method inherits these
    preset = staticmethod(lambda model, dataset, arch: presets.adaptation(model, dataset))
    phases = ("C",)
    loss_terms = ("cls_loss",)
    generative = False
    domains = "source"

    def build(self):
        if not 0.0 <= self.hp.invert_prob <= 1.0:
            raise ConfigError(f"--invert-prob must be in [0, 1], got {self.hp.invert_prob}")
        classes = self.data.classes
        if not classes:
            raise ConfigError(f"{self.cfg.model} needs class labels; {self.data.dataset} has none")
        Fx, C = build_classifier(self.hp.arch, self.data.channels, self.data.image_size, len(classes), self.hp.input_norm)
        return {"F": Fx, "C": C, **self.extra_models(Fx.dim, len(classes))}

    def extra_models(self, dim: int, classes: int) -> dict:
        return {}

    def optimizers(self):
        return {"C": self.adam([*self.models["F"].parameters(), *self.models["C"].parameters()])}

    def phase_models(self, phase):
        return ["F", "C"]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.models["C"](self.models["F"](x))

    def labelled_images(self, batch: dict) -> torch.Tensor:
        """The labelled training images, each inverted (x -> -x in [-1, 1]) with probability invert_prob: digits
        drawn light-on-dark and dark-on-light are the same class, and a photo-blended target shows both."""
        x = batch["image"]
        if self.hp.invert_prob <= 0:
            return x
        flip = torch.rand(len(x), 1, 1, 1, device=x.device) < self.hp.invert_prob
        return torch.where(flip, -x, x)

    def loss(self, phase, batch):
        logits = self.classify(self.labelled_images(batch)).float()
        ce = F.cross_entropy(logits, batch["label"])
        return {"loss": ce, "cls_loss": ce.detach(), "train_accuracy": _accuracy(logits, batch["label"])}

    # -- evaluation ----------------------------------------------------------------------------------------
    def eval_sums(self, batch):
        with evaluating(self.unwrap("F"), self.unwrap("C")) as (Fx, C):
            logits = C(Fx(batch["image"])).float()
        y = batch["label"]
        hit = (logits.argmax(1) == y).float()
        k = len(self.data.classes)
        out = {"accuracy": hit.sum(), "loss": F.cross_entropy(logits, y, reduction="sum")}
        per_hit = torch.zeros(k, device=y.device).index_add_(0, y, hit)
        per_n = torch.zeros(k, device=y.device).index_add_(0, y, torch.ones_like(hit))
        for c in range(k):
            out[f"hits/{c}"], out[f"count/{c}"] = per_hit[c], per_n[c]
        return out

    def finish_eval(self, metrics, prefix):
        """Per-class accuracy = (hits_c / N) / (count_c / N); classes absent from the split are left out."""
        out = {}
        for c, name in enumerate(self.data.classes):
            hits, count = metrics.pop(f"{prefix}hits/{c}", 0.0), metrics.pop(f"{prefix}count/{c}", 0.0)
            if count > 0:
                out[f"{prefix}class_accuracy/{name}"] = hits / count
        return {**metrics, **out}

    def features(self, batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        with evaluating(self.unwrap("F")) as Fx:
            feats = [Fx(b["image"]).float().cpu() for b in batches]
        return torch.cat(feats), torch.cat([b["label"].cpu() for b in batches])

    def report(self, ctx: ReportContext):
        """t-SNE of F's features: the target test split by class; with the source's, by class and by domain."""
        names = list(self.data.classes)
        ft, yt = self.features(ctx.test_batches)
        ft, yt = ft[:TSNE_POINTS], yt[:TSNE_POINTS]
        if not ctx.source_batches:
            path, _ = save_tsne(ft, yt, ctx.images_dir / "tsne_class.png", names, "features by class", self.cfg.seed)
            return {"tsne_class": path}
        fs, ys = self.features(ctx.source_batches)
        fs, ys = fs[:TSNE_POINTS], ys[:TSNE_POINTS]
        feats, labels = torch.cat([fs, ft]), torch.cat([ys, yt])
        domain = torch.cat([torch.zeros(len(fs)), torch.ones(len(ft))]).long()
        n = len(feats)  # one embedding for both maps: the same points, two colourings
        by_class, _ = save_tsne(feats, labels, ctx.images_dir / "tsne_class.png", names,
                                f"{self.cfg.model}: features of both test splits by class", self.cfg.seed, max_points=n)
        by_domain, _ = save_tsne(feats, domain, ctx.images_dir / "tsne_domain.png", ["source", "target"],
                                 f"{self.cfg.model}: features by domain", self.cfg.seed, max_points=n)
        return {"tsne_class": by_class, "tsne_domain": by_domain}


class TargetOnly(Classify):
    """F + C trained on the target's own labels: the upper bound (not an adaptation method)."""

    domains = "target"
    label = "Train on target (upper bound)"


@dataclass
class DANNConfig(ClassifierConfig):
    domain_weight: float = 1.0  # weight of the domain loss
    gamma: float = 10.0  # GRL coefficient 2 / (1 + exp(-gamma p)) - 1 over progress p in [0, 1]


class DANN(Classify):
    Config = DANNConfig
    domains = "both"
    label = "DANN"
    loss_terms = ("cls_loss", "domain_loss")

    def extra_models(self, dim, classes):
        return {"D": DomainDiscriminator(self.hp.arch, dim)}

    def optimizers(self):
        return {"C": self.adam([p for m in self.models.values() for p in m.parameters()])}

    def phase_models(self, phase):
        return ["F", "C", "D"]

    def coeff(self) -> float:
        p = min(1.0, self.step / max(1, self.cfg.max_steps))
        return 2.0 / (1.0 + math.exp(-self.hp.gamma * p)) - 1.0

    def loss(self, phase, batch):
        xs, ys, xt = self.labelled_images(batch), batch["label"], batch["target_image"]
        # One pass per domain, as the DANN papers' code does: during training BatchNorm normalises each domain
        # by its own batch statistics. One pass over both (dgen before) left ~9 points of target accuracy behind.
        hs, ht = self.models["F"](xs), self.models["F"](xt)
        h = torch.cat([hs, ht])
        logits = self.models["C"](hs).float()
        ce = F.cross_entropy(logits, ys)
        coeff = self.coeff()
        d = self.models["D"](h, coeff).float()
        domain = torch.cat([d.new_zeros(len(xs)), d.new_ones(len(xt))])  # made on the device: no copy per step
        if d.shape[1] == 2:
            dl = F.cross_entropy(d, domain.long())
            d_acc = (d.argmax(1) == domain.long()).float().mean()
        else:
            dl = F.binary_cross_entropy_with_logits(d[:, 0], domain)
            d_acc = ((d[:, 0] > 0).float() == domain).float().mean()
        loss = ce + self.hp.domain_weight * dl
        return {"loss": loss, "cls_loss": ce.detach(), "domain_loss": dl.detach(), "domain_accuracy": d_acc.detach(),
                "train_accuracy": _accuracy(logits, ys), "grl_coeff": torch.full((), coeff, device=d.device)}


@dataclass
class GTAConfig(ClassifierConfig):
    nz: int = 512  # noise size of G's input
    width: int = 64  # ngf = ndf of G and D (the reference code's 64)
    adv_weight: float = 0.1  # weight of D's class loss on G's source images in F's update
    alpha: float = 0.3  # times adv_weight: weight of D's real/fake loss on G's target images in F's update


class GTA(Classify):
    Config = GTAConfig
    domains = "both"
    label = "GTA"
    phases = ("D", "G", "C", "F")
    loss_terms = ("d_loss", "g_loss", "cls_loss", "f_loss")
    logs_loss = False

    def extra_models(self, dim, classes):
        G = GtaGenerator(dim, classes, self.hp.nz, self.data.channels, self.hp.width)
        D = GtaDiscriminator(self.data.channels, classes, self.hp.width)
        return {"G": gta_init(G), "D": gta_init(D)}

    def build(self):
        models = super().build()
        if self.hp.arch == "gta":  # the reference code initialises its own F and C the same way
            for name in ("F", "C"):
                gta_init(models[name])
        return models

    def optimizers(self):
        return {p: self.adam(self.models[p].parameters()) for p in self.phases}

    def phase_models(self, phase):
        return [phase]

    def _onehot(self, labels: torch.Tensor | None, n: int, device) -> torch.Tensor:
        """Source images: their class; target images: the extra "target" entry."""
        k = len(self.data.classes)
        index = labels if labels is not None else torch.full((n,), k, device=device, dtype=torch.long)
        return F.one_hot(index, k + 1).float()

    def _generate(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        z = torch.randn(len(h), self.hp.nz, device=h.device)
        return self.models["G"](h, self._onehot(labels, len(h), h.device), z)

    def _step_inputs(self, batch: dict) -> tuple[torch.Tensor, ...]:
        """The step's source images (polarity flips drawn once), F's features of both domains and G's images from
        the source features, computed once per step, in the first phase, and shared by all four updates, as the
        reference code does. F runs with gradient (its graph is kept for F's own update, which comes last; the D, G
        and C updates read the features detached), so F's BatchNorm statistics see one source and one target pass
        per step. G's source images are made with gradient for G (not F): D's update reads them detached, G's update
        back-propagates through D into them."""
        if STEP_INPUTS not in batch:
            xs = self.labelled_images(batch)
            Fx = self.models["F"]
            hs, ht = Fx(xs), Fx(batch["target_image"])
            batch[STEP_INPUTS] = (xs, hs, ht, self._generate(hs.detach(), batch["label"]))
        return batch[STEP_INPUTS]

    def loss(self, phase, batch):
        (xs, hs_f, ht_f, gs), ys, xt = self._step_inputs(batch), batch["label"], batch["target_image"]
        hs, ht = hs_f.detach(), ht_f.detach()
        C, D = self.models["C"], self.models["D"]
        bce = F.binary_cross_entropy_with_logits
        real, fake = torch.ones(len(xs), device=xs.device), torch.zeros(len(xs), device=xs.device)
        if phase == "D":
            with torch.no_grad():  # F and G get no gradient here (and DDP must not wait for one)
                gt = self._generate(ht, None)
            s_real, c_real = D(xs)
            s_fs, _ = D(gs.detach())
            s_ft, _ = D(gt)
            loss = (bce(s_real.float(), real) + F.cross_entropy(c_real.float(), ys)
                    + bce(s_fs.float(), fake) + bce(s_ft.float(), torch.zeros(len(xt), device=xt.device)))
            return {"loss": loss, "d_loss": loss.detach()}
        if phase == "G":
            with self.frozen("D"):
                s, c = D(gs)
                loss = bce(s.float(), real) + F.cross_entropy(c.float(), ys)
            return {"loss": loss, "g_loss": loss.detach()}
        if phase == "C":
            logits = C(hs).float()
            ce = F.cross_entropy(logits, ys)
            return {"loss": ce, "cls_loss": ce.detach(), "train_accuracy": _accuracy(logits, ys)}
        hp = self.hp  # phase F: back-propagates into the features computed with gradient in the first phase
        del batch[STEP_INPUTS]  # the last phase
        with self.frozen("C", "G", "D"):
            ce = F.cross_entropy(C(hs_f).float(), ys)
            _, c_fs = D(self._generate(hs_f, ys))
            s_ft, _ = D(self._generate(ht_f, None))
            loss = (ce + hp.adv_weight * F.cross_entropy(c_fs.float(), ys)
                    + hp.adv_weight * hp.alpha * bce(s_ft.float(), torch.ones(len(xt), device=xt.device)))
        return {"loss": loss, "f_loss": loss.detach()}


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.detach().argmax(1) == labels).float().mean()


METHODS = {"source-only": Classify, "target-only": TargetOnly, "dann": DANN, "gta": GTA}
