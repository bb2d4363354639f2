"""``dynasim sweep``, ``plot`` and ``validate``: many simulations to one table, the
paper's figures from it, and fidelity against real vLLM runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dynasim.cli.common import add_limit_flags, csv_list, profile_from_args
from dynasim.cli.fidelity import add_fidelity_flags
from dynasim.errors import InputError

if TYPE_CHECKING:
    import pandas as pd


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``sweep``, ``plot`` and ``validate``."""
    from dynasim.experiments.plots import KINDS  # the module loads plotly only in plot()

    p = sub.add_parser("sweep", help="run a sweep of online simulations to one table")
    p.add_argument("config", nargs="?", help="YAML or TOML sweep config (keys in "
                   "dynasim/experiments/sweep_config.py); flags override it")
    p.add_argument("--output-dir", required=True, help="results.parquet, cells.jsonl, "
                   "records/ go here; rerun to resume")
    p.add_argument("--workload", type=csv_list(str), help="comma-separated workloads")
    p.add_argument("--profile", type=csv_list(str), help="comma-separated profiles")
    p.add_argument("--policy", type=csv_list(str), help="comma-separated policies")
    p.add_argument("--request-rate", type=csv_list(float), help="program rates, programs/s")
    p.add_argument("--slo-scale", type=csv_list(float), help="comma-separated SLO scales")
    p.add_argument("--seed", type=csv_list(int), help="comma-separated seeds")
    p.add_argument("--replicas", type=csv_list(int), help="comma-separated fleet sizes "
                   "(replicas behind a router; sets the fleet axes)")
    p.add_argument("--router", type=csv_list(str), help="comma-separated routers "
                   "(round-robin, least-outstanding, least-kv, prefix-affinity, "
                   "program-affinity)")
    p.add_argument("--num-programs", type=int)
    p.add_argument("--cap", type=int)
    p.add_argument("--detect-at", type=int)
    p.add_argument("--threshold", type=float)
    p.add_argument("--base-deadline", type=float, help="seconds")
    p.add_argument("--keep-records", action="store_true",
                   help="keep each cell's program records (for CDF plots)")
    p.add_argument("--scheduler", choices=("processes", "dask"), default="processes")
    p.add_argument("--jobs", type=int, help="local processes (default: one per core)")
    p.add_argument("--address", help="Dask scheduler, tcp://HOST:PORT")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--plot", action="store_true", help="also write the rate-attainment "
                   "figures (dynasim plot --kind rate-attainment) to OUTPUT_DIR/plots")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("plot", help="the Dynasor paper's figures (plotly HTML, PNG with "
                       "Chromium) from sweeps, batch CSVs, runs and comparisons")
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="sweep results.parquet (or its folder), batch CSV, run folders "
                        "or compare.json, by kind")
    p.add_argument("--kind", required=True, help="one of: " + ", ".join(KINDS))
    p.add_argument("--output", required=True, help="folder for the figures")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="keep rows (runs) whose column (summary key) KEY equals VALUE; "
                        "repeatable")
    p.add_argument("--target", type=float, default=0.9,
                   help="SLO attainment target marked on the attainment plots "
                        "(fraction, default 0.9)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("validate", help="fidelity against real vLLM runs and a live server")
    p.add_argument("--profile", default="distserve-opt13b-a100")
    p.add_argument("--runs", nargs="+", help="runs to check: DistServe's three and the "
                   "recorded vLLM runs (dynasim.runs; --list-runs); default: all")
    p.add_argument("--list-runs", action="store_true", help="list the run names and exit")
    p.add_argument("--refit", type=int, nargs="?", const=150, metavar="EVALS",
                   help="also refit the A100 calibration and check it leaving each run "
                        "out (EVALS simulations per fit, default 150; about a minute)")
    p.add_argument("--output", help="also write the rows as JSON here")
    add_limit_flags(p)
    add_fidelity_flags(p, required=False, live_prefix=True)  # the live part
    p.set_defaults(func=cmd_validate)


def cmd_sweep(args: argparse.Namespace) -> None:
    """``dynasim sweep``: load the config, apply flags, run, print the table's head."""
    overrides = {"workloads": args.workload, "profiles": args.profile,
                 "policies": args.policy, "request_rates": args.request_rate,
                 "slo_scales": args.slo_scale, "seeds": args.seed,
                 "replicas": args.replicas, "routers": args.router,
                 "num_programs": args.num_programs, "cap": args.cap,
                 "detect_at": args.detect_at, "threshold": args.threshold,
                 "base_deadline": args.base_deadline,
                 "keep_records": True if args.keep_records else None}
    from dynasim.experiments.sweep import rate_tables, run_sweep
    from dynasim.experiments.sweep_config import load_config

    cfg = load_config(args.config, overrides)
    if args.jobs is not None and args.jobs < 1:
        raise InputError("--jobs must be >= 1", field="jobs")
    df = run_sweep(cfg, args.output_dir, scheduler=args.scheduler, jobs=args.jobs,
                   address=args.address, progress=not args.no_progress)
    if len(df) and "slo_attainment" in df:
        if df["program_rate"].nunique() > 1:
            for (workload, profile, scale), tables in rate_tables(df).items():
                for name, t in tables.items():
                    print(f"\n{name}: {workload} on {profile}, SLO scale {scale:g}; "
                          "columns: program rate (programs/s)")
                    print(t.to_string(float_format="{:.2f}".format))
            print("\nhighest program rate at 90% SLO attainment (programs/s)")
            print(headline_text(df))
        if df["slo_scale"].nunique() > 1:
            print(tightest_text(df))
    if args.plot:
        from dynasim.experiments.plots import plot, png_skipped

        for f in plot([Path(args.output_dir)], "rate-attainment",
                      Path(args.output_dir) / "plots"):
            print(f"wrote {f}")
        if note := png_skipped():
            print(note)
    failed = df.attrs.get("failed_cells") or []
    if failed:  # the table is incomplete: say so in the exit status
        first = failed[0]
        print(f"dynasim: error: {len(failed)} of {len(df) + len(failed)} cells failed "
              f"(rerun to retry them); first: cell {first['cell_id']} ({first['policy']} "
              f"at {first['program_rate']} programs/s): {first['error']}", file=sys.stderr)
        raise SystemExit(1)


def _in_words(t: pd.DataFrame, col: str, bound: dict, sign: str) -> pd.DataFrame:
    """``t`` for printing: ``col`` and the ratio column as text, NaN said in words
    (``status`` ``below_target``: ``<sign> bound`` of the row's group; else ``-``)."""
    keys = [c for c in ("workload", "profile", "slo_scale", "program_rate") if c in t
            and c != col]
    out = t.copy()

    def cell(row: pd.Series) -> str:
        v = row[col]
        if v == v:  # not NaN
            return f"{v:.2f}"
        if row["status"] == "below_target":
            return f"{sign} {bound[tuple(row[k] for k in keys)]:.2f}"
        return "-"
    out[col] = [cell(r) for _, r in t.iterrows()]
    for c in t.columns:
        if c.startswith(("ratio_to_", "tighter_than_")):
            out[c] = [f"{v:.2f}" if v == v else "-" for v in t[c]]
    return out


def headline_text(df: pd.DataFrame) -> str:
    """The headline table (:func:`dynasim.experiments.sweep.headline_table`) as printed:
    a policy that misses 90% SLO attainment even at the lowest rate swept reads ``<
    LOWEST`` instead of NaN (the numeric table, for programs, keeps NaN)."""
    from dynasim.experiments.results import ok_rows
    from dynasim.experiments.sweep import headline_table

    t = headline_table(df)
    low = ok_rows(df).groupby(["workload", "profile", "slo_scale"])["program_rate"].min()
    return _in_words(t, "max_rate", low.to_dict(), "<").to_string(
        index=False, float_format="{:.2f}".format)


def tightest_text(df: pd.DataFrame) -> str:
    """The tightest-SLO table as printed: a policy that misses the target even at the
    loosest SLO scale reads ``> LOOSEST`` instead of NaN."""
    from dynasim.experiments.results import ok_rows
    from dynasim.experiments.sweep import tightest_slo_table

    t = tightest_slo_table(df)
    high = ok_rows(df).groupby(["workload", "profile", "program_rate"])["slo_scale"].max()
    return _in_words(t, "min_slo_scale", high.to_dict(), ">").to_string(
        index=False, float_format="{:.2f}".format)


def cmd_plot(args: argparse.Namespace) -> None:
    """``dynasim plot``: write the figures and print the files, saying on stderr what it
    is doing meanwhile (PNG export takes most of the time), and one line when PNGs are
    skipped for want of a Chromium."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("loading plotly and pandas", total=None)
        from dynasim.experiments.plots import plot, png_skipped

        files = plot(args.results, args.kind, args.output, args.filter, args.target,
                     progress=lambda text: bar.update(task, description=text))
    for f in files:
        print(f"wrote {f}")
    if files and (note := png_skipped()):
        print(note)


def cmd_validate(args: argparse.Namespace) -> None:
    """``dynasim validate``: fidelity against the real A100 vLLM runs, and against a
    live server when ``--base-url`` is given (see dynasim.experiments.validate)."""
    from dynasim.experiments.validate import (
        RUNS,
        consistency_table,
        fidelity_table,
        leave_one_out,
        print_consistency,
        print_fidelity_table,
        print_table,
        refit,
        run_profile,
    )
    from dynasim.runs import RUNS as RECORDED

    if args.list_runs:
        for name in RUNS:
            print(f"{name}  (distserve-opt13b-a100)")
        for name in RECORDED:
            prof, fitted = run_profile(name)
            print(f"{name}  ({prof}, {'fitted on' if fitted else 'held out'})")
        return
    profile = profile_from_args(args)
    table = fidelity_table(args.runs, profile)
    rows = [r for r in table if r["source"] == "distserve"]
    if rows:
        print_table(rows, f"Fidelity of {profile.name} ({profile.scheduling}) against real "
                          "vLLM runs (A100, OPT-13B): |sim - real| / real per request")
        ok = all(r["median_e2e_error"] <= 0.05 and r["median_ttft_error"] <= 0.15
                 for r in rows)
        print("issue targets (median E2E <= 5%, TTFT <= 15% on every run): "
              + ("met" if ok else "NOT met"))
    print_fidelity_table(table)
    if set(args.runs or RUNS) == set(RUNS):
        print_consistency(*consistency_table())
    if args.refit:
        cal, cost = refit(max_evals=args.refit)
        print(f"refit on all runs: {cal} (objective {cost:.4f})")
        loo = leave_one_out(max_evals=args.refit)
        print_table(loo, "Leave one run out: fitted on the other runs, checked on this one")
        for r in loo:
            print(f"  {r['run']}: {r['calibration']}")
    live = None
    if args.base_url:
        from dynasim.cli.fidelity import cmd_fidelity, live_args

        live = cmd_fidelity(live_args(args))
    else:
        print("live fidelity: skipped (no --base-url). Start a server (python -m "
              "replay.testing.vllm_server, or any vLLM) and pass --base-url URL --model NAME.")
    if args.output:
        Path(args.output).write_text(json.dumps({"a100": rows, "runs": table, "live": live},
                                                indent=2)
                                     + "\n")
