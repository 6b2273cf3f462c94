"""The shard writer: manifest contents, byte-identical output however the work is split, merging
parts, skip-and-count of unreadable items, and the CLI's errors."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dgen.cli import main
from dgen.data.manifest import load_manifest
from dgen.data.shard import merge_parts, write_shards
from dgen.data.sources import get_source
from dgen.data.stream import eval_loader
from dgen.errors import DataError
from tests.fixtures import image_formats as imf


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_digits_manifest(digits_shards):
    m = load_manifest(digits_shards)
    assert (m.dataset, m.channels, m.image_size, m.classes) == ("digits", 1, [32, 32], [str(i) for i in range(10)])
    assert {s: (i.samples, len(i.shards)) for s, i in m.splits.items()} == {"train": (1437, 5), "test": (360, 2)}
    assert [sh.samples for sh in m.split("train").shards] == [300, 300, 300, 300, 237]
    assert sorted(p.name for p in digits_shards.glob("*.tar")) == sorted(
        sh.name for s in m.splits.values() for sh in s.shards)


def test_same_output_for_workers_and_parts(tmp_path):
    """digits-m draws random photos and crops per item: output must not depend on who wrote what."""
    src = get_source("digits-m")(size=32, seed=1)
    write_shards(src, tmp_path / "one", size=32, channels=3, per_shard=200, progress=False)
    write_shards(src, tmp_path / "again", size=32, channels=3, per_shard=200, progress=False)
    write_shards(src, tmp_path / "pool", size=32, channels=3, per_shard=200, workers=2, progress=False)
    for i in range(3):
        write_shards(src, tmp_path / "parts", size=32, channels=3, per_shard=200, part=(i, 3), progress=False)
    assert len(list((tmp_path / "parts").glob("manifest.part-*"))) == 3
    merge_parts(tmp_path / "parts")
    reference = _digest(tmp_path / "one")
    assert len(reference) == 1 + 8 + 2  # manifest + train + test shards
    for other in ("again", "pool", "parts"):
        assert _digest(tmp_path / other) == reference, other


def test_merge_names_the_missing_part(tmp_path):
    src = get_source("digits")()
    write_shards(src, tmp_path, per_shard=500, part=(0, 3), progress=False)
    write_shards(src, tmp_path, per_shard=500, part=(2, 3), progress=False)
    with pytest.raises(DataError, match=r"manifest\.part-0001-of-0003\.json"):
        merge_parts(tmp_path)
    with pytest.raises(DataError, match="dgen merge"):
        load_manifest(tmp_path)  # no manifest.json yet: the message says what to do


def test_merge_refuses_parts_with_other_options(tmp_path):
    write_shards(get_source("digits")(), tmp_path, size=32, per_shard=500, part=(0, 2), progress=False)
    write_shards(get_source("digits")(), tmp_path, size=16, per_shard=500, part=(1, 2), progress=False)
    with pytest.raises(DataError, match="other options"):
        merge_parts(tmp_path)


def test_unreadable_items_are_skipped_and_counted(tmp_path):
    written = imf.write_folder(tmp_path / "raw", layout="split-classes", n=4)
    victim = sorted((tmp_path / "raw" / "train").rglob("*.png"))[1]
    victim.write_bytes(victim.read_bytes()[:60])  # truncated PNG
    out = tmp_path / "shards"
    write_shards(get_source("folder")(root=tmp_path / "raw"), out, size=16, per_shard=3, progress=False)
    info = load_manifest(out).split("train")
    assert info.skipped == 1 and victim.name in info.skipped_keys[0]
    assert info.samples == len(written["train"]) - 1
    keys = [k for b in eval_loader(out, "train", batch_size=100) for k in b["key"]]
    assert len(keys) == info.samples and f"{victim.parent.name}__{victim.stem}" not in keys


def test_varying_native_sizes_recorded_as_mixed(tmp_path):
    imf.write_folder(tmp_path / "raw", layout="flat", n=6)  # the fixture varies image sizes
    write_shards(get_source("folder")(root=tmp_path / "raw"), tmp_path / "s", size=None, progress=False)
    assert load_manifest(tmp_path / "s").image_size is None
    with pytest.raises(DataError, match="vary in size"):
        eval_loader(tmp_path / "s", "train", batch_size=2)
    assert next(iter(eval_loader(tmp_path / "s", "train", batch_size=2, image_size=8)))["image"].shape == (2, 3, 8, 8)


@pytest.mark.slow
def test_cli_shard_and_verify(tmp_path, capsys):
    """The installed console script, end to end, as a user runs it."""
    out = tmp_path / "digits"
    dgen = str(Path(sys.executable).parent / "dgen")  # the console script installed beside this Python
    done = subprocess.run([dgen, "shard", "digits", "--out", str(out), "--size", "28", "--quiet"],
                          capture_output=True, text=True, check=True)
    assert "digits/train: 1437 samples in 2 shards (28x28, 1 ch)" in done.stdout
    assert main(["verify", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["options"]["size"] == 28


@pytest.mark.parametrize("argv, message", [
    (["shard", "mnist", "--root", "/nonexistent/mnist"], "train-images-idx3-ubyte"),
    (["shard", "celeba", "--root", "/nonexistent"], "list_attr_celeba.txt"),
    (["shard", "digits", "--part", "3/2"], "--part 3/2"),
    (["shard", "digits", "--per-shard", "0"], "--per-shard"),
    (["verify", "/nonexistent/shards"], "does not exist"),
])
def test_cli_errors_are_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dgen: error:") and message in err


def test_cli_unknown_source(capsys):
    with pytest.raises(SystemExit) as e:
        main(["shard", "imagenet"])
    assert e.value.code == 2 and "invalid choice: 'imagenet'" in capsys.readouterr().err


@pytest.mark.slow
def test_python_dash_m(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dgen", "shard", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "digits-m" in done.stdout


@pytest.mark.slow
def test_a_split_that_ends_empty_is_caught_where_it_arises(tmp_path, capsys):
    """Every test image unreadable: `dgen shard` fails naming the split (unless told to allow it), `dgen verify`
    fails on it, and a training dry run refuses the data before any step."""
    imf.write_folder(tmp_path / "raw", layout="split-classes", n=1)
    for victim in (tmp_path / "raw" / "test").rglob("*.png"):
        victim.write_bytes(victim.read_bytes()[:60])
    out = tmp_path / "shards"
    assert main(["shard", "folder", "--root", str(tmp_path / "raw"), "--out", str(out), "--size", "16", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "split 'test' (2 unreadable items) of" in err and "--allow-empty-splits" in err
    assert main(["shard", "folder", "--root", str(tmp_path / "raw"), "--out", str(out), "--size", "16", "--quiet",
                 "--allow-empty-splits"]) == 0
    assert main(["verify", str(out)]) != 0
    assert "split 'test' holds no samples (its 2 items were unreadable" in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "dgen.train", "--model", "vae", "--data", str(out), "--dry-run",
                           "--tracker", "none"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and f"split 'test' of {out} holds no samples" in done.stderr, done.stderr


def test_unreadable_sample_key_in_image(tmp_path):
    """A dot in a key would split the sample in two when read back: the writer refuses it."""
    from dgen.data.sources.base import Sample, Source

    class Dotted(Source):
        name = "dotted"

        def splits(self):
            return {"train": 1}

        def read(self, split, index):
            return Sample("a.b", Image.new("L", (4, 4)))

    with pytest.raises(DataError, match="contains a dot"):
        write_shards(Dotted(), tmp_path, progress=False)


def test_processes_that_start_together_shard_an_embedded_dataset_once(tmp_path):
    """The ranks of a multi-process --dry-run (no process group to wait on) and runs started together take turns
    on a lock file: one shards, the others find its shards, and the result verifies."""
    import subprocess
    import sys

    from dgen.data.verify import verify

    code = ("import sys, logging; logging.basicConfig(level=logging.INFO)\n"
            "from dgen.data.auto import ensure_shards; ensure_shards('digits', sys.argv[1])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    assert sum("first use of digits" in e for e in errs) == 1
    assert verify(tmp_path / "digits") == []
