"""`python -m dgen ...` is the `dgen` command."""

import sys

from dgen.cli import main

if __name__ == "__main__":  # guarded: spawned shard workers re-import this module as __mp_main__
    sys.exit(main())
