"""``python -m specfit``: the same command line as ``specfit`` (e.g. where the console script
is not on PATH)."""

import sys

from specfit.cli import main

if __name__ == "__main__":
    sys.exit(main())
