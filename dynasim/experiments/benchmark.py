"""Speed benchmark (a script, not a test): simulate a whole real trace and print wall
seconds and simulated seconds per wall second.

    dynasim benchmark [--trace azure-conv-2023] [--profile distserve-opt13b-a100]
    dynasim benchmark --startup        # how long `dynasim --help` takes

Default: the Azure 2023 conversation trace (19,366 requests at their recorded arrival
times, one hour) on ``distserve-opt13b-a100``. Target (issue #2): under 30 s on one core.
"""

from __future__ import annotations

import time

from dynasim.policies import make_policy
from dynasim.profiles import load_profile
from dynasim.simulation import simulate
from dynasim.trace import read_trace


def run_benchmark(trace: str = "azure-conv-2023", profile: str = "distserve-opt13b-a100",
                  repeat: int = 1, **limits) -> list[dict]:
    """Simulate ``trace`` ``repeat`` times; print and return one row per run.
    ``limits`` override profile limits (e.g. ``max_model_len``, ``scheduling``)."""
    tr = read_trace(trace)
    prof = load_profile(profile).with_overrides(**limits)
    rows = []
    for i in range(repeat):
        t0 = time.perf_counter()
        records, engine = simulate(tr, prof, make_policy("fcfs"))
        wall = time.perf_counter() - t0
        sim_s = float(records["finish_time"].max())
        served = int((records["error"] == "").sum())
        row = {"trace": trace, "requests": len(tr), "served": served, "profile": profile,
               "wall_s": wall, "simulated_s": sim_s, "speedup": sim_s / wall,
               "engine_steps": engine.num_steps, "steps_per_wall_s": engine.num_steps / wall}
        rows.append(row)
        print(f"run {i + 1}: {len(tr)} requests of {trace} ({served} served) on {profile} "
              f"({prof.scheduling}, max_model_len {prof.max_model_len}): "
              f"wall {wall:.2f} s, simulated {sim_s:.0f} s, "
              f"{sim_s / wall:.0f} simulated s per wall s, "
              f"{engine.num_steps} engine steps ({engine.num_steps / wall:.0f} steps/s)")
    return rows


HEAVY_MODULES = ("pandas", "aiohttp", "dask", "plotly", "numpy", "scipy", "pydantic")
"""Packages whose import ``dynasim --help`` should not pay for (issue 14)."""

_HELP = ("import contextlib, io, sys\nfrom dynasim.cli import main\n"
         "with contextlib.redirect_stdout(io.StringIO()):\n"
         "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
         "print(','.join(m for m in {heavy!r} if m in sys.modules))")


def run_startup_benchmark(repeat: int = 15) -> dict:
    """Time ``dynasim --help`` (a fresh interpreter that imports the CLI, builds every
    subcommand's parser and prints the help) ``repeat`` times; print and return the
    median and minimum wall seconds and the heavy packages it imported.

    Raises:
        RuntimeError: the command failed (its stderr is in the message).
    """
    import statistics
    import subprocess
    import sys

    code = _HELP.format(heavy=HEAVY_MODULES)
    times, imported = [], ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if out.returncode:
            raise RuntimeError(f"dynasim --help failed: {out.stderr[-500:]}")
        imported = out.stdout.strip()
    row = {"median_s": statistics.median(times), "min_s": min(times), "runs": repeat,
           "heavy_imported": imported.split(",") if imported else []}
    print(f"dynasim --help: median {row['median_s']:.3f} s, min {row['min_s']:.3f} s over "
          f"{repeat} runs; heavy packages imported: {imported or 'none'}")
    return row
