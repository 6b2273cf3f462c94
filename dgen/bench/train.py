"""Training images/s: dgen against the plain loop of `dgen.bench.plain`, same networks and batch.

Four measurements per model, each in a fresh Python process (clean peak-memory figures, no state
carried between them):

    dgen  / synthetic   dgen's training step (`trainer.train_step`, the networks and optimizers as
                        `train()` sets them up) on one batch already on the device: compute only
    plain / synthetic   the plain loop's step on the same kind of batch
    dgen  / data        `train()` itself, end to end from the bench shards (npy), metrics.jsonl's
                        images/s per log window; evaluation, samples and checkpoints fall after
                        the measured steps
    plain / data        the plain loop fed by torchvision's ImageFolder over the same images as PNGs

Rates are medians over `--windows` windows of `--window` steps, after one window of warm-up; the
device is synchronised only at window ends. FLOPs per image are counted once on dgen's step
(torch.utils.flop_counter: forward and backward of every phase), giving achieved TFLOP/s and, on
GPUs of known peak, MFU (model FLOPs utilisation against the dense bf16 tensor-core peak).

    python -m dgen.bench.train '{"who": "dgen", "input": "synthetic", "model": "dcgan", ...}'   # one
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# Dense bf16 tensor-core peaks, FLOP/s per GPU (vendor data sheets); matched on the device name.
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989.4e12), ("H200", 989.4e12), ("GH200", 989.4e12),
             ("A100", 312e12), ("L40S", 362e12), ("A10G", 70e12), ("L4", 121e12))


def peak_flops(device_name: str) -> float | None:
    for key, peak in PEAK_BF16:
        if key in device_name:
            return peak
    return None


# -- one measurement (runs in its own process) --------------------------------------------------------
def _config(spec: dict):
    from dgen.options import resolve

    overrides = {"model": spec["model"], "data": spec.get("data") or "digits", "batch_size": spec["batch_size"],
                 "image_size": spec["image_size"], "channels": spec["channels"], "tracker": "none", "fid": False,
                 "progress": False, "seed": 0}
    if spec.get("num_workers") is not None:
        overrides["num_workers"] = spec["num_workers"]
    if spec.get("mixed_precision"):
        overrides["mixed_precision"] = spec["mixed_precision"]
    if spec.get("compile"):
        overrides["compile"] = True
    if spec["model"] == "wgan-gp":  # the bench's WGAN-GP row is seed 003's MLPs (docs/performance.md)
        overrides["method"] = {"arch": "mlp"}
    return resolve(overrides, dataset="celeba")  # the CelebA-64 recipes: the models this bench stands in for


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_windows(step, device, window: int, windows: int, images_per_step: int, busy) -> tuple[list, list]:
    """(images/s per window, GPU busy % per window) after one warm-up window."""
    for _ in range(window):
        step()
    _sync(device)
    if busy is not None:
        busy.window()
    rates, utils = [], []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(window):
            step()
        _sync(device)
        rates.append(window * images_per_step / (time.perf_counter() - t0))
        if busy is not None:
            utils.append(busy.window())
    return rates, utils


def _synthetic(spec: dict) -> dict:
    g = torch.Generator().manual_seed(0)
    b, c, s = spec["batch_size"], spec["channels"], spec["image_size"]
    return {"image": torch.randint(0, 256, (b, c, s, s), dtype=torch.uint8, generator=g),
            "label": torch.randint(0, 10, (b,), generator=g)}


def measure(spec: dict) -> dict:
    from accelerate import Accelerator

    from dgen.engine import trainer
    from dgen.engine.gpu import BusySampler

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if spec["who"] == "dgen" and spec["input"] == "data":
        return {**_dgen_end_to_end(spec), "peak_memory_mb": _peak_memory_mb(device)}
    cfg = _config(spec)
    trainer.resolve_defaults(cfg, deepspeed=False)
    dgen = spec["who"] == "dgen"
    acc = Accelerator(cpu=device.type == "cpu", mixed_precision=cfg.mixed_precision if dgen else "no")
    step = _dgen_step(cfg, acc, spec) if dgen else _plain_step(cfg, spec, device)
    rates, utils = _timed_windows(step, device, spec["window"], spec["windows"], cfg.batch_size,
                                  BusySampler.start(device))
    out = {"images_per_s": statistics.median(rates), "windows": rates,
           "gpu_busy": statistics.median(utils) if utils and None not in utils else None,
           "mixed_precision": acc.mixed_precision, "num_workers": cfg.num_workers}
    if dgen:
        out["flops_per_image"] = _flops_per_image(step, cfg.batch_size)
    return {**out, "peak_memory_mb": _peak_memory_mb(device)}


def _spec_data(cfg):
    from dgen.methods.base import DataSpec

    return DataSpec("bench", cfg.image_size, cfg.channels, [str(i) for i in range(10)], None)


def _dgen_step(cfg, acc, spec: dict):
    """dgen's training step, as train() sets it up, on one synthetic batch already on the device."""
    from dgen.engine import trainer

    method, optimizers, base_lrs = trainer.setup_method(cfg, acc, _spec_data(cfg))
    batch = trainer.to_device(_synthetic(spec), acc.device, method.memory_format)
    steps = itertools.count()
    return lambda: trainer.train_step(acc, method, optimizers, base_lrs, [batch], next(steps), cfg)


def _plain_step(cfg, spec: dict, device):
    """The plain loop's step on dgen's networks: on one synthetic batch, or fed by ImageFolder."""
    from dgen.bench.plain import folder_loader, plain_step
    from dgen.data.stream import to_float
    from dgen.methods import get_method

    torch.manual_seed(0)
    nets = {n: m.to(device) for n, m in get_method(cfg.model)(cfg, _spec_data(cfg)).models.items()}
    one = plain_step(cfg.model, nets, cfg, device)
    if spec["input"] == "synthetic":
        real = to_float(_synthetic(spec)["image"]).to(device)
        return lambda: one(real)
    batches = _forever(folder_loader(Path(spec["files"]), cfg.channels, cfg.batch_size, cfg.num_workers))
    return lambda: one(next(batches)[0].to(device))


def _forever(loader):
    while True:
        yield from loader


def _dgen_end_to_end(spec: dict) -> dict:
    from dgen.engine.trainer import train

    k, n = spec["window"], spec["windows"]
    cfg = _config(spec)
    with tempfile.TemporaryDirectory(prefix="dgen-bench-") as tmp:
        steps = k * (n + 1)
        cfg.out, cfg.max_steps, cfg.log_every = str(Path(tmp) / "run"), steps, k
        cfg.sample_every = cfg.eval_every = cfg.ckpt_every = steps  # all after the last measured step
        cfg.keep_checkpoints = 1
        run = train(cfg)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    windows = [r for r in records if "images_per_s" in r][1:]  # the first window is the warm-up
    rates = [r["images_per_s"] for r in windows]
    utils = [r["gpu_busy"] for r in windows if "gpu_busy" in r]
    return {"images_per_s": statistics.median(rates), "windows": rates,
            "gpu_busy": statistics.median(utils) if utils else None,
            "mixed_precision": cfg.mixed_precision, "num_workers": cfg.num_workers}


def _flops_per_image(step, batch: int) -> float | None:
    """None where the counter cannot follow the step (its hooks refuse autograd.grad, e.g. WGAN-GP's penalty)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter:
            step()
    except RuntimeError:
        return None
    return counter.get_total_flops() / batch


def _peak_memory_mb(device) -> float:
    """Peak GPU memory allocated by tensors (CUDA), else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# -- the comparison ----------------------------------------------------------------------------------------
LABELS = {"dcgan": "DCGAN", "lsgan": "LSGAN", "wgan-gp": "WGAN-GP", "vae": "VAE"}


def run_subprocess(spec: dict) -> dict:
    """measure(spec) in a fresh interpreter; its result is the last stdout line."""
    proc = subprocess.run([sys.executable, "-m", "dgen.bench.train", json.dumps(spec)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise RuntimeError(f"bench measurement {spec['who']}/{spec['input']} of {spec['model']} failed:\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train_rows(models: list[str], *, data: str, files: str, image_size: int, channels: int, batch_size: int,
               window: int, windows: int, num_workers: int | None, compile: bool = False,
               peak: float | None = None, progress=print) -> list[dict]:
    rows = []
    for model in models:
        base = dict(model=model, image_size=image_size, channels=channels, batch_size=batch_size, window=window,
                    windows=windows, num_workers=num_workers, data=data, files=files, compile=compile)
        flops = None  # counted on dgen's step in the synthetic run: the same work per image in both inputs
        for inp in ("synthetic", "data"):
            got = {}
            for who in ("dgen", "plain"):
                progress(f"  {model} {who} {inp} ...")
                got[who] = run_subprocess({**base, "who": who, "input": inp})
                flops = flops or got[who].get("flops_per_image")  # dgen runs first
                achieved = flops * got[who]["images_per_s"] if flops else None
                got[who].update(tflops=achieved / 1e12 if achieved else None,
                                mfu=achieved / peak if achieved and peak else None)
            rows.append({"model": model, "name": f"{LABELS.get(model, model)}-{image_size}", "input": inp,
                         "batch_size": batch_size, "flops_per_image": flops, "dgen": got["dgen"], "plain": got["plain"],
                         "ratio": got["dgen"]["images_per_s"] / got["plain"]["images_per_s"]})
    return rows


def print_train_rows(rows: list[dict]) -> None:
    def pct(v):
        return f"{100 * v:.1f}%" if v is not None else "n/a"

    def busy(v):
        return f"{v:.0f}%" if v is not None else "n/a"

    print(f"{'model':<12}{'input':<11}{'dgen img/s':>11}{'plain img/s':>12}{'dgen/plain':>11}{'dgen MB':>9}{'plain MB':>9}"
          f"{'GPU busy':>10}{'TFLOP/s':>9}{'MFU':>7}   precision (dgen/plain)")
    for r in rows:
        d, p = r["dgen"], r["plain"]
        print(f"{r['name']:<12}{r['input']:<11}{d['images_per_s']:>11.1f}{p['images_per_s']:>12.1f}{r['ratio']:>10.2f}x"
              f"{d['peak_memory_mb']:>9.0f}{p['peak_memory_mb']:>9.0f}{busy(d.get('gpu_busy')) + '/' + busy(p.get('gpu_busy')):>10}"
              f"{d['tflops'] if d['tflops'] is not None else float('nan'):>9.3f}{pct(d['mfu']):>7}   {d['mixed_precision']}/{p['mixed_precision']}")


if __name__ == "__main__":
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(measure(json.loads(sys.argv[1]))))
