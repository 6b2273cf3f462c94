"""Training from shards on a server, as a cluster does it: real HTTP (Python's http.server on the loopback, with a
port) and `pipe:` commands, through `--data`, alone and as a domain pair; and a server that fails mid-run."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dgen.data.remote import RemoteError, fetch
from dgen.data.shard import write_shards
from dgen.data.sources import get_source
from tests.http_server import ShardServer
from tests.test_train import FAST, TRAIN, env, losses, rows, weights

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the pipe: tests stream through curl")


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Path:
    """digits (3 train shards of 500, 1 test shard) and digits-m at 32 px, in one folder a server can serve."""
    root = tmp_path_factory.mktemp("served")
    write_shards(get_source("digits")(), root / "digits", size=32, channels=1, per_shard=500, progress=False)
    write_shards(get_source("digits-m")(size=32), root / "digits-m", size=32, channels=3, per_shard=500,
                 progress=False)
    return root


def remote_env(tmp_path, **extra) -> dict:
    # the FID classifier of remote shards is cached under XDG_CACHE_HOME/dgen: one per test, not the user's
    return {**env(), "XDG_CACHE_HOME": str(tmp_path / "cache"), **{k: str(v) for k, v in extra.items()}}


def run(tmp_path, *args, extra_env=None, timeout=300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(TRAIN), "--shards-root", str(tmp_path / "no-local-shards"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env=remote_env(tmp_path, **(extra_env or {})))


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


@pytest.mark.slow
def test_http_with_a_port_trains_evaluates_and_resumes_exactly(served, tmp_path):
    """8 straight steps = 4 + a resume to 8, both streaming over http://127.0.0.1:PORT through 2 loader
    workers, with FID (its classifier trained on the remote train split and cached) at steps 4 and 8."""
    with ShardServer(served) as server:
        data = server.url("digits")
        common = ["--model", "vae", "--data", data, "--seed", 1, *FAST, "--num-workers", 2, "--ckpt-every", 4,
                  "--eval-every", 4, "--fid", "--fid-classifier-steps", 20, "--fid-samples", 64]
        ok(run(tmp_path, *common, "--out", tmp_path / "straight", "--max-steps", 8))
        ok(run(tmp_path, *common, "--out", tmp_path / "resumed", "--max-steps", 4))
        ok(run(tmp_path, "--out", tmp_path / "resumed", "--resume", "--max-steps", 8))
        assert server.requests["digits/manifest.json"] >= 3 and server.requests["digits/test-000000.tar"] >= 1
        assert sum(n for p, n in server.requests.items() if "/train-" in p) >= 3
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    assert [s for s, *_ in losses(tmp_path / "resumed")] == list(range(1, 9))
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert all((a[k] == b[k]).all() for k in a)
    fids = [r for r in rows(tmp_path / "straight") if "test/fid_classifier" in r]
    assert [r["step"] for r in fids] == [4, 8] and all(r["test/fid_classifier"] > 0 for r in fids)
    assert len(list((tmp_path / "cache" / "dgen").glob("classifier-*.pt"))) == 1  # shared by the three runs
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["data"] == data and not (tmp_path / "no-local-shards").exists()


@pytest.mark.slow
def test_a_pair_of_two_remote_locations_and_a_pipe(served, tmp_path):
    """DANN with the source over HTTP and the target through `pipe:curl`; a VAE from a `pipe:` location."""
    with ShardServer(served) as server:
        target = f"pipe:curl -s -f --max-time 60 {server.url('digits-m')}/{{name}}"
        pair = f"{server.url('digits')}:{target}"
        ok(run(tmp_path, "--model", "dann", "--data", pair, "--out", tmp_path / "dann", "--max-steps", 4, *FAST))
        ok(run(tmp_path, "--model", "vae", "--data", f"pipe:curl -s -f {server.url('digits')}/{{name}}",
               "--out", tmp_path / "vae", "--max-steps", 3, *FAST))
        assert server.requests["digits-m/test-000000.tar"] >= 1 and server.requests["digits/manifest.json"] >= 2
    final = [r for r in rows(tmp_path / "dann") if "test/accuracy" in r][-1]
    assert final["step"] == 4 and 0 <= final["test/accuracy"] <= 1
    assert json.loads((tmp_path / "dann" / "config.json").read_text())["data"] == pair
    assert [s for s, *_ in losses(tmp_path / "vae")] == [1, 2, 3]


@pytest.mark.slow
def test_damaged_and_cut_shards_over_http_are_skipped_in_training(served, tmp_path):
    """One train shard's body is cut off mid-transfer, another has one byte changed (its sha256 is not the
    manifest's): training skips both, counts them and finishes; the run's report says so."""
    root = tmp_path / "root"
    shutil.copytree(served / "digits", root / "digits")
    damaged = root / "digits" / "train-000002.tar"
    data = bytearray(damaged.read_bytes())
    data[-2000] ^= 0xFF  # inside the last members' bytes, past the headers
    damaged.write_bytes(bytes(data))
    assert hashlib.sha256(data).hexdigest() not in (root / "digits" / "manifest.json").read_text()
    with ShardServer(root) as server:
        server.faults["digits/train-000001.tar"] = "truncate"
        done = ok(run(tmp_path, "--model", "vae", "--data", server.url("digits"), "--out", tmp_path / "run",
                      "--max-steps", 120, *FAST, extra_env={"DGEN_REMOTE_RETRIES": 0}))
        assert server.requests["digits/train-000001.tar"] >= 1 and server.requests["digits/train-000002.tar"] >= 1
    assert "train-000001.tar" in done.stderr and "connection closed early" in done.stderr
    assert "train-000002.tar" in done.stderr and "is not the manifest's" in done.stderr
    skipped = sum(r.get("data/skipped_shards", 0) for r in rows(tmp_path / "run"))
    assert skipped >= 2 and [s for s, *_ in losses(tmp_path / "run")][-1] == 120
    assert "skipped" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.slow
def test_a_server_that_stalls_or_stops_is_an_error_not_a_hang(served, tmp_path):
    """The test shard stalls mid-transfer at the evaluation: exit 2 after DGEN_REMOTE_TIMEOUT, naming the shard.
    The server stops mid-run: every later shard is refused, and the run ends with exit 2 naming the cause."""
    with ShardServer(served, stall_s=60) as server:
        server.faults["digits/test-000000.tar"] = "stall"
        t0 = time.monotonic()
        done = run(tmp_path, "--model", "vae", "--data", server.url("digits"), "--out", tmp_path / "stalled",
                   "--max-steps", 4, *FAST, "--eval-every", 4, extra_env={"DGEN_REMOTE_TIMEOUT": 3,
                                                                            "DGEN_REMOTE_RETRIES": 0})
        assert done.returncode == 2, done.stderr[-3000:]
        assert "test-000000.tar" in done.stderr and "no data for 3 s" in done.stderr
        assert time.monotonic() - t0 < 120

    server = ShardServer(served).__enter__()
    cmd = [sys.executable, str(TRAIN), "--shards-root", str(tmp_path / "none"), "--model", "vae", "--data",
           server.url("digits"), "--out", str(tmp_path / "stopped"), "--max-steps", "100000", *FAST,
           "--num-workers", "2"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=remote_env(tmp_path, DGEN_REMOTE_RETRIES=0),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics = tmp_path / "stopped" / "metrics.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
            time.sleep(0.2)
        server.stop()
        _, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
        server.stop()
    assert proc.returncode == 2, err[-3000:]
    assert "no readable samples" in err and "Connection refused" in err


@pytest.mark.slow
def test_a_shard_the_server_lacks_is_refused_at_start_up(served, tmp_path):
    """The start-up check asks an http(s) server for every shard the run will read (HEAD): one it does not
    have stops the run before its first step, named."""
    root = tmp_path / "root"
    shutil.copytree(served / "digits", root / "digits")
    (root / "digits" / "train-000001.tar").unlink()
    with ShardServer(root) as server:
        done = run(tmp_path, "--model", "vae", "--data", server.url("digits"), "--max-steps", 3, *FAST, "--dry-run")
        assert done.returncode == 2 and "train-000001.tar (HTTP 404" in done.stderr, done.stderr[-2000:]
        assert server.requests["digits/train-000001.tar"] == 0  # HEAD requests are not GETs: nothing downloaded


def test_fetch_retries_what_a_server_asks_to_retry_and_not_the_rest(served, monkeypatch):
    monkeypatch.setenv("DGEN_REMOTE_RETRIES", "1")
    with ShardServer(served) as server:
        server.faults["digits/manifest.json"] = "503"
        with pytest.raises(RemoteError, match=r"HTTP 503 .*after 2 tries"):
            fetch(server.url("digits/manifest.json"))
        assert server.requests["digits/manifest.json"] == 2  # retried once
        with pytest.raises(RemoteError, match="HTTP 404"):
            fetch(server.url("digits/nope.tar"))
        assert server.requests["digits/nope.tar"] == 1  # not retried
        del server.faults["digits/manifest.json"]
        assert json.loads(fetch(server.url("digits/manifest.json")))["dataset"] == "digits"
        with pytest.raises(RemoteError, match="exited with status 22"):
            fetch(f"pipe:curl -s -f {server.url('digits/nope.tar')}")
    monkeypatch.setenv("DGEN_REMOTE_TIMEOUT", "1")
    with pytest.raises(RemoteError, match="wrote nothing for 1 s"):
        fetch("pipe:sleep 30")
