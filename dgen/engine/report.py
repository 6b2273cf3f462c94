"""The end-of-run report: pictures in RUN_DIR/images (also logged to W&B) and RUN_DIR/report.md."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dgen.data.stream import eval_loader
from dgen.eval.curves import save_curves
from dgen.eval.images import save_grid, save_progress_collage
from dgen.methods.base import ReportContext

MAX_REPORT_IMAGES = 2048  # test images used for reconstructions, traversals and t-SNE


def write_report(acc, method, cfg, run_dir: Path, location: str, eval_split: str | None, fixed, tracker,
                 progress: list | None = None, source: str | None = None, notes: list[str] | None = None) -> None:
    """`location`: the evaluated data (a domain-adaptation run's target); `source`: that run's source; `notes`:
    what the sample-quality scorer said (e.g. why there is no Inception FID)."""
    if acc.is_main_process:
        images = run_dir / "images"
        pictures = {"samples": save_grid(method.sample(fixed), images / "samples.png")} if method.generative else {}
        snapshots = [(step, x) for step, x in (progress or []) if x is not None]
        if len(snapshots) > 1:  # seed 003's collage: the same 8 latents, one row per sample tick
            pictures["progress"] = save_progress_collage([x for _, x in snapshots], [s for s, _ in snapshots],
                                                         images / "progress.png")
        keys = [k for k in ("loss", *method.loss_terms) if any(k in r for r in tracker.records)]
        train_rows = [r for r in tracker.records if any(k in r for k in keys)]
        if train_rows:
            pictures["curves"] = save_curves(train_rows, images / "curves.png", keys, title="training (per step)")
        test_rows = [r for r in tracker.records if any(k.startswith("test/") for k in r)]
        if len(test_rows) > 1:
            pictures["test_curves"] = save_curves(test_rows, images / "test_curves.png",
                                                  [k for k in test_rows[-1] if k.startswith("test/")], title="test split")
        if eval_split:
            ctx = ReportContext(images, _test_batches(location, eval_split, cfg, acc.device),
                                torch.Generator().manual_seed(cfg.seed), acc.device,
                                _test_batches(source, "test", cfg, acc.device) if source else None)
            pictures.update(method.report(ctx))
        step = tracker.records[-1]["step"] if tracker.records else 0
        kind = judge_kind(method.data.dataset, method.data.classes, cfg) if method.generative else None
        if kind == "classifier" and not cfg.fid:  # without FID that classifier was never trained: not for a report
            kind = None
        if kind:
            tracker.log(judge(method, cfg, location, kind), step)
        tracker.images(pictures, step)
        _markdown(cfg, run_dir, tracker.records, pictures, method.generative, kind,
                  _quality_notes(cfg, eval_split, notes) if method.generative else [], eval_split)
    acc.wait_for_everyone()


def _test_batches(location: str, split: str, cfg, device) -> list[dict]:
    """Up to MAX_REPORT_IMAGES images of a test split, in batches on the device."""
    batches, n = [], 0
    for b in eval_loader(location, split, batch_size=256, image_size=cfg.image_size, channels=cfg.channels,
                         rank=0, world_size=1):
        batches.append({k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()})
        n += len(b["image"])
        if n >= MAX_REPORT_IMAGES:
            break
    return batches


def judge_kind(dataset: str, classes: list[str] | None, cfg) -> str | None:
    """Which judge reads a generator's samples: "digits" for the embedded digits (the 8x8 judge fitted on the real
    digits, dgen.eval.digits_judge), "classifier" for other labelled data scored in classifier features (the FID
    feature classifier trained on its train split), else None."""
    if dataset == "digits":
        return "digits"
    return "classifier" if classes else None


def judge(method, cfg, location: str, kind: str, n: int = 1000) -> dict[str, float]:
    """How digit-like (class-like) 1000 random samples are, by the judge `kind` (judge_kind): mean top-class
    probability, share above 0.9, classes with >= 2%."""
    from dgen.eval.digits_judge import DigitJudge, classifier_verdict
    from dgen.eval.fid import load_or_train_feature_classifier

    z = method.noise(n, torch.Generator().manual_seed(cfg.seed + 1))
    device = next(method.unwrap(next(iter(method.models))).parameters()).device
    with torch.no_grad():
        samples = method.sample(z.to(device)).float().cpu()
    if kind == "digits":
        verdict = DigitJudge.fit().judge(samples)
    else:
        # the main process alone (the other ranks wait at the report's end): no collective
        classifier, _ = load_or_train_feature_classifier(location, image_size=cfg.image_size, channels=cfg.channels,
                                                         steps=cfg.fid_classifier_steps, collective=False)
        verdict = classifier_verdict(classifier.cpu(), samples)
    return {"judge/confidence": verdict["confidence"], "judge/confident_fraction": verdict["confident_fraction"],
            "judge/classes_covered": verdict["classes_covered"]}


_WHAT = {"classifier": "Classifier-feature FIDs compare runs on the same shards; they are not Inception FIDs.",
         "contrastive": "The shards have no class labels: features of an encoder dgen trained on their train split "
                        "without labels (contrastive, cached). They compare runs on the same shards; they are neither "
                        "classifier-feature nor Inception FIDs.",
         "inception": "Inception v3 with torchvision's weights, 8-bit images resized to 299 px (bicubic): comparable "
                      "with other runs scored so, near but not equal to the TensorFlow-Inception FIDs of papers, "
                      "which also use 10,000-50,000 generated images (--fid-samples)."}


def _quality_notes(cfg, eval_split: str | None, notes: list[str] | None) -> list[str]:
    """Why a generative run has no (or only one kind of) sample-quality score: never silence."""
    if notes:
        return list(notes)
    if not cfg.fid:
        return ["No sample-quality score: FID is off (--no-fid)."]
    if not eval_split:
        return ["No sample-quality score: the shards have no test or valid split to compare samples with "
                "(or evaluation is off: --eval-every 0)."]
    return []


def _markdown(cfg, run_dir: Path, records: list[dict], pictures: dict[str, Path], generative: bool = True,
              judge_kind: str | None = None, quality: list[str] | None = None, split: str | None = "test") -> None:
    last_train = next((r for r in reversed(records) if "images" in r), {})
    last_test = next((r for r in reversed(records) if any(k.startswith("test/") for k in r)), {})
    judge = next((r for r in reversed(records) if "judge/confidence" in r), {})
    lines = [f"# {cfg.model} on {cfg.data}", "",
             f"{last_train.get('step', 0)} steps, {last_train.get('images', 0)} images; "
             f"{cfg.image_size}x{cfg.image_size}x{cfg.channels}, batch {cfg.batch_size} per process.", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.6g} |" for k, v in last_train.items() if k not in ("step", "images")]
    lines += [f"| {k} | {v:.6g} |" for k, v in last_test.items() if k != "step"]
    lines += [f"| {k} | {v:.6g} |" for k, v in judge.items() if k != "step"]
    if judge:
        by = ("a classifier fitted on the real 8x8 digits (real test digits score confidence 0.95, an untrained model "
              "0.24)" if judge_kind == "digits" else
              "the FID feature classifier, trained on the train split. Its softmax is confident on noise too "
              "(MNIST: real test digits 0.98 over 10 classes, uniform noise 1.00 in one class), so read confidence "
              "with classes covered and FID; `dgen eval --run RUN --untrained` gives an untrained model's figures")
        lines += ["", f"judge/*: 1000 random samples read by {by}."]
    bad = (last_train.get("data/skipped_samples", 0), last_train.get("data/skipped_shards", 0))
    if any(bad):
        lines += ["", f"**Damaged data skipped during training: {bad[0]:g} undecodable samples, {bad[1]:g} unreadable "
                  "or altered shards** (named in the log's warnings; `dgen verify` checks every shard)."]
    for name, kind in (("classifier", "classifier features"), ("contrastive", "contrastive features"),
                       ("inception", "Inception features")):
        fids = [(r[f"test/fid_{name}"], r["step"], r) for r in records if f"test/fid_{name}" in r]
        if fids:
            value, step, row = min(fids, key=lambda f: f[0])
            count = (f": {row.get('test/fid_images', 0):.0f} generated images against the "
                     f"{row.get('test/fid_reference_images', 0):.0f} of the {cfg.data} {split} split")
            lines += ["", f"Best FID ({kind}): {value:.4g} at step {step}{count}. " + _WHAT[name]]
    lines += [""] + quality if quality else []
    lines += ["", "## Pictures", ""]
    lines += [f"- {name}: `{Path(p).relative_to(run_dir)}`" for name, p in pictures.items()]
    lines += ["", "## Config", "", "```json", json.dumps(cfg.to_dict(), indent=1), "```", ""]
    if generative:
        lines += [f"Samples from the latest checkpoint: `dgen sample --run {run_dir}`", ""]
    (run_dir / "report.md").write_text("\n".join(lines))
