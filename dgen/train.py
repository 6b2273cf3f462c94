"""Train a model: `accelerate launch dgen/train.py --model vae` (or `dgen train --model vae`).

    accelerate launch dgen/train.py --model vae                      # conv VAE on embedded digits, CPU ok
    accelerate launch dgen/train.py --model vae --data celeba        # after `dgen shard celeba --root ...`
    accelerate launch dgen/train.py --model vae --max-steps 200 --tracker none
    accelerate launch dgen/train.py --model dann --data digits:digits-m    # domain adaptation: SOURCE:TARGET
    accelerate launch dgen/train.py --out runs/my-run --resume       # continue exactly where it stopped
    accelerate launch dgen/train.py --model vae --help               # every flag, with the preset's defaults

Outputs land in the run folder printed at the start (default runs/MODEL-DATASET-TIMESTAMP/).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by `accelerate launch dgen/train.py`: make `dgen` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgen.options import parse_args  # noqa: E402
from dgen.engine.run import config_for_run  # noqa: E402
from dgen.errors import DgenError, setup_logging  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    try:
        overrides, replay = parse_args(argv)
        dry_run = overrides.pop("dry_run", False)
        cfg = config_for_run(overrides, replay)
        if dry_run:  # every check a start makes, the method built on the CPU; no Accelerator, no step
            from dgen.engine.trainer import dry_run as check

            print(check(cfg))
            return 0
        from dgen.engine.trainer import train

        run_dir = train(cfg)
    except DgenError as e:
        print(f"dgen: error: {e}", file=sys.stderr)
        return 2
    print(f"run folder: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
