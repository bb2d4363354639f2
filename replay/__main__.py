"""``python -m replay ...`` = ``dynasim replay ...`` (``python -m replay compare ...`` =
``dynasim compare ...``)."""

import sys

from dynasim.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(main(argv if argv[:1] == ["compare"] else ["replay", *argv]))
