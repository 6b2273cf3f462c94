import sys

from dgen.cli import main

sys.exit(main())
