"""The GAN methods end to end (real processes): every flavour trains, DDP keeps G and D in
lockstep, vaegan starts from a VAE run's decoder, divergence stops cleanly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.test_train import FAST, ROOT, TRAIN, _free_port, env, rows, train

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves it out

GANS = ["dcgan", "lsgan", "wgan", "wgan-gp", "vaegan"]


@pytest.mark.parametrize("model", GANS)
def test_every_gan_trains(tmp_path, model):
    run = tmp_path / "run"
    extra = ["--n-critic", 3] if model == "wgan-gp" else []  # the digits presets all take a G step every step
    train(tmp_path, "--model", model, "--out", run, "--max-steps", 10, *extra, *FAST)
    logged = [r for r in rows(run) if "d_loss" in r]
    assert [r["step"] for r in logged] == list(range(1, 11))
    g_steps = [r["step"] for r in logged if "g_loss" in r]
    n_critic = json.loads((run / "config.json").read_text())["method"]["n_critic"]
    assert g_steps == [s for s in range(1, 11) if s % n_critic == 0]  # G after every n_critic-th D step
    assert (run / "images" / "variations.png").is_file() and (run / "images" / "curves.png").is_file()


@pytest.mark.parametrize("model", ["dcgan", "wgan-gp", "wgan"])  # wgan: D and G in one phase (--update simultaneous)
def test_two_processes_keep_g_and_d_identical(tmp_path, model):
    import subprocess

    run = tmp_path / "run"
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--config_file", str(ROOT / "launch" / "cpu-2proc.yaml"), "--main_process_port",
           str(_free_port()), str(TRAIN), "--shards-root", str(tmp_path / "shards"), "--model", model, "--out", str(run),
           "--max-steps", "10", "--ckpt-every", "5", "--keep-checkpoints", "5", *FAST]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    for step in (5, 10):  # the trainer compares G's and D's parameters across ranks before each checkpoint
        state = json.loads((run / "checkpoints" / f"step-{step:08d}" / "trainer_state.json").read_text())
        assert state["replicas_checked"] == 2


def test_vaegan_starts_from_a_vae_decoder(tmp_path):
    vae = tmp_path / "vae"
    train(tmp_path, "--model", "vae", "--out", vae, "--max-steps", 2, *FAST)
    run = tmp_path / "gan"
    train(tmp_path, "--model", "vaegan", "--init-from", vae, "--out", run, "--max-steps", 2, *FAST)
    assert json.loads((run / "config.json").read_text())["method"]["init_from"] == str(vae)
    # a VAE whose decoder does not fit (latent 8 vs the GAN's 16) is refused with the reason
    small = tmp_path / "vae8"
    train(tmp_path, "--model", "vae", "--out", small, "--max-steps", 1, "--latent-dim", 8, *FAST)
    done = train(tmp_path, "--model", "vaegan", "--init-from", small, "--out", tmp_path / "bad", "--max-steps", 1,
                 *FAST, check=False)
    assert done.returncode == 2 and "does not fit this generator" in done.stderr and "decode_input" in done.stderr
    done = train(tmp_path, "--model", "dcgan", "--init-from", vae, "--out", tmp_path / "bad2", "--max-steps", 1,
                 *FAST, check=False)
    assert done.returncode == 2 and "--arch unbalanced" in done.stderr


def test_divergence_stops_with_a_clear_message(tmp_path):
    run = tmp_path / "run"
    train(tmp_path, "--model", "lsgan", "--arch", "mlp", "--out", run, "--max-steps", 2, *FAST)
    before = (run / "checkpoints" / "step-00000002" / "model.safetensors").read_bytes()
    done = train(tmp_path, "--out", run, "--resume", "--max-steps", 50, "--lr", "1e12", "--ckpt-every", 1,
                 "--num-workers", 2, check=False, timeout=120)  # and exits promptly with loader workers running
    assert done.returncode == 2 and "training diverged" in done.stderr, done.stderr[-2000:]
    # (a changed --lr applies on resume; here it blows the MLP critic up at once) nothing non-finite was
    # saved: the newest checkpoint is still the good one, byte for byte
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000002"]
    assert (run / "checkpoints" / "step-00000002" / "model.safetensors").read_bytes() == before


def test_training_lowers_fid_clearly_below_the_untrained_generator(tmp_path):
    """FID (classifier features) of dcgan after 1 step (~untrained) and after 200 steps, same shards,
    same cached feature classifier, same fixed noise."""
    common = ["--model", "dcgan", *FAST, "--fid", "--log-every", 50, "--fid-samples", 500, "--ckpt-every", 1000,
              "--fid-classifier-steps", 200]
    train(tmp_path, *common, "--out", tmp_path / "untrained", "--max-steps", 1, "--eval-every", 1, timeout=600)
    train(tmp_path, *common, "--out", tmp_path / "trained", "--max-steps", 200, "--eval-every", 100, timeout=600)
    untrained = [r["test/fid_classifier"] for r in rows(tmp_path / "untrained") if "test/fid_classifier" in r]
    trained = [r for r in rows(tmp_path / "trained") if "test/fid_classifier" in r]
    assert len(untrained) == 1 and [r["step"] for r in trained] == [100, 200]
    assert min(r["test/fid_classifier"] for r in trained) < 0.5 * untrained[0]
    best = json.loads(sorted((tmp_path / "trained" / "checkpoints").glob("step-*"))[-1]
                      .joinpath("trainer_state.json").read_text())["best"]
    assert best["value"] == min(r["test/fid_classifier"] for r in trained)
    assert (tmp_path / "trained" / "checkpoints" / f"step-{best['step']:08d}").is_dir()  # the best one is kept
    assert "Best FID (classifier features)" in (tmp_path / "trained" / "report.md").read_text()


@pytest.mark.parametrize("model", ["dcgan", "wgan"])  # wgan: one optimizer over D and G (--update simultaneous)
def test_ema_generator_is_checkpointed_resumed_and_sampled(tmp_path, model):
    """--ema keeps an average of G's weights: saved with every checkpoint, continued exactly on resume, and the
    network that draws the samples (and so the FID); --augment runs D on transformed images."""
    import torch

    from dgen.engine.run import load_generator

    common = ["--model", model, *FAST, "--ema", 4, "--augment", "color,translation,cutout", "--ckpt-every", 3]
    train(tmp_path, *common, "--out", tmp_path / "straight", "--max-steps", 6)
    train(tmp_path, *common, "--out", tmp_path / "resumed", "--max-steps", 3)
    train(tmp_path, *common, "--out", tmp_path / "resumed", "--max-steps", 6, "--resume")
    ema = []
    for run in ("straight", "resumed"):
        cfg, method, ckpt = load_generator(tmp_path / run)
        assert ckpt.name == "step-00000006"
        g, avg = method.models["G"].state_dict(), method.models["G_ema"].module.state_dict()
        assert any(not torch.equal(g[k], avg[k]) for k in g if g[k].is_floating_point())  # an average, not a copy
        z = torch.randn(4, cfg.method.nz)
        with torch.no_grad():
            assert torch.equal(method.sample(z), method.models["G_ema"].module.eval()(z))
        ema.append(avg)
    assert all(torch.equal(ema[0][k], ema[1][k]) for k in ema[0])  # resumed = straight
    assert [r["d_loss"] for r in rows(tmp_path / "straight") if "d_loss" in r] == \
        [r["d_loss"] for r in rows(tmp_path / "resumed") if "d_loss" in r]
