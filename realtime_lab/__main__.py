"""``python -m realtime_lab``: the same command line as ``realtime-lab``."""

import sys

from realtime_lab.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m realtime_lab"))
