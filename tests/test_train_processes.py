"""The training engine on several processes, end to end: a 2-process gloo run keeps identical weights, resumes on
1 process and back on 2, and stops cleanly on a SIGTERM to one rank; one global sample order for any number of processes and loader workers (and across a
resume that changes them), and the one-process launcher's SIGTERM. (Split from test_train.py, whose helpers it
uses, so the suite's two workers share the long tests more evenly.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_train import FAST, ROOT, TRAIN, _free_port, _launch2, env, global_keys, losses, rows, train


@pytest.mark.slow
def test_two_processes_keep_identical_weights(tmp_path):
    run = tmp_path / "run"
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--config_file", str(ROOT / "launch" / "cpu-2proc.yaml"), "--main_process_port",
           str(_free_port()), str(TRAIN), "--shards-root", str(tmp_path / "shards"), "--model", "vae", "--out",
           str(run), "--max-steps", "6", "--ckpt-every", "3", "--keep-checkpoints", "5", *FAST, "--num-workers", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env(), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    for step in (3, 6):  # the trainer compares every rank's weights before it writes a checkpoint
        state = json.loads((run / "checkpoints" / f"step-{step:08d}" / "trainer_state.json").read_text())
        assert state["replicas_checked"] == 2
    assert len(losses(run)) == 6
    assert sorted(p.name for p in (run / "checkpoints" / "step-00000006").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"]

    # elastic resume: 2 processes -> 1 process with 2 workers -> 2 processes again, keeping the global batch
    one = train(tmp_path, "--out", run, "--resume", "--max-steps", 9, "--num-workers", 2)
    assert "resuming a checkpoint of 2 process(es) on 1: 32 images per process (was 16)" in one.stderr, \
        one.stderr[-3000:]
    # ... and that last run is stopped by a SIGTERM that reaches rank 1 alone: both ranks stop at one step,
    # checkpoint, and name the signal; the launcher saw no signal, so it reports the workers' 0
    again = subprocess.Popen([*cmd[:cmd.index(str(TRAIN)) + 1], "--out", str(run), "--resume", "--max-steps", "100000",
                              "--shards-root", str(tmp_path / "shards")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env(), cwd=tmp_path)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and (len(losses(run)) < 12 or not (rank1 := _rank_process(again.pid, 1))):
            time.sleep(0.2)
        os.kill(rank1, signal.SIGTERM)
        out, err = again.communicate(timeout=120)
    finally:
        again.kill()
    assert again.returncode == 0 and "of 1 process(es) on 2: 16 images per process (was 32)" in err, err[-3000:]
    assert "SIGTERM: checkpointed at step" in err, err[-3000:]
    assert "SIGTERM (received by another rank; this is rank 0): checkpointed at step" in err
    stopped = max(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*"))
    assert [s for s, *_ in losses(run)] == list(range(1, stopped + 1))  # every step once
    state = json.loads((run / "checkpoints" / f"step-{stopped:08d}" / "trainer_state.json").read_text())
    assert stopped >= 12 and (state["world_size"], state["replicas_checked"]) == (2, 2)


@pytest.mark.slow
def test_one_global_order_for_any_processes_and_workers(tmp_path):
    """The stream is the seed's, not the machine's: 1 process with 0, 1 or 2 loader workers trains identically
    step for step; 2 gloo processes at 16 see the keys of 1 process at 32 in every global batch; a run checkpointed
    on 2 processes x 2 workers and resumed on 1 x 0 sees from there exactly the uninterrupted 1 x 0 run's keys,
    and the reverse (the 2-process halves: steps 1-4 and 5-8)."""
    common = ["--model", "vae", "--seed", 5, *FAST, "--batch-size", 32, "--record-keys", "--ckpt-every", 4]
    for workers in (0, 1, 2):
        train(tmp_path, *common, "--num-workers", workers, "--out", tmp_path / f"one-w{workers}", "--max-steps", 8)
    reference = global_keys(tmp_path / "one-w0")
    assert list(reference) == list(range(1, 9)) and all(len(k) == 32 for k in reference.values())
    for workers in (1, 2):
        assert global_keys(tmp_path / f"one-w{workers}") == reference
        assert losses(tmp_path / f"one-w{workers}") == losses(tmp_path / "one-w0")  # the same arithmetic too

    two = ["--model", "vae", "--seed", 5, *FAST, "--batch-size", 16, "--record-keys", "--ckpt-every", 4]
    _launch2(tmp_path, *two, "--num-workers", 2, "--out", tmp_path / "two-then-one", "--max-steps", 4)
    assert global_keys(tmp_path / "two-then-one") == {k: v for k, v in reference.items() if k <= 4}
    done = train(tmp_path, "--out", tmp_path / "two-then-one", "--resume", "--max-steps", 8, "--num-workers", 0)
    assert "32 images per process (was 16) keep the global batch of 32" in done.stderr
    assert global_keys(tmp_path / "two-then-one") == reference

    train(tmp_path, *common, "--num-workers", 0, "--out", tmp_path / "one-then-two", "--max-steps", 4)
    _launch2(tmp_path, "--out", tmp_path / "one-then-two", "--resume", "--max-steps", 8, "--num-workers", 2)
    assert global_keys(tmp_path / "one-then-two") == reference
    assert json.loads((tmp_path / "one-then-two" / "config.json").read_text())["batch_size"] == 16


def _rank_process(launcher: int, rank: int) -> int | None:
    """The pid of a launcher's descendant whose environment says RANK=rank (None while there is none)."""
    import psutil

    for child in psutil.Process(launcher).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "dgen" in " ".join(child.cmdline()):
                return child.pid
        except psutil.Error:
            continue
    return None


@pytest.mark.slow
def test_one_process_accelerate_launch_sigterm_to_the_launcher(tmp_path):
    """Accelerate's one-process launcher dies at once of a SIGTERM and passes nothing on; the trainer,
    told by the kernel that its launcher died, checkpoints and exits instead of training on, orphaned."""
    run = tmp_path / "run"
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--num_processes", "1", str(TRAIN), "--shards-root", str(tmp_path / "shards"),
           "--model", "vae", "--out", str(run), "--max-steps", "100000", *FAST, "--num-workers", "2",
           "--ckpt-every", "100000"]
    proc = subprocess.Popen(cmd, env=env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not ((run / "metrics.jsonl").exists() and len(rows(run)) >= 3):
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # the launcher only, not its process group
        out, err = proc.communicate(timeout=120)  # the pipes close when the trainer, which inherited them, exits
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM  # the launcher itself was killed by the signal (143 in a shell)
    assert "SIGTERM: checkpointed at step" in err, err[-3000:]
    [ckpt] = (run / "checkpoints").iterdir()
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == rows(run)[-1]["step"]
