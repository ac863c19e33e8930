"""``python -m modelrollout_devenv up|demo|cluster``: the same as ``modelrollout-dev``."""

import sys

from modelrollout_devenv.cli import main

if __name__ == "__main__":
    sys.exit(main())
