"""``python -m dynasim.runs [NAME OUT_DIR]``: list the recorded runs, or export one
(:func:`dynasim.runs.export_run`): its trace as Mooncake JSONL and its measured records
as a run folder for ``dynasim compare``."""

from __future__ import annotations

import sys

from dynasim.errors import InputError
from dynasim.runs import RUNS, export_run


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on bad input, printed in one line)."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("\n".join(RUNS))
        return 0
    if len(args) != 2:
        print("usage: python -m dynasim.runs [NAME OUT_DIR]", file=sys.stderr)
        return 2
    try:
        trace, folder = export_run(args[0], args[1])
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {trace} and {folder}/requests.parquet, summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
