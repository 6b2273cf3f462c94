"""The training engine end to end, in real processes: a short run with its outputs and W&B files,
exact resume, a signal mid-run, and bad input (several processes: test_train_processes.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).parents[1]
TRAIN = ROOT / "dgen" / "train.py"
FAST = ["--batch-size", "16", "--num-workers", "0", "--tracker", "none", "--no-fid", "--log-every", "1", "--sample-every", "1000",
        "--eval-every", "1000"]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "WANDB_SILENT": "true"}


def train(tmp_path, *args, check=True, timeout=300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(TRAIN), "--shards-root", str(tmp_path / "shards"), *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(), cwd=tmp_path)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses(run: Path) -> list[tuple]:
    """Per-step training numbers, without wall-clock ones."""
    return [(r["step"], r["loss"], r["recon"], r["kl"]) for r in rows(run) if "loss" in r]


def weights(run: Path) -> dict:
    ckpt = sorted((run / "checkpoints").glob("step-*"))[-1]
    return load_file(ckpt / "model.safetensors")


@pytest.mark.slow
def test_short_run_outputs_wandb_and_sampling(tmp_path):
    run = tmp_path / "run"
    train(tmp_path, "--model", "vae", "--out", run, "--max-steps", 40, "--batch-size", 32, "--log-every", 5,
          "--sample-every", 20, "--eval-every", 20, "--num-workers", 1, "--tracker", "wandb", "--no-fid",
          "--wandb-tags", "a,b", "--wandb-job-type", "train")
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["model"], cfg["image_size"], cfg["channels"], cfg["method"]["latent_dim"]) == ("vae", 32, 1, 16)
    train_rows = [r for r in rows(run) if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(5, 41, 5))
    assert all({"loss", "recon", "kl", "images", "lr", "images_per_s"} <= set(r) for r in train_rows)
    assert train_rows[-1]["loss"] < 0.6 * train_rows[0]["loss"]  # the loss goes down
    test_rows = [r for r in rows(run) if "test/loss" in r]
    assert [r["step"] for r in test_rows] == [20, 40]
    for name in ("samples.png", "curves.png", "reconstructions.png", "variations.png", "traversal.png", "tsne.png",
                 "samples/step-00000020.png", "progress.png"):
        assert (run / "images" / name).stat().st_size > 1000, name
    assert "test/mse" in (run / "report.md").read_text()
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000040"]

    # W&B ran offline by itself and its run file holds the logged metrics
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    wandb = Path(sys.executable).parent / "wandb"
    out = subprocess.run([str(wandb), "leet", "inspect", "--json", str(files[0])], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    history = [json.loads(line) for line in out.stdout.splitlines() if '"history"' in line]
    logged = json.dumps(history)
    assert len(history) >= len(train_rows) and '"loss"' in logged and '"test/mse"' in logged
    header = next(json.loads(line)["run"] for line in out.stdout.splitlines() if '"type":"run"' in line)
    run_id = (run / "wandb-run-id").read_text().strip()
    assert (header["run_id"], header["run_group"], header["tags"], header["job_type"]) == \
        (run_id, "vae digits", ["a", "b"], "train")
    summary = subprocess.run([str(wandb), "leet", "inspect", "--summary", str(run / "wandb")], capture_output=True,
                             text=True, timeout=120, stdin=subprocess.DEVNULL)  # the README's command, no terminal
    assert summary.returncode == 0 and run_id in summary.stdout and "test/mse" in summary.stdout, summary.stderr

    # a resumed run continues the same W&B run (offline: a second run file with the same id)
    train(tmp_path, "--out", run, "--resume", "--max-steps", 42)
    files = sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2 and all(f.stem == f"run-{run_id}" for f in files)

    # dgen sample reads the run back
    done = subprocess.run([sys.executable, "-m", "dgen", "sample", "--run", str(run), "--n", "16"], env=env(),
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    seed = int(re.search(r"\(seed (\d+);", done.stdout).group(1))  # a fresh seed each time, printed
    first = run / "images" / f"sampled-seed{seed}.png"
    again = subprocess.run([sys.executable, "-m", "dgen", "sample", "--run", str(run), "--n", "16", "--seed", str(seed),
                            "--out", str(tmp_path / "again.png")], env=env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and first.read_bytes() == (tmp_path / "again.png").read_bytes()  # --seed reproduces


@pytest.mark.slow
def test_resume_is_exact_and_evaluation_never_changes_training(tmp_path):
    """20 straight steps = 10 + a resume to 20 (the changed --max-steps changes nothing at a constant learning
    rate) = 20 steps without evaluation. The straight run evaluates (loss, fixed-noise samples, FID) every 7 steps
    with a feature classifier it trains itself, the resumed one with the cached classifier, through loaders with
    2 workers: none of it may touch the training step's randomness."""
    common = ["--model", "vae", "--seed", 3, *FAST, "--num-workers", 2, "--ckpt-every", 10]
    evals = ["--eval-every", 7, "--sample-every", 7, "--fid", "--fid-classifier-steps", 20, "--fid-samples", 64]
    cache = tmp_path / "shards" / "digits" / ".dgen-cache"
    train(tmp_path, *common, *evals, "--out", tmp_path / "straight", "--max-steps", 20)
    assert len(list(cache.glob("classifier-*.pt"))) == 1  # trained by the straight run, loaded by the next
    train(tmp_path, *common, *evals, "--out", tmp_path / "resumed", "--max-steps", 10)
    assert max(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()) == "step-00000010"
    train(tmp_path, "--out", tmp_path / "resumed", "--resume", "--max-steps", 20)
    train(tmp_path, *common, "--out", tmp_path / "quiet", "--max-steps", 20)
    fids = [r["step"] for r in rows(tmp_path / "straight") if "test/fid_classifier" in r]
    assert fids == [7, 14, 20] and [r["step"] for r in rows(tmp_path / "resumed") if "test/fid_classifier" in r] == \
        [7, 10, 14, 20]
    straight, resumed, quiet = (losses(tmp_path / run) for run in ("straight", "resumed", "quiet"))
    assert [s for s, *_ in resumed] == list(range(1, 21))  # every step once, none twice
    assert resumed == straight == quiet
    a, b, c = (weights(tmp_path / run) for run in ("straight", "resumed", "quiet"))
    assert a.keys() == b.keys() == c.keys() and all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)


@pytest.mark.slow
def test_signal_checkpoints_and_exits_cleanly(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, str(TRAIN), "--shards-root", str(tmp_path / "shards"), "--model", "vae", "--out", str(run),
           "--max-steps", "100000", *FAST, "--num-workers", "2", "--ckpt-every", "100000"]
    proc = subprocess.Popen(cmd, env=env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not ((run / "metrics.jsonl").exists() and len(rows(run)) >= 3):
            time.sleep(0.2)
        proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "SIGUSR1: checkpointed at step" in err
    [ckpt] = (run / "checkpoints").iterdir()
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert 3 <= state["step"] < 100000 and state["step"] == rows(run)[-1]["step"]
    train(tmp_path, "--out", run, "--resume", "--max-steps", state["step"] + 2)  # loadable, and it continues
    assert losses(run)[-1][0] == state["step"] + 2


@pytest.mark.slow
def test_a_signal_during_evaluation_stops_right_after_it(tmp_path):
    """SIGTERM while the first evaluation (step 4) trains its FID feature classifier, with 2 loader workers
    running: the evaluation finishes and the run stops at the next step boundary with a checkpoint, exit 0."""
    import threading

    run = tmp_path / "run"
    cmd = [sys.executable, str(TRAIN), "--shards-root", str(tmp_path / "shards"), "--model", "vae", "--out", str(run),
           "--max-steps", "100000", "--batch-size", "16", "--num-workers", "2", "--tracker", "none", "--log-every", "1",
           "--eval-every", "4", "--sample-every", "1000", "--ckpt-every", "100000", "--fid", "--fid-classifier-steps",
           "300", "--fid-samples", "64"]
    proc = subprocess.Popen(cmd, env=env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []

    def read():
        for line in proc.stderr:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not any("training the FID feature classifier" in x for x in lines):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # the classifier trains inside the evaluation at step 4
        proc.wait(timeout=180)
    finally:
        proc.kill()
    reader.join(10)
    err = "".join(lines)
    assert proc.returncode == 0 and "SIGTERM: checkpointed at step 5;" in err, err[-3000:]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000004", "step-00000005"]  # best, last
    assert any("test/fid_classifier" in r and r["step"] == 4 for r in rows(run))  # the evaluation completed


def global_keys(run: Path) -> dict[int, list[str]]:
    """--record-keys, read back: each step's global batch, the ranks' parts in rank order (a step recorded twice,
    trained again after a resume, counts with its last record)."""
    steps: dict[int, dict[int, list[str]]] = {}
    for file in sorted((run / "keys").glob("rank-*.jsonl")):
        rank = int(file.stem.split("-")[1])
        for line in file.read_text().splitlines():
            row = json.loads(line)
            steps.setdefault(row["step"], {})[rank] = row["keys"] + row.get("target_keys", [])
    for step, parts in steps.items():  # after a resume on fewer processes, the higher ranks' old records are stale
        size = len(parts[0])
        steps[step] = {r: p for r, p in parts.items() if len(p) == size}
    return {step: sum((parts[r] for r in sorted(parts)), []) for step, parts in sorted(steps.items())}


def _launch2(tmp_path, *args) -> subprocess.CompletedProcess:
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--config_file", str(ROOT / "launch" / "cpu-2proc.yaml"), "--main_process_port",
           str(_free_port()), str(TRAIN), "--shards-root", str(tmp_path / "shards"), *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env(), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--data", "mnist"], "no shards at"),
    (["--data", "/nonexistent/shards"], "no shards at /nonexistent/shards"),
])
def test_bad_input_is_one_clear_error(tmp_path, args, message):
    done = train(tmp_path, *args, "--tracker", "none", check=False, timeout=120)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("args, message", [
    (["--model", "gan9000"], "unknown model 'gan9000'"),
    (["--mixed-precision", "fp8"], "argument --mixed-precision: invalid choice: 'fp8'"),
    (["--max-steps", "0"], "--max-steps must be >= 1"),
])
def test_bad_flags_are_one_clear_error(args, message, capsys):
    """In process, the same path as `dgen train` / `python dgen/train.py`: one line, exit status 2."""
    from dgen.train import main

    assert main([*args, "--tracker", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("dgen: error: "), err


@pytest.mark.slow
def test_unknown_flags_are_rejected(tmp_path):
    done = train(tmp_path, "--model", "vae", "--n-critic", "5", check=False, timeout=120)
    assert done.returncode == 2 and "unknown flag --n-critic" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # one line, not the usage
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": "vae", "lr_rate": 0.1}))
    done = train(tmp_path, "--config", bad, check=False, timeout=120)
    assert done.returncode == 2 and "unknown config key 'lr_rate'" in done.stderr


def test_flags_are_never_prefix_matched_and_a_typo_names_the_closest_flag():
    from dgen.errors import ConfigError
    from dgen.options import parse_args

    with pytest.raises(ConfigError, match=r"^unknown flag --max-step \(did you mean --max-steps\?\)"):
        parse_args(["--model", "vae", "--max-step", "5"])
    with pytest.raises(ConfigError, match="unknown flag --latent"):
        parse_args(["--model", "vae", "--latent", "5"])
    assert parse_args(["--model", "vae", "--max-steps", "5"])[0]["max_steps"] == 5


def test_help_shows_the_values_the_run_will_use(capsys):
    """The preset for (model, data) applied, a help text for every flag, and the choices where there are some."""
    from dgen.options import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--model", "vae", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, value in (("--max-steps", 1500), ("--latent-dim", 16), ("--kl-weight", 0.0025), ("--log-every", 25),
                        ("--sample-every", 250), ("--eval-every", 500)):
        assert re.search(rf"{flag} \S+ (?:(?! --).)*\(default: {value}\)", text), flag
    assert "--model {dann,dcgan,gta," in text and "--tracker {wandb,none}" in text and "--mixed-precision {no,fp16,bf16}" in text
    assert "(default: " in text and not re.search(r"  \(default:", text)  # no flag without its help text
    with pytest.raises(SystemExit):
        parse_args(["--model", "wgan", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--arch {dcgan,mnist,mlp,unbalanced}" in text and "--loss {bce,lsgan,wgan}" in text
    assert re.search(r"--n-critic \S+ D steps per G step \(default: 1\)", text)  # wgan's digits preset


def test_resume_of_a_folder_that_does_not_exist_says_so(tmp_path):
    from dgen.engine.run import config_for_run
    from dgen.errors import ConfigError

    with pytest.raises(ConfigError, match="there is no run folder at"):
        config_for_run({"out": str(tmp_path / "nothing"), "resume": "latest", "method": {}}, None)


def test_config_file_with_another_model_flag(tmp_path):
    """--config FILE --model M builds M's flags (in-process, as under `accelerate launch`, where argv is sys.argv)."""
    from dgen.options import parse_args

    saved = tmp_path / "config.json"
    saved.write_text(json.dumps({"model": "vae"}))
    overrides, replay = parse_args(["--config", str(saved), "--model", "dcgan", "--n-critic", "2"])
    assert overrides["model"] == "dcgan" and overrides["method"] == {"n_critic": 2} and replay == {"model": "vae"}


@pytest.mark.slow
def test_resume_refuses_an_incompatible_config_and_existing_runs(tmp_path):
    run = tmp_path / "run"
    train(tmp_path, "--model", "vae", "--out", run, "--max-steps", 2, *FAST)
    done = train(tmp_path, "--out", run, "--resume", "--latent-dim", 8, "--max-steps", 4, check=False)
    assert done.returncode == 2 and "cannot resume" in done.stderr and "method" in done.stderr
    done = train(tmp_path, "--model", "vae", "--out", run, "--max-steps", 4, *FAST, check=False)
    assert done.returncode == 2 and "already holds a run" in done.stderr


@pytest.mark.slow
def test_replayed_config_resolves_identically(tmp_path):
    from dgen.options import resolve

    run = tmp_path / "run"
    train(tmp_path, "--model", "mlp-vae", "--out", run, "--max-steps", 2, "--lr", "0.002", *FAST)
    saved = json.loads((run / "config.json").read_text())
    assert saved["lr"] == 0.002 and saved["model"] == "mlp-vae"
    assert resolve({}, saved).to_dict() == saved


@pytest.mark.slow
def test_full_disk_keeps_the_last_good_checkpoint(tmp_path):
    """A real small file system (tmpfs) that fills up at the second checkpoint."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)]).returncode:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        run = disk / "run"  # mlp-vae at 32 px: ~7 MB per checkpoint (weights + Adam moments)
        done = train(tmp_path, "--model", "mlp-vae", "--out", run, "--max-steps", 40, "--ckpt-every", 10,
                     "--keep-checkpoints", 10, *FAST, "--num-workers", 2, check=False, timeout=180)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "could not write the checkpoint for step" in done.stderr and "is intact" in done.stderr
        good = sorted(p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith("."))
        assert good and not list((run / "checkpoints").glob(".tmp-*"))  # no half-written checkpoint left behind
        # the last good checkpoint loads and training continues from it (on a disk with room)
        moved = tmp_path / "moved"
        subprocess.run(["cp", "-r", str(run), str(moved)], check=True)
    finally:
        subprocess.run(["umount", str(disk)])
    step = int(good[-1].split("-")[1])
    train(tmp_path, "--out", moved, "--resume", "--max-steps", step + 2)
    assert losses(moved)[-1][0] == step + 2


@pytest.mark.slow
def test_missing_or_resized_shards_are_refused_before_the_first_step(tmp_path, digits_copy):
    """A shard the manifest lists and the disk lacks, or one of another size, is one line at start-up (and in a
    dry run) naming it, before any step is trained: not an error at the first evaluation, steps later."""
    (digits_copy / "test-000001.tar").rename(tmp_path / "kept.tar")
    for extra in ([], ["--dry-run"]):
        done = train(tmp_path, "--model", "vae", "--data", digits_copy, "--out", tmp_path / "run", "--max-steps", 3,
                     *FAST, *extra, check=False)
        assert done.returncode == 2 and "test-000001.tar (missing)" in done.stderr, done.stderr[-2000:]
        assert "restore them" in done.stderr and not (tmp_path / "run" / "metrics.jsonl").exists()
    (tmp_path / "kept.tar").rename(digits_copy / "test-000001.tar")
    shard = digits_copy / "train-000002.tar"
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[:size // 2])
    done = train(tmp_path, "--model", "vae", "--data", digits_copy, "--max-steps", 3, *FAST, check=False)
    assert done.returncode == 2 and f"train-000002.tar ({size // 2:,} bytes, the manifest says {size:,})" in done.stderr


@pytest.mark.slow
def test_a_failed_evaluation_checkpoints_before_it_exits(tmp_path, digits_copy):
    """The test shard changes after start-up (one byte: its size is right, its sha256 is not): the evaluation at
    step 25 fails, the state of step 25 is checkpointed first (two loader workers running), the error says what
    to do, and --resume after restoring the shard trains steps 26-30 only."""
    from tests.test_stream import _change_a_label

    shard = digits_copy / "test-000000.tar"
    original = shard.read_bytes()
    _change_a_label(shard)
    run = tmp_path / "run"
    done = train(tmp_path, "--model", "vae", "--data", digits_copy, "--out", run, "--max-steps", 30, *FAST,
                 "--ckpt-every", 20, "--eval-every", 25, "--num-workers", 2, check=False, timeout=180)
    assert done.returncode == 2, done.stderr[-3000:]
    err = done.stderr
    assert "sampling or evaluation at step 25 failed" in err and "test-000000.tar" in err
    assert "the training state of step 25 is checkpointed" in err and f"--resume --out {run}" in err
    assert "--eval-every 0" in err and err.count("dgen: error:") == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000020", "step-00000025"]
    shard.write_bytes(original)
    train(tmp_path, "--out", run, "--resume", "--max-steps", 30)
    assert [s for s, *_ in losses(run)] == list(range(1, 31))  # every step once: nothing lost, nothing twice
    # or, without restoring it: --eval-every 0 trains on without the test split
    _change_a_label(shard)
    train(tmp_path, "--out", run, "--resume", "--max-steps", 33, "--eval-every", 0)
    assert losses(run)[-1][0] == 33


@pytest.mark.slow
def test_an_altered_shard_is_skipped_counted_and_reported(tmp_path, digits_copy):
    """One label byte changed inside a train shard: its hash no longer matches the manifest, so training skips
    the shard, and the count reaches metrics.jsonl and the report (the run goes on)."""
    from tests.test_stream import _change_a_label

    _change_a_label(digits_copy / "train-000002.tar")
    run = tmp_path / "run"
    train(tmp_path, "--model", "vae", "--data", digits_copy, "--out", run, "--max-steps", 30, *FAST,
          "--log-every", 10, "--num-workers", 2)
    counted = [r["data/skipped_shards"] for r in rows(run) if "loss" in r]
    assert len(counted) == 3 and counted == sorted(counted) and counted[-1] >= 1  # cumulative, over all workers
    assert all(r["data/skipped_samples"] == 0 for r in rows(run) if "loss" in r)
    assert "Damaged data skipped during training" in (run / "report.md").read_text()


@pytest.mark.slow
def test_accumulation_clipping_and_cosine_schedule(tmp_path):
    run = tmp_path / "run"
    train(tmp_path, "--model", "vae", "--out", run, "--max-steps", 6, *FAST, "--grad-accum", 2, "--grad-clip", 1.0,
          "--lr-schedule", "cosine")
    train_rows = [r for r in rows(run) if "loss" in r]
    assert [r["images"] for r in train_rows] == [32 * s for s in range(1, 7)]  # 2 micro-batches of 16 per step
    lrs = [r["lr"] for r in train_rows]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.1 * lrs[0]


REFUSALS = [  # (flags, environment, the one line): what a real start refuses, each checked elsewhere in the suite
    (["--model", "wgan", "--label-noise", "0.1"], {}, "D's real/fake targets, which the wgan loss does not"),
    (["--model", "dcgan", "--update", "simultaneous"], {}, "--update simultaneous needs --loss wgan"),
    (["--model", "dcgan", "--init-from", "runs/nothing"], {}, "--init-from needs --arch unbalanced"),
    (["--model", "vaegan", "--init-from", "runs/nothing"], {}, "--init-from runs/nothing"),
    (["--model", "vae", "--image-size", "8"], {}, "vae cannot be built for 8x8x1 images"),
    (["--model", "vae", "--batch-size", "4096"], {}, "fewer than one global batch"),
    (["--model", "vae", "--data", "mnist"], {}, "no shards at"),
    (["--model", "dann"], {}, "dann adapts between two domains"),
    (["--model", "vae", "--data", "digits:digits-m"], {}, "pairs are for the domain-adaptation models"),
    (["--model", "dcgan"], {"ACCELERATE_USE_DEEPSPEED": "true"}, "trains 2 networks (G, D)"),
    (["--model", "vae", "--grad-accum", "2"], {"ACCELERATE_USE_DEEPSPEED": "true"}, "gradient_accumulation_steps"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, extra_env, message", REFUSALS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_a_dry_run_refuses_what_a_start_refuses(tmp_path, args, extra_env, message):
    """--dry-run builds the method on the CPU (networks, optimizers, --init-from), so a refusal that lives in a
    method is met there with the same line and exit status 2, before any node or GPU is spent on it."""
    cmd = [sys.executable, str(TRAIN), "--shards-root", str(tmp_path / "shards"), *args, "--dry-run"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**env(), **extra_env}, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stdout + done.stderr[-2000:]
    assert done.stderr.count("dgen: error:") == 1 and "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_dry_run_checks_a_resume(tmp_path):
    run = tmp_path / "run"
    train(tmp_path, "--model", "vae", "--out", run, "--max-steps", 1, *FAST)
    for args, message in ((["--out", run, "--resume", "--latent-dim", 8], "cannot resume"),
                          (["--model", "vae", "--out", run], "already holds a run")):
        done = train(tmp_path, *args, "--dry-run", check=False)
        assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
    assert "dry run: vae" in train(tmp_path, "--out", run, "--resume", "--max-steps", 4, "--dry-run").stdout


@pytest.mark.slow
def test_model_that_cannot_take_the_data(tmp_path):
    done = train(tmp_path, "--model", "vae", "--image-size", 8, *FAST, check=False, timeout=120)
    assert done.returncode == 2 and "vae cannot be built for 8x8x1 images" in done.stderr, done.stderr[-2000:]


@pytest.mark.slow
def test_unwrapping_a_compiled_ddp_model_leaves_it_intact():
    """Sampling unwraps G on rank 0 only; with --compile the training model must keep its DDP wrapper."""
    import socket

    import torch.distributed as dist
    from accelerate import Accelerator

    from dgen.engine.trainer import bare_network

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        net = torch.nn.Linear(3, 2)
        ddp = torch.nn.parallel.DistributedDataParallel(net)
        compiled = torch.compile(ddp)  # lazy: nothing is compiled here
        assert bare_network(Accelerator(cpu=True), compiled) is net
        assert compiled._orig_mod is ddp
    finally:
        dist.destroy_process_group()
