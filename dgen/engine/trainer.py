"""The training loop: one loop for every method, on one CPU or many GPUs and nodes.

    accelerate launch dgen/train.py --model vae                     # what `train(cfg)` runs
    accelerate launch --config_file launch/cpu-2proc.yaml dgen/train.py --model vae

Accelerate owns devices, DDP and mixed precision. Each step draws `grad_accum` micro-batches and
runs the method's phases in order (zero grads, forward under autocast, backward, clip, step). Progress
is counted in optimizer steps and images; ticks log metrics (averaged over the interval and all
ranks), draw fixed-noise samples, evaluate on the test split and checkpoint. SIGUSR1/SIGTERM stop
the run cleanly at the next step boundary with a checkpoint; `--resume` continues exactly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs, broadcast_object_list, set_seed
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from dgen.config import Config
from dgen.data.domains import DataPlan, PairedLoader, plan_data
from dgen.data.stream import eval_loader, to_float, train_loader
from dgen.engine.checkpoint import Checkpointer, latest_checkpoint
from dgen.engine.gpu import BusySampler
from dgen.engine.report import write_report
from dgen.engine.run import check_resumable, load_trained, new_run_name
from dgen.engine.signals import StopFlag, signal_name
from dgen.engine.tracking import Tracker
from dgen.errors import ConfigError, DgenError
from dgen.eval.images import save_grid
from dgen.methods import adaptation_models, get_method
from dgen.methods.base import DataSpec, Method
from dgen.rng import outside_the_step, tick_seed

log = logging.getLogger(__name__)


class TrainingDiverged(DgenError):
    pass


def train(cfg: Config) -> Path:
    """Train `cfg` to its last step (or to a stop signal); returns the run folder."""
    run = setup(cfg)
    acc, cfg, method, state = run.acc, run.cfg, run.method, run.state
    stop, vote = StopFlag().install(), _StopVote(acc)
    window, display = MetricWindow(run), Display(run)
    scores, progress = None, []  # sample-quality scores (set up at the first evaluation); collage rows
    keys = _KeyLog(run.run_dir, acc.process_index) if cfg.record_keys else None
    try:
        while state["step"] < cfg.max_steps:
            # -- one optimizer step of every phase due --------------------------------------------------
            micro = [run.batches.next() for _ in range(cfg.grad_accum)]
            if keys is not None:
                keys.write(state["step"] + 1, micro)
            window.add(train_step(acc, method, run.optimizers, run.base_lrs, micro, state["step"], cfg))
            state.update(step=state["step"] + 1, images=state["images"] + run.step_images, **run.batches.position())
            step, last = state["step"], state["step"] == cfg.max_steps
            display.advance()
            stopping = vote(stop.signum or 0)  # the signal's number, agreed by every rank (0: none)

            # -- once per tick: the metric line (its reduction is also the NaN guard before a checkpoint) -
            if step % cfg.log_every == 0 or last or stopping or step % cfg.ckpt_every == 0:
                values = window.close()
                run.tracker.log(values, step)
                display.show(step, values)

            # -- samples and evaluation, on generators of their own (training's RNG is left as it was) --
            best = False
            sampling = method.generative and (step % cfg.sample_every == 0 or last)
            evaluating = run.plan.eval_split and cfg.eval_every > 0 and (step % cfg.eval_every == 0 or last)
            if sampling or evaluating:
                try:
                    with window.outside("time/eval_s"), outside_the_step(tick_seed(cfg.seed, step, acc.process_index),
                                                                         acc.device):
                        if sampling:
                            progress.append((step, _samples(run, step)))
                        if evaluating:
                            scores, best = _evaluate_all(run, scores, step)
                except Exception as e:
                    raise _kept_progress(run, e, "sampling or evaluation") from None

            # -- checkpoint: on schedule, at the end, when stopping, and at a new best FID ------------
            if step % cfg.ckpt_every == 0 or last or stopping or best:
                with window.outside("time/checkpoint_s"):
                    run.checkpoints.save(state, list(method.models.values()))
            if stopping:
                where = "" if stop.signum else f" (received by another rank; this is rank {acc.process_index})"
                log.warning("%s%s: checkpointed at step %d; continue with --resume --out %s",
                            signal_name(stopping), where, step, run.run_dir)
                break
        else:
            try:
                with outside_the_step(tick_seed(cfg.seed, state["step"] + 1, acc.process_index), acc.device):
                    write_report(acc, method, cfg, run.run_dir, run.plan.eval,
                                 run.plan.eval_split if cfg.eval_every > 0 else None, run.fixed, run.tracker,
                                 progress, run.plan.source, scores.notes if scores is not None else None)
            except Exception as e:
                raise _kept_progress(run, e, "the report", final=True) from None
    finally:
        if keys is not None:
            keys.close()
        run.batches.close()  # loader workers stop here, on success and on every error path
        display.close()
        stop.restore()
        window.close_busy()
        run.tracker.close()
    return run.run_dir


def _kept_progress(run: "Run", error: Exception, what: str, final: bool = False) -> DgenError:
    """An evaluation, sampling or report step failed: checkpoint the training state of this step first (one
    process: its collectives are its own), so `--resume` loses nothing, and say what to do."""
    step = run.state["step"]
    if final:
        kept = f"training finished and step {step} is checkpointed; `dgen eval --run {run.run_dir}` scores it again"
    elif run.acc.num_processes > 1:
        done = [int(p.name.split("-")[1]) for p in (run.run_dir / "checkpoints").glob("step-*")]
        kept = (f"with {run.acc.num_processes} processes the run cannot checkpoint alone; the last checkpoint is "
                f"step {max(done) if done else 'none'}")
    else:
        try:
            run.checkpoints.save(run.state, list(run.method.models.values()))
            kept = f"the training state of step {step} is checkpointed"
        except Exception as e2:
            kept = f"and the checkpoint of step {step} could not be written either ({e2})"
    why = f"{error}" if isinstance(error, DgenError) else f"{type(error).__name__}: {error}"
    return DgenError(f"{what} at step {step} failed: {why}; {kept}. Fix the cause (e.g. restore the shard) and "
                     f"continue with --resume --out {run.run_dir}, or train without it: --no-fid (FID), "
                     "--eval-every 0 (no test-split evaluation)")


class _KeyLog:
    """--record-keys: one JSON line per step and rank, {"step", "keys"[, "target_keys"]}, in RUN/keys/rank-R.jsonl.
    Steps trained after the last checkpoint of a run that was stopped appear again after its resume: the last
    line of a step is the one that counts."""

    def __init__(self, run_dir: Path, rank: int):
        (run_dir / "keys").mkdir(parents=True, exist_ok=True)
        self.file = open(run_dir / "keys" / f"rank-{rank}.jsonl", "a")

    def write(self, step: int, micro: list[dict]) -> None:
        row = {"step": step, "keys": [k for b in micro for k in b["key"]]}
        if "target_key" in micro[0]:
            row["target_keys"] = [k for b in micro for k in b["target_key"]]
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


@dataclass
class Run:
    """What the loop works with, set up once by `setup`; `cfg` is final (frozen) from here on."""
    cfg: Config
    acc: Accelerator
    run_dir: Path
    plan: DataPlan
    method: Method
    optimizers: dict
    base_lrs: dict  # phase -> its optimizer's learning rate per parameter group, before the schedule's factor
    checkpoints: Checkpointer
    state: dict  # step, epoch, batch, images, skipped, ...: what a checkpoint's trainer_state.json holds
    tracker: Tracker
    batches: "_Batches"
    fixed: torch.Tensor | None  # the fixed noise of the sample grids (generative methods)
    step_images: int  # images per optimizer step over all ranks


def setup(cfg: Config) -> Run:
    """Accelerator, run folder, data plan, method, optimizers, checkpoint (when resuming), tracker and
    loaders, in that order; settings left open (precision, workers, image size) are resolved into `cfg`,
    which is saved to RUN_DIR/config.json and then frozen."""
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"  # set by the launcher
    resolve_defaults(cfg, deepspeed)
    acc = Accelerator(cpu=not torch.cuda.is_available() and not deepspeed, mixed_precision=cfg.mixed_precision,
                      log_with="wandb" if cfg.tracker == "wandb" else None, step_scheduler_with_optimizer=False,
                      kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.dist_timeout))])
    cfg.mixed_precision = acc.mixed_precision  # the effective setting (flag, else the launcher's)
    if deepspeed and acc.distributed_type != DistributedType.DEEPSPEED:
        raise ConfigError(f"the launch config asks for DeepSpeed but Accelerate set up {acc.distributed_type}")
    log.info("%s on %s, %d process(es), precision %s", acc.distributed_type, acc.device, acc.num_processes,
             acc.mixed_precision)
    run_dir, ckpt = _run_dir(cfg, acc)
    with acc.main_process_first():  # rank 0 shards embedded data on first use; the others then find it
        plan = plan_data(cfg.data, cfg.shards_root, get_method(cfg.model).domains, cfg.model, cfg.image_size,
                         cfg.channels, pair_models=adaptation_models())
    cfg.image_size, cfg.channels = plan.image_size, plan.channels
    kept = _keep_global_batch(acc, cfg, json.loads((ckpt / "trainer_state.json").read_text())) if ckpt else False
    cfg.freeze()
    if ckpt is not None:
        for change in check_resumable(cfg, run_dir):
            if not (kept and change.startswith("batch_size:")):
                log.warning("resuming with a changed setting (the run will not match an uninterrupted one): %s",
                            change)
    if acc.is_main_process:
        (run_dir / "images").mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.json")

    m = plan.manifest
    set_seed(cfg.seed)  # identical initial weights on every rank
    method, optimizers, base_lrs = setup_method(cfg, acc, DataSpec(m.dataset, cfg.image_size, cfg.channels, m.classes,
                                                                   m.attributes), plan.train)
    checkpoints = Checkpointer(acc, run_dir, cfg.keep_checkpoints)
    state = {"step": 0, "epoch": 0, "batch": 0, "images": 0, "skipped": [0, 0]}  # skipped: samples, shards (all ranks)
    if ckpt is not None:
        state = checkpoints.load(ckpt)  # its optimizers' learning rates are overwritten at each step: lr_at(step)
        log.info("resumed %s at step %d", ckpt, state["step"])
        state.setdefault("skipped", [0, 0])  # checkpoints from before the count
    else:
        set_seed(cfg.seed + acc.process_index)  # different sampling noise per rank from here on
    tracker = Tracker(acc, cfg, run_dir, resume_step=state["step"] if ckpt is not None else None)

    world = acc.num_processes
    if ckpt is not None and acc.process_index >= state.get("world_size", world):  # no random_states_<rank>.pkl
        set_seed(cfg.seed + acc.process_index + 1_000_003 * state["step"])
    loader = _train_loader(plan, cfg, acc.process_index, world, acc.device)
    if ckpt is not None and state["batch"] > len(loader):  # another global batch: another epoch length
        state["batch"] = len(loader)
    state.update(world_size=world, num_workers=cfg.num_workers, epoch_batches=len(loader),
                 global_batch=cfg.batch_size * world)  # for the next resume
    batches = _Batches(loader, state["epoch"], state["batch"], acc.device, method.memory_format)
    fixed = method.noise(64, torch.Generator().manual_seed(cfg.seed)).to(acc.device) if method.generative else None
    return Run(cfg, acc, run_dir, plan, method, optimizers, base_lrs, checkpoints, state, tracker, batches, fixed,
               cfg.batch_size * cfg.grad_accum * world)


class MetricWindow:
    """The loss terms and the time since the last metric line: averaged over the window and all ranks when the
    line is written, with throughput counting training time only (time spent inside `outside(key)`, e.g.
    evaluation or checkpoints, is logged as `key` instead)."""

    def __init__(self, run: Run):
        self.run = run
        self.busy = BusySampler.start(run.acc.device)  # GPU-Util % per window, CUDA only
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.steps, self.t0 = 0, time.perf_counter()
        self.away = {"time/eval_s": 0.0, "time/checkpoint_s": 0.0}

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for k, v in terms.items():
            self.sums[k], self.counts[k] = self.sums.get(k, 0) + v, self.counts.get(k, 0) + 1
        self.steps += 1

    @contextlib.contextmanager
    def outside(self, key: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.away[key] += time.perf_counter() - t

    def close(self) -> dict[str, float]:
        """The window's metric line (the same on every rank), and a new window."""
        run, acc, state = self.run, self.run.acc, self.run.state
        values = _reduce(acc, self.sums, self.counts, state["step"])
        dt = time.perf_counter() - self.t0 - sum(self.away.values())  # training time only
        values.update(lr=run.optimizers[run.method.phases[0]].param_groups[0]["lr"], images=state["images"],
                      images_per_s=self.steps * run.step_images / dt, **self.away)
        skipped = run.batches.take_skipped()  # this rank's, since the last line
        if acc.num_processes > 1:
            skipped = acc.reduce(torch.tensor(skipped, device=acc.device), "sum").tolist()
        state["skipped"] = [a + b for a, b in zip(state["skipped"], skipped)]
        values.update({"data/skipped_samples": state["skipped"][0], "data/skipped_shards": state["skipped"][1]})
        if self.busy is not None and (util := self.busy.window()) is not None:
            values["gpu_busy"] = util  # rank 0's GPU
        self._reset()
        return values

    def close_busy(self) -> None:
        if self.busy is not None:
            self.busy.close()


class Display:
    """Rank 0's progress: a bar on a terminal (dgen's messages print above it); where stderr is a file (Slurm
    logs, CI), one line per metric line instead."""

    def __init__(self, run: Run):
        cfg, main = run.cfg, run.acc.is_main_process
        self.terminal = main and cfg.progress and sys.stderr.isatty()
        self.lines = main and cfg.progress and not self.terminal
        self.max_steps, self.terms = cfg.max_steps, ("loss", *run.method.loss_terms)
        self.bar = tqdm(total=cfg.max_steps, initial=run.state["step"], unit="step", dynamic_ncols=True,
                        disable=not self.terminal)
        self.redirect = logging_redirect_tqdm() if self.terminal else contextlib.nullcontext()
        self.redirect.__enter__()

    def advance(self) -> None:
        self.bar.update()

    def show(self, step: int, values: dict) -> None:
        shown = [k for k in self.terms if k in values][:2]
        self.bar.set_postfix({k: f"{values[k]:.4g}" for k in shown} | {"img_s": f"{values['images_per_s']:.0f}"})
        if self.lines:
            log.info("step %d/%d: %s, %.0f images/s", step, self.max_steps,
                     ", ".join(f"{k} {values[k]:.4g}" for k in shown), values["images_per_s"])

    def close(self) -> None:
        self.bar.close()
        self.redirect.__exit__(None, None, None)


def _evaluate_all(run: Run, scores, step: int):
    """Test metrics (and the source domain's, for adaptation), FID/KID for generative methods; logged.
    Returns the sample-quality scorer (built at the first call) and whether this is the best FID so far."""
    acc, cfg, method, plan = run.acc, run.cfg, run.method, run.plan
    metrics = _evaluate(acc, method, plan.eval, plan.eval_split, cfg)
    if plan.adaptation:  # how the classifier does on its own source domain, for comparison
        metrics.update(_evaluate(acc, method, plan.source, "test", cfg, prefix="source_test/"))
    best = False
    if method.generative and cfg.fid:
        from dgen.engine.scores import SampleScores  # here: importing torchmetrics takes seconds

        scores = scores or SampleScores(acc, method, plan.train, plan.eval_split, cfg)
        metrics.update(scores(final=step == cfg.max_steps))
        if f"test/fid_{scores.name}" in metrics:
            best = run.checkpoints.is_best(run.state, metrics[f"test/fid_{scores.name}"], step)
    if metrics:
        run.tracker.log(metrics, step)
    return scores, best


def _keep_global_batch(acc, cfg: Config, state: dict) -> bool:
    """The stream is a function of the global position (epoch, batch) and the global batch (batch size x
    processes), so a resume continues exactly on any number of loader workers, and on another number of
    processes when the global batch stays the same: with the checkpoint's --batch-size, the per-process batch is
    changed to keep it (a warning says so; returns True). `state`: the checkpoint's trainer_state.json."""
    world, old_world = acc.num_processes, state.get("world_size", acc.num_processes)
    old_global = state.get("global_batch")
    if old_global is None:
        if acc.is_main_process:
            log.warning("this checkpoint predates dgen's global sample order: weights, optimizer state and step %d "
                        "continue, the data stream at its epoch %d, batch %d, with other samples than before",
                        state["step"], state["epoch"], state["batch"])
        return False
    if cfg.batch_size * world == old_global:
        return False
    if world != old_world and cfg.batch_size * old_world == old_global and old_global % world == 0:
        cfg.batch_size = old_global // world
        if acc.is_main_process:
            log.warning("resuming a checkpoint of %d process(es) on %d: %d images per process (was %d) keep the "
                        "global batch of %d, so the run continues exactly as an uninterrupted one would",
                        old_world, world, cfg.batch_size, old_global // old_world, old_global)
        return True
    if acc.is_main_process:
        log.warning("the global batch changes from %d to %d images (%d process(es) x %d): the stream continues at "
                    "its global position with batches of the new size, other samples than an uninterrupted run's",
                    old_global, cfg.batch_size * world, world, cfg.batch_size)
    return False


def resolve_defaults(cfg: Config, deepspeed: bool) -> None:
    """Unset knobs, resolved (and saved in config.json, so a resume replays them): bf16 autocast on a GPU that
    has it, unless the launcher chose a precision; loader workers by the CPUs each GPU gets. On CUDA also
    the process-wide backend choices: cuDNN autotuning and TF32."""
    cuda = torch.cuda.is_available()
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if cfg.mixed_precision is None and launcher == "no" and cuda and not deepspeed and torch.cuda.is_bf16_supported():
        cfg.mixed_precision = "bf16"
    if cfg.num_workers is None:
        per_gpu = (os.cpu_count() or 2) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        cfg.num_workers = max(1, min(8, per_gpu - 1)) if cuda else 2
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest convolution once
        torch.set_float32_matmul_precision("high")  # TF32 for what runs in fp32


def build_method(cfg: Config, spec: DataSpec, location: str = ""):
    """The method, its networks built for the data and initialised (e.g. --init-from): every refusal a method
    makes happens here, so `dry_run` meets the same ones as a real start."""
    try:
        method = get_method(cfg.model)(cfg, spec)
    except ValueError as e:  # the network cannot take this data (size, channels)
        raise ConfigError(f"{cfg.model} cannot be built for {cfg.image_size}x{cfg.image_size}x{cfg.channels} "
                          f"images from {location or spec.dataset}: {e}") from None
    method.initialise(load_trained)  # e.g. --init-from; a resumed run's checkpoint then replaces these weights
    return method


def dry_run(cfg: Config) -> str:
    """Everything a start checks, on the CPU, without an Accelerator, training or reading more than manifests:
    the data plan, the stream (a global batch the split can fill), the method with its networks and optimizers,
    DeepSpeed's limits and a resume's compatibility. Returns the summary line; raises what a start would."""
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    resolve_defaults(cfg, deepspeed)
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    plan = plan_data(cfg.data, cfg.shards_root, get_method(cfg.model).domains, cfg.model, cfg.image_size,
                     cfg.channels, pair_models=adaptation_models())
    cfg.image_size, cfg.channels = plan.image_size, plan.channels
    if cfg.out and cfg.resume:
        ckpt = latest_checkpoint(Path(cfg.out))
        if cfg.resume == "latest" and ckpt is None:
            raise ConfigError(f"--resume: {cfg.out} has no checkpoint to resume from")
        if ckpt is not None:
            check_resumable(cfg, Path(cfg.out))
    elif cfg.out and cfg.resume is None and latest_checkpoint(Path(cfg.out)) is not None:
        raise ConfigError(f"{cfg.out} already holds a run with checkpoints: pass --resume to continue it, "
                          "or another --out for a new run")
    _train_loader(plan, cfg, rank, world, torch.device("cpu"))  # manifests only: no shard is read
    m = plan.manifest
    method = build_method(cfg, DataSpec(m.dataset, cfg.image_size, cfg.channels, m.classes, m.attributes),
                          plan.train)
    if deepspeed:
        _deepspeed_refusal(cfg, method)
    method.optimizers()
    location = f"{plan.source}:{plan.eval}" if plan.adaptation else plan.train
    return (f"dry run: {cfg.model} on {location}, {cfg.max_steps} steps of batch {cfg.batch_size} per process, "
            f"run folder {cfg.out or '(new, timestamped)'}, resume {cfg.resume or 'no'}")


def setup_method(cfg: Config, acc, spec: DataSpec, location: str = "") -> tuple:
    """The method with its networks and optimizers prepared by Accelerate (devices, DDP, DeepSpeed), in the
    fast layout: channels-last for convolutional networks, optionally torch.compile; and each optimizer's
    base learning rates (per parameter group), which `lr_at` scales by the step."""
    method = build_method(cfg, spec, location)
    if acc.distributed_type == DistributedType.DEEPSPEED:
        _configure_deepspeed(acc, cfg, method)
    # DeepSpeed flattens parameters into byte buffers, which needs the default layout
    method.memory_format = (torch.channels_last if channels_last(method) and acc.distributed_type != DistributedType.DEEPSPEED
                            else torch.contiguous_format)
    for m in method.models.values():
        m.to(memory_format=method.memory_format)
    names, phases = method.trained(), list(method.phases)
    optimizers = method.optimizers()
    base_lrs = {p: [g["lr"] for g in optimizers[p].param_groups] for p in phases}  # this run's, also after a resume
    prepared = acc.prepare(*(method.models[n] for n in names), *(optimizers[p] for p in phases))
    averages = {n: method.models[n].to(acc.device) for n in method.averages}
    for m in averages.values():  # saved as custom_checkpoint_<i>.pkl, in this order (see dgen.engine.run.load_trained)
        acc.register_for_checkpointing(m)
    models = dict(zip(names, prepared[: len(names)]))
    if cfg.compile:  # after DDP wrapping (its graph breaks at bucket boundaries); checkpoints keep plain names
        models = {n: torch.compile(m) for n, m in models.items()}
    method.prepared({**models, **averages}, acc, lambda m: bare_network(acc, m))
    optimizers = dict(zip(phases, prepared[len(names): len(names) + len(phases)]))
    return method, optimizers, base_lrs


def bare_network(acc, model):
    """The network inside DDP / DeepSpeed / torch.compile wrappers, for sampling and reports. Not
    Accelerate's default unwrap: keeping the compile wrapper, it re-points that wrapper (the training
    model) at the bare network, silently dropping DDP from training on the rank that asked."""
    return acc.unwrap_model(model, keep_torch_compile=False)


def channels_last(method) -> bool:
    """Convolutional methods run NHWC: cuDNN's tensor cores and oneDNN on CPU both skip layout transposes
    (measured on CPU: DCGAN-64 steps +10-20%, VAE-64 +25-35%; docs/performance.md)."""
    return any(isinstance(m, torch.nn.modules.conv._ConvNd) for net in method.models.values() for m in net.modules())


def train_step(acc, method, optimizers: dict, base_lrs: dict, micro: list[dict], step: int,
               cfg: Config) -> dict[str, torch.Tensor]:
    """One optimizer step of every phase due at `step` (the steps done before it), at the learning rate
    `lr_at` gives for it; the loss terms, detached, on the device."""
    method.step = step
    factor = lr_at(cfg, step)
    terms: dict[str, torch.Tensor] = {}
    for phase in method.phases_at(step):
        for group, base in zip(optimizers[phase].param_groups, base_lrs[phase]):
            group["lr"] = base * factor
        terms.update(_run_phase(acc, method, phase, optimizers[phase], micro, cfg.grad_clip))
    return terms


def _deepspeed_refusal(cfg: Config, method) -> None:
    trained = method.trained()
    if len(trained) > 1:
        raise ConfigError(f"{cfg.model} trains {len(trained)} networks ({', '.join(trained)}); under "
                          "DeepSpeed Accelerate drives one engine per Accelerator, which holds one network (for a GAN, "
                          "one engine for both would break ZeRO-2's gradient partitions: G's step back-propagates "
                          "through D). Train it with DDP (any non-DeepSpeed launch config) instead")
    if cfg.grad_accum != 1:
        raise ConfigError("under DeepSpeed set gradient_accumulation_steps in the DeepSpeed JSON, not --grad-accum")


def _configure_deepspeed(acc, cfg: Config, method) -> None:
    """DeepSpeed runs one engine per Accelerator: single-model methods only, sizes set explicitly
    (dgen does not hand its loaders to Accelerate, so DeepSpeed's "auto" batch sizes are filled here)."""
    _deepspeed_refusal(cfg, method)
    ds = acc.state.deepspeed_plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = cfg.batch_size
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else acc.num_processes
    ds["train_batch_size"] = cfg.batch_size * world * ds.get("gradient_accumulation_steps", 1)
    ds["gradient_clipping"] = cfg.grad_clip


def _run_phase(acc, method, phase, optimizer, micro, clip) -> dict[str, torch.Tensor]:
    """One optimizer step of `phase` over the micro-batches; returns its detached loss terms (summed)."""
    optimizer.zero_grad(set_to_none=True)
    models = [method.models[n] for n in method.phase_models(phase)]
    terms: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(micro):
        sync = i == len(micro) - 1  # DDP reduces gradients once, on the last micro-batch
        with contextlib.ExitStack() as stack:
            if not sync:
                for m in models:
                    stack.enter_context(acc.no_sync(m))
            with acc.autocast():
                out = method.loss(phase, batch)
            acc.backward(out["loss"] / len(micro))
        for k, v in out.items():
            if k == "loss" and not method.logs_loss:
                continue
            terms[k] = terms.get(k, 0) + v.detach().float() / len(micro)
    if clip > 0 and acc.distributed_type != DistributedType.DEEPSPEED:  # DeepSpeed clips in its engine
        acc.clip_grad_norm_([p for m in models for p in m.parameters()], clip)
    optimizer.step()
    method.after_step(phase)
    return terms


def _reduce(acc, sums: dict, counts: dict, step: int) -> dict[str, float]:
    """Means over the window and all ranks, as plain floats (the only host sync in the loop)."""
    keys = sorted(sums)
    values = acc.reduce(torch.stack([sums[k] / counts[k] for k in keys]), "mean").tolist()
    result = dict(zip(keys, values))
    bad = [k for k, v in result.items() if not math.isfinite(v)]
    if bad:
        raise TrainingDiverged(f"non-finite {', '.join(bad)} by step {step}: training diverged "
                               "(lower --lr, set --grad-clip, or use --mixed-precision no); the last checkpoint "
                               "was written before this happened and is intact")
    return result


class _StopVote:
    """Which stop signal any rank received (its number; 0 for none), agreed by all ranks without stalling
    the step: each step all-reduces its local signal number (max) and reads the previous step's result,
    which the device finished long ago (no host sync on the current step's work). All ranks stop at the
    same step, one after the signal, and every rank knows which signal it was."""

    def __init__(self, acc):
        self.acc, self.pending = acc, None

    def __call__(self, signum: int) -> int:
        acc = self.acc
        if acc.num_processes == 1:
            return signum
        vote = torch.tensor(float(signum), device=acc.device)
        torch.distributed.all_reduce(vote, op=torch.distributed.ReduceOp.MAX)
        done = None
        if acc.device.type == "cuda":
            host = torch.empty((), pin_memory=True)
            host.copy_(vote, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            vote = host
        previous, self.pending = self.pending, (vote, done)
        if previous is None:
            return 0
        if previous[1] is not None:
            previous[1].synchronize()
        return int(previous[0].item())


@torch.no_grad()
def _evaluate(acc, method, location, split, cfg, prefix: str = "test/") -> dict[str, float]:
    """Metrics over the whole evaluation split: per-rank sums, added over ranks once at the end."""
    loader = eval_loader(location, split, batch_size=cfg.batch_size, image_size=cfg.image_size,
                         channels=cfg.channels, rank=acc.process_index, world_size=acc.num_processes,
                         verify=cfg.verify_shards)
    totals, count = {}, torch.zeros((), device=acc.device)
    for batch in loader:
        batch = to_device(batch, acc.device)
        with acc.autocast():
            for k, v in method.eval_sums(batch).items():
                totals[k] = totals.get(k, 0) + v.float()
        count += len(batch["image"])
    keys = sorted(totals)
    if not keys:
        return {}
    summed = acc.reduce(torch.stack([totals[k] for k in keys] + [count]), "sum").tolist()
    return method.finish_eval({f"{prefix}{k}": v / summed[-1] for k, v in zip(keys, summed[:-1])}, prefix)


def _train_loader(plan, cfg: Config, rank: int, world: int, device):
    """The training stream: one dataset, or a labelled source zipped with an unlabelled target."""
    kw = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, image_size=cfg.image_size, channels=cfg.channels,
              lanes=cfg.shuffle_lanes, rank=rank, world_size=world, pin_memory=device.type == "cuda",
              uint8=True, verify=cfg.verify_shards)
    loader = train_loader(plan.train, "train", seed=cfg.seed, **kw)
    if plan.target is None:
        return loader
    # The target's own seed stream; its epoch has the source's length, and its labels are never decoded.
    target = train_loader(plan.target, "train", seed=cfg.seed + 1_000_003, epoch_batches=len(loader), labels=False, **kw)
    return PairedLoader(loader, target)


def _samples(run: Run, step: int):
    """Save a grid from the fixed noise (main process); returns its first 8 images for the collage."""
    if run.acc.is_main_process:
        images = run.method.sample(run.fixed)
        path = save_grid(images, run.run_dir / "images" / "samples" / f"step-{step:08d}.png")
        run.tracker.images({"samples": path}, step)
        return images[:8].float().cpu()
    return None


def lr_at(cfg: Config, step: int) -> float:
    """The learning-rate factor at `step` (steps done), a function of the step alone: nothing to checkpoint,
    and a resume (with another --lr or --max-steps) is simply at its step of this run's schedule."""
    p = min(step, cfg.max_steps) / cfg.max_steps
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    if cfg.lr_schedule == "dann":  # Ganin et al.: lr / (1 + 10 p)^0.75
        return (1 + 10 * p) ** -0.75
    return 1.0


def _run_dir(cfg: Config, acc) -> tuple[Path, Path | None]:
    """The run folder (the same on every rank) and the checkpoint to resume from, if any."""
    name = [cfg.out or new_run_name(cfg)]
    broadcast_object_list(name)  # a timestamped default name must not differ between ranks
    run_dir = Path(name[0])
    cfg.out = str(run_dir)
    ckpt = latest_checkpoint(run_dir) if cfg.resume else None
    if cfg.resume == "latest" and ckpt is None:
        raise ConfigError(f"--resume: {run_dir} has no checkpoint to resume from")
    if cfg.resume is None and latest_checkpoint(run_dir) is not None:
        raise ConfigError(f"{run_dir} already holds a run with checkpoints: pass --resume to continue it, "
                          "or another --out for a new run")
    return run_dir, ckpt


class _Batches:
    """Batches on the device, across epochs; remembers the stream position for checkpoints."""

    def __init__(self, loader, epoch: int, batch: int, device, memory_format=torch.contiguous_format):
        self.loader, self.epoch, self.batch, self.device = loader, epoch, batch, device
        self.memory_format = memory_format
        self.skipped = [0, 0]  # bad samples and shards the stream skipped since take_skipped(), counted on the host
        loader.set_epoch(epoch, start_batch=batch)
        self.it = iter(loader)

    def next(self) -> dict:
        try:
            b = next(self.it)
        except StopIteration:
            self.epoch, self.batch = self.epoch + 1, 0
            self.loader.set_epoch(self.epoch)
            self.it = iter(self.loader)
            b = next(self.it)
        self.batch += 1
        self.skipped = [a + int(n) for a, n in zip(self.skipped, b.pop("skipped"))]  # a CPU tensor: no device sync
        return to_device(b, self.device, self.memory_format)

    def take_skipped(self) -> list[int]:
        taken, self.skipped = self.skipped, [0, 0]
        return taken

    def position(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def close(self) -> None:
        self.it = None
        self.loader.close()


def to_device(batch: dict, device, memory_format=torch.contiguous_format) -> dict:
    """The batch on the device; uint8 images (the training stream's) become float in [-1, 1] there."""
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            v = v.to(device, non_blocking=True)
            if v.dtype == torch.uint8:
                v = to_float(v).contiguous(memory_format=memory_format)
        out[k] = v
    return out
