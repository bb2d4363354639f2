"""The ``dynasim`` command line (argparse; flag names follow ``vllm bench serve``).

Every user error ends in one line ``dynasim: error: <file>:<line>: field '<f>': <what>``
and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from dynasim.cli import experiments, live, profiles, programs, serve, simulate
from dynasim.errors import InputError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dynasim`` command (every subcommand registered)."""
    parser = argparse.ArgumentParser(prog="dynasim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (simulate, profiles, programs, experiments, live, serve):
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dynasim`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except InputError as exc:
        print(f"dynasim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dynasim: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
