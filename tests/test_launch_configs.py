"""Every accelerate config in launch/ loads with Accelerate's own loader and says what its name says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

LAUNCH = Path(__file__).parents[1] / "launch"
CONFIGS = sorted(LAUNCH.glob("*.yaml"))


def test_every_config_is_in_the_docs_table():
    """Each file in launch/ has a row (what it is, the command) in docs/distributed.md's table, and each row a file."""
    page = (LAUNCH.parent / "docs" / "distributed.md").read_text()
    rows = {line.split("`")[1] for line in page.splitlines() if line.startswith("| `") and ".yaml` |" in line}
    assert CONFIGS and rows == {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_matches_its_name(path):
    cfg = load_config_from_file(str(path))
    assert isinstance(cfg, ClusterConfig)
    name = path.stem
    assert "accelerate launch --config_file launch/" + path.name in path.read_text()  # documents its own use
    if name.startswith("deepspeed"):
        assert cfg.distributed_type == "DEEPSPEED"
        ds_file = Path(cfg.deepspeed_config["deepspeed_config_file"])
        ds = json.loads((LAUNCH.parent / ds_file).read_text())
        assert ds["zero_optimization"]["stage"] == 2
        precision = name.rsplit("-", 1)[1]
        assert ds[precision]["enabled"] is True and ds[{"bf16": "fp16", "fp16": "bf16"}[precision]]["enabled"] is False
        assert "mixed_precision" not in path.read_text().split("\ncompute_environment")[1]  # one place only
    elif "bf16" in name:
        assert cfg.mixed_precision == "bf16"
    if name == "cpu-2proc":
        assert cfg.use_cpu and cfg.num_processes == 2
    if name.startswith("multinode"):
        assert cfg.num_machines > 1 and cfg.num_processes % cfg.num_machines == 0
