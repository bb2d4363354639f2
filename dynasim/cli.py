"""The ``dynasim`` command line (argparse; flag names follow ``vllm bench serve``).

Every user error ends in one line ``dynasim: error: <file>:<line>: field '<f>': <what>``
and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dynasim.cli_programs import add_commands, add_program_flags
from dynasim.errors import InputError

def _add_limit_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine limits (override the profile's)")
    g.add_argument("--max-num-seqs", type=int, help="most running requests per step")
    g.add_argument("--max-num-batched-tokens", type=int, help="token budget per step")
    g.add_argument("--kv-capacity-tokens", type=int, help="KV cache size in tokens")
    g.add_argument("--block-size", type=int, help="tokens per KV block")
    g.add_argument("--max-model-len", type=int, help="prompt + output limit (tokens)")
    g.add_argument("--scheduling", choices=("v1", "v0"),
                   help="v1: chunked prefill, decode first; v0: prefill-only steps first")


def _profile(args):
    from dynasim.profile import LIMITS, load_profile

    prof = load_profile(args.profile)
    return prof.with_overrides(**{k: getattr(args, k) for k in LIMITS})


def trace_from_args(args):
    """The trace of ``--trace``, cut to ``--num-prompts`` and re-timed by
    ``--request-rate`` / ``--burstiness`` / ``--seed`` (``simulate`` and ``replay``
    read the same requests at the same times from the same flags).

    Raises:
        InputError: an unreadable trace or ``--num-prompts < 1``.
    """
    from dynasim import arrivals, trace as trace_mod

    tr = trace_mod.read_trace(args.trace)
    if args.num_prompts is not None:
        if args.num_prompts < 1:
            raise InputError(f"--num-prompts must be >= 1, got {args.num_prompts}",
                             field="num_prompts")
        tr = tr.head(args.num_prompts)
    if args.request_rate is not None:
        tr = arrivals.retime(tr, args.request_rate, args.burstiness, args.seed)
    return tr


def cmd_simulate(args) -> None:
    """``dynasim simulate``: run a trace through one simulated replica."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from dynasim.data_record import json_default
    from dynasim.metrics import parse_goodput, summarize
    from dynasim.policy import make_policy
    from dynasim.simulation import simulate

    goodput = parse_goodput(args.goodput)
    profile = _profile(args)
    if (args.trace is None) == (args.workload is None):
        raise InputError("give exactly one of --trace and --workload", field="trace")
    if args.workload is not None:
        from dynasim.cli_programs import simulate_workload

        return simulate_workload(args, profile)
    policy = make_policy(args.policy)
    tr = trace_from_args(args)
    console = Console(stderr=True)
    t0 = time.perf_counter()
    with Progress(TextColumn("simulating"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total} requests"), TimeElapsedColumn(), console=console,
                  transient=True, disable=args.no_progress) as bar:
        task = bar.add_task("sim", total=len(tr))
        records, engine = simulate(tr, profile, policy,
                                   progress=lambda n: bar.update(task, completed=n))
    wall = time.perf_counter() - t0
    summary = summarize(records, goodput)
    summary.update({"trace": tr.source, "profile": profile.name, "policy": policy.name,
                    "scheduling": profile.scheduling, "num_prompts": len(tr),
                    "request_rate": args.request_rate if args.request_rate is not None
                    else "trace", "burstiness": args.burstiness, "seed": args.seed,
                    "engine_steps": engine.num_steps, "wall_seconds": wall})
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    records.to_parquet(out / "requests.parquet", index=False)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=json_default) + "\n")
    print_summary(summary)
    print(f"wrote {out / 'requests.parquet'} and {out / 'summary.json'}")


def print_summary(s: dict, title: str = "simulated") -> None:
    """Print a summary in ``vllm bench serve``'s layout (``title``: simulated/replayed)."""
    def line(label, value, fmt="{:<10.2f}"):
        print("{:<40} ".format(label) + (fmt.format(value) if value is not None else ""))

    print("{s:{c}^{n}}".format(s=f" Serving Benchmark Result ({title}) ", n=50, c="="))
    line("Successful requests:", s["completed"], "{:<10}")
    line("Failed requests:", s["failed"], "{:<10}")
    line("Benchmark duration (s):", s["duration"])
    line("Total input tokens:", s["total_input_tokens"], "{:<10}")
    line("Total generated tokens:", s["total_output_tokens"], "{:<10}")
    line("Request throughput (req/s):", s["request_throughput"])
    if "request_goodput" in s:
        line("Request goodput (req/s):", s["request_goodput"])
    line("Output token throughput (tok/s):", s["output_throughput"])
    line("Total Token throughput (tok/s):", s["total_token_throughput"])
    line("Preemptions:", s["num_preemptions"], "{:<10}")
    for key, title in (("ttft", "Time to First Token"),
                       ("tpot", "Time per Output Token (excl. 1st token)"),
                       ("e2el", "End-to-end Latency")):
        print("{s:{c}^{n}}".format(s=title, n=50, c="-"))
        line(f"Mean {key.upper()} (ms):", s[f"mean_{key}_ms"])
        line(f"Median {key.upper()} (ms):", s[f"median_{key}_ms"])
        line(f"P90 {key.upper()} (ms):", s[f"p90_{key}_ms"])
        line(f"P99 {key.upper()} (ms):", s[f"p99_{key}_ms"])
    print("=" * 50)


def cmd_validate(args) -> None:
    """``dynasim validate``: fidelity against the real A100 vLLM runs, and against a
    live server when ``--base-url`` is given (see dynasim.validate)."""
    from dynasim.validate import (RUNS, consistency_table, leave_one_out, print_consistency,
                                  print_table, refit, validate_run)

    profile = _profile(args)
    rows = [validate_run(name, profile) for name in (args.runs or RUNS)]
    print_table(rows, f"Fidelity of {profile.name} ({profile.scheduling}) against real "
                      "vLLM runs (A100, OPT-13B): |sim - real| / real per request")
    ok = all(r["median_e2e_error"] <= 0.05 and r["median_ttft_error"] <= 0.15 for r in rows)
    print("issue targets (median E2E <= 5%, TTFT <= 15% on every run): "
          + ("met" if ok else "NOT met"))
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
        from replay.fidelity_cli import cmd_fidelity, live_args

        live = cmd_fidelity(live_args(args))
    else:
        print("live fidelity: skipped (no --base-url). Start a server (python -m "
              "replay.server, or any vLLM) and pass --base-url URL --model NAME.")
    if args.output:
        Path(args.output).write_text(json.dumps({"a100": rows, "live": live}, indent=2)
                                     + "\n")


def cmd_trace_generate(args) -> None:
    """``dynasim trace generate``: a seeded Poisson/Gamma trace with real lengths."""
    from dynasim import arrivals, trace as trace_mod

    src = trace_mod.read_trace(args.lengths_from)
    tr = arrivals.generate(src, args.num_prompts, args.request_rate, args.burstiness,
                           args.seed)
    trace_mod.write_mooncake(tr, args.output)
    print(f"wrote {len(tr)} requests to {args.output} ({tr.source})")


def cmd_profiles(args) -> None:
    """``dynasim profiles``: list shipped profiles, or build one from its sources."""
    from dynasim.profile import load_profile, shipped_profiles
    from dynasim.published import BUILDERS

    if args.build:
        if args.build not in BUILDERS:
            raise InputError(f"no builder (buildable: {', '.join(BUILDERS)})",
                             source=args.build)
        prof = BUILDERS[args.build]()
        text = prof.model_dump_json(indent=2) + "\n"
        if args.output:
            Path(args.output).write_text(text)
            print(f"wrote {args.output}")
        else:
            sys.stdout.write(text)
        return
    header = ("name", "model", "gpu", "TP", "KV tokens", "seqs", "batched", "max len",
              "sched", "form", "held-out median")
    rows = []
    for name in shipped_profiles():
        p = load_profile(name)
        rows.append((name, p.model, p.gpu, str(p.tensor_parallel_size),
                     str(p.kv_capacity_tokens), str(p.max_num_seqs),
                     str(p.max_num_batched_tokens),
                     "-" if p.max_model_len is None else str(p.max_model_len),
                     p.scheduling, p.step_time.form,
                     "-" if p.fit is None else f"{100 * p.fit.held_out_median_error:.1f}%"))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    left = {0, 1, 2, 8, 9}  # text columns; numbers are right-aligned
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) if i in left else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))).rstrip())


def cmd_benchmark(args) -> None:
    """``dynasim benchmark``: simulator speed on a real trace (see dynasim.benchmark)."""
    from dynasim.benchmark import run_benchmark

    run_benchmark(args.trace, args.profile, args.repeat, scheduling=args.scheduling,
                  max_model_len=args.max_model_len)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dynasim`` command."""
    parser = argparse.ArgumentParser(prog="dynasim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="simulate a trace on one vLLM replica")
    p.add_argument("--trace", help="dataset name or trace file "
                   "(.jsonl Mooncake, .csv Azure 2023)")
    p.add_argument("--workload", help="reasoning workload name (game24-sc, "
                   "game24-direct-sc, date-sc, game24-tot) or per-sample CSV")
    p.add_argument("--profile", required=True, help="profile name or JSON file")
    p.add_argument("--policy", default="fcfs", help="scheduling policy: fcfs, lpm, gang, "
                   "sjf, optionally +certaindex / +curve / +length (default fcfs)")
    p.add_argument("--request-rate", type=float, default=None,
                   help="trace: re-time with this rate (req/s; inf = all at t=0; "
                        "default: the trace's own timestamps); workload: Poisson program "
                        "arrival rate (programs/s)")
    p.add_argument("--burstiness", type=float, default=1.0,
                   help="gamma shape of inter-arrivals when re-timing (1 = Poisson)")
    p.add_argument("--num-prompts", type=int, default=None,
                   help="use only the first N requests of the trace")
    p.add_argument("--seed", type=int, default=0, help="seed of the arrival draw (and "
                   "of program order and sample draw order for workloads)")
    p.add_argument("--goodput", nargs="+", metavar="KEY:MS",
                   help="SLOs for goodput, e.g. ttft:200 tpot:50 e2el:10000")
    p.add_argument("--output-dir", required=True, help="where requests.parquet and "
                   "summary.json go")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_limit_flags(p)
    add_program_flags(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("validate", help="fidelity against real vLLM runs and a live server")
    p.add_argument("--profile", default="distserve-opt13b-a100")
    p.add_argument("--runs", nargs="+", help="ground-truth runs (default: all three)")
    p.add_argument("--refit", type=int, nargs="?", const=150, metavar="EVALS",
                   help="also refit the A100 calibration and check it leaving each run "
                        "out (EVALS simulations per fit, default 150; about a minute)")
    p.add_argument("--output", help="also write the rows as JSON here")
    _add_limit_flags(p)
    from replay.fidelity_cli import add_fidelity_flags

    add_fidelity_flags(p, required=False, live_prefix=True)  # the live part
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("trace", help="trace tools")
    tsub = p.add_subparsers(dest="trace_command", required=True)
    g = tsub.add_parser("generate", help="generate arrivals as vllm bench serve does")
    g.add_argument("--lengths-from", required=True, help="trace whose lengths are drawn")
    g.add_argument("--request-rate", type=float, required=True, help="req/s")
    g.add_argument("--burstiness", type=float, default=1.0)
    g.add_argument("--num-prompts", type=int, required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--output", required=True, help="Mooncake JSONL file to write")
    g.set_defaults(func=cmd_trace_generate)

    p = sub.add_parser("profiles", help="list shipped profiles or build one")
    p.add_argument("--build", metavar="NAME", help="rebuild a profile from its sources")
    p.add_argument("--output", help="file for --build (default stdout)")
    p.set_defaults(func=cmd_profiles)

    p = sub.add_parser("benchmark", help="simulator speed on a real trace")
    p.add_argument("--trace", default="azure-conv-2023")
    p.add_argument("--profile", default="distserve-opt13b-a100")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--scheduling", choices=("v1", "v0"))
    p.add_argument("--max-model-len", type=int)
    p.set_defaults(func=cmd_benchmark)
    add_commands(sub)
    from replay.cli import add_replay_commands

    add_replay_commands(sub)
    from dynasim import plots, sweep
    from replay import proxy

    for mod in (sweep, plots, proxy):
        mod.add_commands(sub)
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
