"""``python -m cmg_lib``: the command line of ``cmg_lib.cli``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
