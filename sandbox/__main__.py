"""``python -m sandbox``: the same as ``ccexport sandbox``."""

import sys

from sandbox.cli import main

raise SystemExit(main(sys.argv[1:]))
