"""slurm/train.sbatch and slurm/shard.sbatch on a real Slurm cluster (a controller and two node
daemons on this machine, see tests/slurm_cluster.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.slurm_cluster import SlurmCluster, available

ROOT = Path(__file__).parents[1]
PYTHON = sys.executable  # the environment dgen is installed in
ARGS = ["--model", "vae", "--batch-size", "16", "--num-workers", "1", "--tracker", "none", "--no-fid", "--log-every", "1",
        "--sample-every", "1000", "--eval-every", "1000", "--ckpt-every", "1000"]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(available() is not None, reason=str(available()))]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def work(tmp_path_factory, digits_shards_root):
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def digits_shards_root(tmp_path_factory):
    """Shards shared by the jobs (sharded once here, so no job races to create them)."""
    from dgen.data.auto import ensure_shards

    root = tmp_path_factory.mktemp("shards")
    ensure_shards("digits", str(root))
    return root


def env() -> dict:
    """A job's environment. DGEN_PORT: a free port for the head's rendezvous instead of the script's 20000 + job
    id, which another process on this one test host (a second suite, a leftover of a killed one) may hold."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {"DGEN_PYTHON": PYTHON, "OMP_NUM_THREADS": "1", "DGEN_PORT": str(port)}


def log(work: Path, job: int, name: str = "dgen") -> str:
    return (work / f"slurm-{name}-{job}.out").read_text()


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses(run: Path) -> list[tuple]:
    return [(r["step"], r["loss"], r["recon"], r["kl"]) for r in rows(run) if "loss" in r]


def submit_train(cluster, work, digits_shards_root, out: str, steps: int, *extra) -> int:
    return cluster.sbatch(str(ROOT / "slurm" / "train.sbatch"), *ARGS, "--shards-root", str(digits_shards_root),
                          "--out", out, "--max-steps", str(steps), *extra, cwd=work, env=env())


def wait_requeued(cluster, job: int, *while_held: str) -> dict:
    """Wait for a preempted job to be requeued, run again and end; `while_held`: `scontrol update` settings for
    the job while it waits (e.g. another node count). Returns its final scontrol record."""
    deadline, held_since = time.time() + 300, None
    while time.time() < deadline:
        info = cluster.job(job)
        if info.get("JobState") == "PENDING" and info.get("Reason") == "BeginTime":
            if while_held and held_since is None:
                cluster.run("scontrol", "update", f"JobId={job}", *while_held)
            # Shorten Slurm's ~2 minute hold of a requeued job, but only once the old instance has been
            # cleaned up: a job restarted at once is killed with "Job credential revoked".
            held_since = held_since or time.time()
            if time.time() - held_since > 15:
                cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now")
        if info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"):
            return info
        time.sleep(0.5)
    return cluster.job(job)


STEPS = 30  # of the preemption tests' runs


@pytest.fixture(scope="module")
def straight(cluster, work, digits_shards_root) -> tuple[Path, str]:
    """An uninterrupted 2-node run of STEPS steps recording its keys (the reference of the preemption tests), and
    its job log."""
    job = submit_train(cluster, work, digits_shards_root, "runs/straight", STEPS, "--record-keys")
    info = cluster.wait_job(job, timeout=300)
    text = log(work, job)
    assert info["JobState"] == "COMPLETED", text[-3000:]
    return work / "runs/straight", text


def test_two_nodes_uninterrupted_and_preempted_runs_agree(cluster, work, digits_shards_root, straight):
    run, text = straight
    assert "nodes n1 n2, head 127.0.0.1" in text and "world size 2" in text  # n1/n2 are not host names
    state = json.loads((run / f"checkpoints/step-{STEPS:08d}/trainer_state.json").read_text())
    assert state["replicas_checked"] == 2

    job = submit_train(cluster, work, digits_shards_root, "runs/preempted", STEPS, "--tracker", "wandb")
    metrics = work / "runs/preempted/metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
        time.sleep(0.2)
    cluster.run("scancel", "--signal=USR1", "--batch", job)  # what --signal=B:USR1@120 sends before the limit
    info = wait_requeued(cluster, job)
    text = log(work, job)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", text[-4000:]
    assert "SIGTERM: checkpointed at step" in text and "requeueing" in text and "restart 1] training finished" in text
    stopped_at = int(text.split("SIGTERM: checkpointed at step ")[1].split(";")[0])
    assert stopped_at >= 5  # the signal came after 5 logged steps; it stopped the run at the next boundary
    # every step exactly once, and the same numbers as the uninterrupted run
    assert [s for s, *_ in losses(work / "runs/preempted")] == list(range(1, STEPS + 1))
    assert losses(work / "runs/preempted") == losses(run)
    # the requeued job continued the same W&B run (offline: one run file per start, one id)
    run_id = (work / "runs/preempted/wandb-run-id").read_text().strip()
    files = sorted((work / "runs/preempted/wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2 and all(f.stem == f"run-{run_id}" for f in files)


def test_a_two_node_job_streams_its_shards_over_http(cluster, work, digits_shards_root):
    """The cluster path of docs/data.md: shards served over HTTP (http.server on the loopback, with a port), both
    nodes streaming them through --data, nothing read from a local shard folder; the FID classifier of the remote
    shards trained once into the DGEN_CACHE_DIR the nodes share."""
    from tests.http_server import ShardServer

    with ShardServer(digits_shards_root) as server:
        job = cluster.sbatch(str(ROOT / "slurm" / "train.sbatch"), *ARGS, "--data", server.url("digits"),
                             "--shards-root", str(work / "no-local-shards"), "--out", "runs/http", "--max-steps", "12",
                             "--fid", "--fid-classifier-steps", "20", "--fid-samples", "64", "--eval-every", "12",
                             cwd=work, env={**env(), "DGEN_CACHE_DIR": str(work / "cache")})
        info = cluster.wait_job(job, timeout=300)
        text = log(work, job)
        assert info["JobState"] == "COMPLETED", text[-3000:]
        assert "world size 2" in text and server.requests["digits/manifest.json"] >= 3  # dry run + 2 ranks
        assert sum(n for p, n in server.requests.items() if "/train-" in p) >= 2
    assert [s for s, *_ in losses(work / "runs/http")] == list(range(1, 13))
    assert not (work / "no-local-shards").exists()
    assert [r["step"] for r in rows(work / "runs/http") if "test/fid_classifier" in r] == [12]
    assert len(list((work / "cache").glob("classifier-*.pt"))) == 1


def global_keys(run: Path) -> dict[int, list[str]]:
    from tests.test_train import global_keys as read

    return read(run)


def test_a_requeue_on_fewer_nodes_continues_the_same_global_batches(cluster, work, digits_shards_root, straight):
    """Preempted on 2 nodes, requeued on 1 (scontrol update NumNodes=1 while it waits): the one process takes the
    global batch of both (32 images), and every step sees the samples of the uninterrupted 2-node run."""
    job = submit_train(cluster, work, digits_shards_root, "runs/keys-requeued", STEPS, "--record-keys")
    metrics = work / "runs/keys-requeued/metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 4):
        time.sleep(0.2)
    cluster.run("scancel", "--signal=USR1", "--batch", job)
    info = wait_requeued(cluster, job, "NumNodes=1-1", "NumTasks=1")
    text = log(work, job)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", text[-4000:]
    assert "resuming a checkpoint of 2 process(es) on 1: 32 images per process (was 16)" in text, text[-4000:]
    reference = global_keys(straight[0])
    assert list(reference) == list(range(1, STEPS + 1)) and all(len(k) == 32 for k in reference.values())
    assert global_keys(work / "runs/keys-requeued") == reference


def test_a_job_with_more_tasks_than_nodes_still_starts_one_trainer_per_node(cluster, work, digits_shards_root):
    """A job's task count can outgrow its nodes (requeued on fewer nodes, or submitted so): srun must still start
    one launcher per node, not two one-process trainers writing the same run folder."""
    job = cluster.sbatch("--nodes=1", "--ntasks=2", "--ntasks-per-node=2", str(ROOT / "slurm" / "train.sbatch"), *ARGS,
                         "--shards-root", str(digits_shards_root), "--out", "runs/two-tasks", "--max-steps", "5",
                         cwd=work, env=env())
    info = cluster.wait_job(job, timeout=300)
    text = log(work, job)
    assert info["JobState"] == "COMPLETED", text[-3000:]
    assert text.count("dgen: DistributedType") == 1 and "world size 1" in text, text[-3000:]


def test_missing_shards_fail_fast_with_a_clear_message(cluster, work, digits_shards_root):
    job = cluster.sbatch(str(ROOT / "slurm" / "train.sbatch"), *ARGS, "--data", "/nonexistent/celeba",
                         cwd=work, env=env())
    info = cluster.wait_job(job, timeout=120)
    text = log(work, job)
    assert info["JobState"] == "FAILED"
    assert "no shards at /nonexistent/celeba" in text and "the training arguments were rejected" in text
    # more nodes than the partition has: the job never starts, and squeue/scontrol say why
    job = cluster.sbatch("--nodes=3", str(ROOT / "slurm" / "train.sbatch"), cwd=work, env=env())
    deadline = time.time() + 30
    while time.time() < deadline and cluster.job(job).get("Reason") != "PartitionNodeLimit":
        time.sleep(0.3)
    info = cluster.job(job)
    cluster.run("scancel", job)
    assert (info["JobState"], info["Reason"]) == ("PENDING", "PartitionNodeLimit")


def test_a_dying_rank_fails_the_job_promptly(cluster, work, digits_shards_root):
    job = submit_train(cluster, work, digits_shards_root, "runs/dies", 100000)
    metrics = work / "runs/dies/metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    victim = _training_process(job, rank=1)
    os.kill(victim, signal.SIGKILL)
    # ended by srun's --kill-on-bad-exit: before the surviving rank could wait out its 300 s collective timeout
    info = cluster.wait_job(job, timeout=240)
    assert info["JobState"] == "FAILED"
    text = log(work, job)
    assert "training failed" in text and "rank" in text and ("Signal 9" in text or "SIGKILL" in text), text[-3000:]
    assert "timed out" not in text.lower()


def _training_process(job: int, rank: int) -> int:
    """PID of job `job`'s dgen training worker with RANK=rank (a child of accelerate's launcher); other tests'
    trainers run beside it on the other pytest workers."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (b"dgen.train" in cmd and b"accelerate.commands.launch" not in cmd and f"RANK={rank}".encode() in environ
                and f"SLURM_JOB_ID={job}".encode() in environ):
            return int(pid)
    raise AssertionError(f"no training process with RANK={rank}")


def test_shard_array_equals_a_single_process_shard(cluster, work, tmp_path):
    single = tmp_path / "single"
    subprocess.run([PYTHON, "-m", "dgen", "shard", "digits-m", "--out", str(single), "--per-shard", "200", "--quiet"],
                   check=True, capture_output=True)
    out = work / "shards" / "digits-m-array"
    job = cluster.sbatch("--array=0-2", str(ROOT / "slurm" / "shard.sbatch"), "digits-m", "--out", str(out),
                         "--per-shard", "200", cwd=work, env=env())
    for task in range(3):
        info = cluster.wait_job(f"{job}_{task}", timeout=180)
        assert info["JobState"] == "COMPLETED", (work / f"slurm-dgen-shard-{job}_{task}.out").read_text()
    text = (work / f"slurm-dgen-shard-{job}_0.out").read_text()
    merge = int(text.split("will run as job ")[1].split()[0])
    info = cluster.wait_job(merge, timeout=180)
    merge_log = (work / f"slurm-dgen-merge-{merge}.out").read_text()
    assert info["JobState"] == "COMPLETED", merge_log
    assert "all shards match the manifest" in merge_log

    def digest(folder):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    assert digest(out) == digest(single)
