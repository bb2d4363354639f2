"""``python -m dynasim`` is the ``dynasim`` command."""

import sys

from dynasim.cli import main

sys.exit(main())
