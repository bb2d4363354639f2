"""The ``dynasim`` command line, at the top of the import graph: it imports the rest of
dynasim and replay (lazily, inside each command), and nothing imports it. One module per
family of commands; :func:`main` is the console script.
"""

from dynasim.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
