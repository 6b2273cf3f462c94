"""`dgen bench` end to end at toy sizes: it makes its bench set, measures every reader and all four
training variants in their own processes, and its JSON holds the figures the table shows. Speed
itself is measured by the command and reported (README, Performance), not asserted here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dgen.bench.train import peak_flops

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves it out


def test_bench_tables_and_json(tmp_path):
    out = tmp_path / "results.json"
    cmd = [sys.executable, "-m", "dgen.cli", "bench", "--json", str(out), "--images", "256", "--workers", "0",
           "--loader-batch-size", "32", "--models", "dcgan", "--batch-size", "8", "--image-size", "32",
           "--window", "1", "--windows", "2", "--train-workers", "1"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    env = result["environment"]
    assert env["device"].startswith("CPU") and env["torch"] and env["webdataset"] and env["accelerate"]

    loader = {r["reader"]: r for r in result["loader"]["rows"]}
    assert set(loader) == {"dgen shards (npy, uint8)", "dgen shards (npy, float32)", "dgen shards (png, uint8)",
                           "torchvision ImageFolder (png files)"}
    files = loader["torchvision ImageFolder (png files)"]["images_per_s"]
    for r in loader.values():
        assert r["images_per_s"] > 0 and r["vs_files"] == pytest.approx(r["images_per_s"] / files, abs=0.01)
    assert (tmp_path / "shards/bench/digits-m-32-npy/manifest.json").exists()
    assert len(list((tmp_path / "bench/files/digits-m-32").rglob("*.png"))) == 1437  # the train split as files

    rows = {r["input"]: r for r in result["train"]["rows"]}
    assert set(rows) == {"synthetic", "data"}
    for r in rows.values():
        assert r["name"] == "DCGAN-32" and r["batch_size"] == 8
        for who in ("dgen", "plain"):
            m = r[who]
            assert m["images_per_s"] > 0 and len(m["windows"]) == 2 and m["peak_memory_mb"] > 0
            assert m["gpu_busy"] is None and m["mfu"] is None  # CPU: no NVML, no known peak
            assert m["tflops"] == pytest.approx(r["flops_per_image"] * m["images_per_s"] / 1e12)
        assert r["ratio"] == pytest.approx(r["dgen"]["images_per_s"] / r["plain"]["images_per_s"])
    # DCGAN-32 (nz 100, 64 feature maps): a D step (G forward, D forward + backward on real and fake) plus
    # a G step (G and D forward, D backward to its input, G backward): ~0.4 GFLOP per image
    assert 0.2e9 < rows["synthetic"]["flops_per_image"] < 0.8e9
    for name in ("DCGAN-32", "synthetic", "data", "loader", "vs files"):
        assert name in proc.stdout


def test_peaks_are_found_by_device_name_and_unknown_devices_have_none():
    """The MFU denominator: a dense bf16 peak for the GPUs dgen knows (the SXM H100 above the PCIe one), none
    for anything else, so no utilisation is made up for a CPU."""
    sxm, pcie, h200 = peak_flops("NVIDIA H100 80GB HBM3"), peak_flops("NVIDIA H100 PCIe"), peak_flops("NVIDIA H200")
    assert all(isinstance(p, float) and 1e14 < p < 1e16 for p in (sxm, pcie, h200)) and pcie < sxm
    assert peak_flops("Some CPU") is None


def test_stream_bench_times_the_training_stream(digits_shards):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "dgen.bench.stream", str(digits_shards), "--workers", "2",
                           "--images", "512", "--batch-size", "64"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{digits_shards}: 2 workers, first batch" in done.stdout and "images/s" in done.stdout
