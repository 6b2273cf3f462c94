"""DeepSpeed ZeRO-2 through `accelerate launch` on CPU (one process: Accelerate's DeepSpeed state
does not count CPU ranks correctly, so multi-process DeepSpeed needs GPUs), and the refusal of
multi-network methods."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.test_train import ROOT, env, losses

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves it out

pytest.importorskip("deepspeed")
TRAIN = ROOT / "dgen" / "train.py"


def launch(tmp_path, *args, check=True):
    import subprocess

    cfg = json.loads((ROOT / "launch" / "ds_zero2_bf16.json").read_text())
    cfg["bf16"] = {"enabled": False}  # CPU: full precision; the GPU configs use bf16 / fp16
    (tmp_path / "ds.json").write_text(json.dumps(cfg))
    (tmp_path / "ds.yaml").write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n"
        f"  deepspeed_config_file: {tmp_path / 'ds.json'}\n  zero3_init_flag: false\nuse_cpu: true\n"
        "num_machines: 1\nnum_processes: 1\nmachine_rank: 0\n")
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--config_file", str(tmp_path / "ds.yaml"), str(TRAIN), "--shards-root",
           str(tmp_path / "shards"), "--batch-size", "16", "--num-workers", "0", "--tracker", "none", "--log-every",
           "1", "--sample-every", "1000", "--eval-every", "1000", "--no-progress", "--no-fid", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env(), cwd=tmp_path)
    if check:
        assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_vae_under_deepspeed_zero2_resumes_exactly(tmp_path):
    import shutil

    done = launch(tmp_path, "--model", "vae", "--out", tmp_path / "straight", "--max-steps", 8, "--ckpt-every", 4)
    assert "DistributedType.DEEPSPEED" in done.stderr
    ckpt = tmp_path / "straight" / "checkpoints" / "step-00000004"
    assert (ckpt / "pytorch_model" / "mp_rank_00_model_states.pt").is_file()  # DeepSpeed's own format
    # the same run as if it had stopped at step 4: a copy without its last checkpoint, resumed to 8
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step-00000008")
    launch(tmp_path, "--out", tmp_path / "resumed", "--resume", "--max-steps", 8)
    assert [s for s, *_ in losses(tmp_path / "resumed")] == list(range(1, 9))  # rows past step 4 were redone once
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    # dgen sample consolidates the ZeRO checkpoint
    import subprocess

    out = subprocess.run([sys.executable, "-m", "dgen", "sample", "--run", str(tmp_path / "resumed"), "--n", "4"],
                         capture_output=True, text=True, env=env(), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_grad_accum_flag_is_refused_under_deepspeed(tmp_path):
    done = launch(tmp_path, "--model", "vae", "--out", tmp_path / "r", "--max-steps", 2, "--grad-accum", 2, check=False)
    assert done.returncode != 0 and "gradient_accumulation_steps in the DeepSpeed JSON" in done.stderr


def test_gans_refuse_deepspeed_with_the_reason(tmp_path):
    done = launch(tmp_path, "--model", "dcgan", "--out", tmp_path / "g", "--max-steps", 2, "--no-fid", check=False)
    assert done.returncode != 0 and "trains 2 networks (G, D)" in done.stderr and "DDP" in done.stderr
