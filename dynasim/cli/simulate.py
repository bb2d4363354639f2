"""``dynasim simulate``, ``trace generate`` and ``benchmark``: one simulated replica,
the traces it runs on, and how fast it runs (``profiles``: :mod:`dynasim.cli.profiles`)."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING

from dynasim.cli.common import (
    add_limit_flags,
    add_program_flags,
    int_list,
    intra_args,
    online_profile,
    prepare_output_dir,
    print_program_summary,
    print_summary,
    profile_from_args,
    require_at_least_one,
    require_rate,
    trace_from_args,
)
from dynasim.errors import InputError

if TYPE_CHECKING:
    from dynasim.profiles.profile import Profile


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``simulate``, ``trace`` and ``benchmark``."""
    p = sub.add_parser("simulate", help="simulate a trace on one vLLM replica or a fleet "
                       "behind a router")
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
                   "summary.json go (refused if it holds another run)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in "
                   "--output-dir (removes its requests.*, programs.*, summary.json, "
                   "compare.*)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--max-concurrency", type=int, default=None, metavar="N",
                   help="trace, fcfs, one replica: a client that keeps at most N requests "
                   "in flight and sends due ones in order as slots free; latencies count "
                   "from the due time, as dynasim replay --max-concurrency measures them "
                   "(dynasim/runs/client.py)")
    g = p.add_argument_group("a fleet of replicas behind a router")
    g.add_argument("--replicas", type=int, default=None, metavar="N",
                   help="number of replicas (default 1, or one per --replica-profile)")
    g.add_argument("--replica-profile", nargs="+", metavar="P",
                   help="profiles of the replicas in order, repeated to fill --replicas "
                        "(a heterogeneous fleet; default: --profile for every replica)")
    g.add_argument("--router", default="least-outstanding",
                   help="round-robin, least-outstanding, least-kv, prefix-affinity or "
                        "program-affinity (default least-outstanding)")
    g.add_argument("--router-knob", nargs="+", metavar="KEY=VALUE", default=[],
                   help="router knobs, e.g. cache_threshold=0.5 balance_abs_threshold=32 "
                        "balance_rel_threshold=1.5 (dynasim/routers/affinity.py)")
    add_limit_flags(p)
    add_program_flags(p)
    p.set_defaults(func=cmd_simulate)

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

    p = sub.add_parser("benchmark", help="simulator speed on a real trace")
    p.add_argument("--trace", default="azure-conv-2023")
    p.add_argument("--profile", default="distserve-opt13b-a100")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--scheduling", choices=("v1", "v0"))
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--startup", action="store_true", help="time `dynasim --help` instead "
                   "(fresh interpreters; --repeat defaults to 15)")
    g = p.add_argument_group("--scale: reading and simulating a million requests")
    g.add_argument("--scale", action="store_true", help="time reading and simulating an "
                   "Azure-like trace of --num-requests per replica, for each fleet size "
                   "of --replicas (from --trace, on --profile)")
    g.add_argument("--num-requests", type=int, default=1_000_000,
                   help="requests per replica (default 1000000)")
    g.add_argument("--replicas", default="1,8", help="fleet sizes, comma-separated "
                   "(default 1,8)")
    g.add_argument("--rate-per-replica", type=float, default=1.8,
                   help="req/s per replica (default 1.8)")
    g.add_argument("--router", default="least-outstanding", help="router of the fleets")
    g.add_argument("--cprofile", type=int, default=0, metavar="N",
                   help="also print the N functions taking the most simulate time")
    g = p.add_argument_group("--programs: simulate_programs on reasoning workloads")
    g.add_argument("--programs", action="store_true", help="time simulate_programs on "
                   "--workloads (requests per wall second, peak memory per request) on "
                   "--profile if given, else vllm023-qwen3-14b-h100 (prefix caching)")
    g.add_argument("--workloads", default="game24-tot,game24-sc,cot-r1-llama8b-math500",
                   help="comma-separated workloads (default game24-tot,game24-sc,"
                   "cot-r1-llama8b-math500)")
    g.add_argument("--policy", default=None, help="policy (default sjf+dynasor-cot for "
                   "chains of thought, sjf+certaindex otherwise)")
    g.add_argument("--num-programs", type=int, default=1000,
                   help="programs per workload (default 1000)")
    g.add_argument("--program-rate", type=float, default=1.0,
                   help="programs/s (default 1.0)")
    p.set_defaults(func=cmd_benchmark)


def cmd_simulate(args: argparse.Namespace) -> None:
    """``dynasim simulate``: run a trace through one simulated replica, or through a
    fleet behind a router (``--replicas``, ``--replica-profile``, ``--router``;
    :mod:`dynasim.cluster`)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from dynasim.cluster import simulate_cluster
    from dynasim.data_record import json_default
    from dynasim.metrics import parse_goodput, summarize
    from dynasim.policies import make_policy
    from dynasim.routers import make_router
    from dynasim.simulation import simulate

    goodput = parse_goodput(args.goodput)
    profile = profile_from_args(args)
    if (args.trace is None) == (args.workload is None):
        raise InputError("give exactly one of --trace and --workload", field="trace")
    fleet = fleet_profiles(args, profile)
    if args.workload is not None:
        if args.max_concurrency is not None:
            raise InputError("--max-concurrency is simulated for traces only (programs: "
                             "dynasim replay --max-concurrency)", field="max_concurrency")
        return simulate_workload(args, profile, fleet)
    policy = make_policy(args.policy)
    check_max_concurrency(args, policy.name, len(fleet))
    knobs = router_knobs(args.router_knob)
    router = make_router(args.router, **knobs)
    tr = trace_from_args(args)
    out = prepare_output_dir(args.output_dir, args.overwrite, "simulate")
    console = Console(stderr=True)
    t0 = time.perf_counter()
    with Progress(TextColumn("simulating"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total} requests"), TimeElapsedColumn(), console=console,
                  transient=True, disable=args.no_progress) as bar:
        task = bar.add_task("sim", total=len(tr))
        if args.max_concurrency is not None:
            from dynasim.runs.client import simulate_capped

            records = simulate_capped(tr, fleet[0], policy, args.max_concurrency,
                                      measure_from="due",
                                      progress=lambda n: bar.update(task, completed=n))
            engine = None
        elif len(fleet) == 1:
            records, engine = simulate(tr, fleet[0], policy,
                                       progress=lambda n: bar.update(task, completed=n))
        else:
            records, engine = simulate_cluster(
                tr, fleet, lambda: make_policy(args.policy), router,
                progress=lambda n: bar.update(task, completed=n))
    wall = time.perf_counter() - t0
    summary = summarize(records, goodput, num_replicas=len(fleet))
    names = list(dict.fromkeys(p.name for p in fleet))
    if len(fleet) > 1:
        summary.update({"router": router.name, "router_knobs": knobs,
                        "replica_profiles": [p.name for p in fleet]})
    summary.update({"trace": tr.source, "profile": ",".join(names), "policy": policy.name,
                    "scheduling": ",".join(dict.fromkeys(p.scheduling for p in fleet)),
                    "num_prompts": len(tr), "max_concurrency": args.max_concurrency,
                    "request_rate": args.request_rate if args.request_rate is not None
                    else "trace", "burstiness": args.burstiness, "seed": args.seed,
                    "engine_steps": engine.num_steps if engine is not None else None,
                    "wall_seconds": wall})
    records.to_parquet(out / "requests.parquet", index=False)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=json_default) + "\n")
    print_summary(summary)
    print(f"wrote {out / 'requests.parquet'} and {out / 'summary.json'}")


def check_max_concurrency(args: argparse.Namespace, policy: str, replicas: int) -> None:
    """``--max-concurrency``: >= 1; the simulated client sends due requests in due
    order, which is replay's client-side queue under ``fcfs`` only (other policies
    order replay's client queue themselves), on one replica.

    Raises:
        InputError: a cap < 1, another policy, or a fleet (field ``max_concurrency``).
    """
    n = args.max_concurrency
    if n is None:
        return
    require_at_least_one(n, "--max-concurrency")
    if policy != "fcfs":
        raise InputError(f"--max-concurrency is simulated under fcfs only (the client "
                         f"sends in due order); {policy} would order replay's client "
                         "queue itself", field="max_concurrency")
    if replicas > 1:
        raise InputError("--max-concurrency is simulated on one replica only",
                         field="max_concurrency")


def router_knobs(items: list[str]) -> dict[str, float]:
    """``["cache_threshold=0.5", ...]`` -> ``{"cache_threshold": 0.5}``.

    Raises:
        InputError: an item without ``=`` or with a value that is not a number (field
            ``router_knob``).
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise InputError(f"expected KEY=NUMBER, got {item!r}", field="router_knob")
    return out


def fleet_profiles(args: argparse.Namespace, profile: Profile) -> list[Profile]:
    """The profile of each replica: ``--replica-profile`` names in order, repeated to
    fill ``--replicas`` (default: one replica per name), else ``--profile`` (already
    loaded as ``profile``) ``--replicas`` times; the limit flags apply to every one.

    Raises:
        InputError: ``--replicas < 1``, fewer replicas than ``--replica-profile`` names,
            or an unknown profile or bad override.
    """
    from dynasim.profiles import LIMITS, load_profile

    names = args.replica_profile or []
    n = args.replicas if args.replicas is not None else max(1, len(names))
    require_at_least_one(n, "--replicas")
    if len(names) > n:
        raise InputError(f"{len(names)} --replica-profile names for {n} replicas",
                         field="replica_profile")
    if not names:
        return [profile] * n
    limits = {k: getattr(args, k) for k in LIMITS}
    loaded = {name: load_profile(name).with_overrides(**limits) for name in names}
    return [loaded[names[i % len(names)]] for i in range(n)]


def simulate_workload(args: argparse.Namespace, profile: Profile,
                      fleet: list[Profile] | None = None) -> None:
    """``dynasim simulate --workload W``: Poisson program arrivals on one replica, or
    on a fleet behind ``--router`` (:func:`dynasim.cluster.simulate_cluster_programs`)
    when ``fleet`` holds several profiles."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from dynasim.data_record import json_default
    from dynasim.metrics import summarize, summarize_programs
    from dynasim.policies import make_policy
    from dynasim.simulation import deadline_protocol, online_programs, simulate_programs
    from dynasim.workloads.catalog import load_workload

    profile = online_profile(args, profile)
    fleet = [online_profile(args, p) for p in fleet] if fleet and len(fleet) > 1 else None

    def new_policy():
        return make_policy(args.policy, inter=args.inter_program, aging_s=args.sjf_aging,
                           **intra_args(args))

    policy = new_policy()
    workload = load_workload(args.workload)
    out = prepare_output_dir(args.output_dir, args.overwrite, "simulate")
    specs, times, deadlines, base = online_programs(
        workload, profile, args.request_rate, burstiness=args.burstiness, seed=args.seed,
        num_programs=args.num_programs, slo_scale=args.slo_scale,
        base=args.base_deadline, cap=args.cap, base_multiple=args.base_deadline_multiple)
    t0 = time.perf_counter()
    with Progress(TextColumn("simulating"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total} programs"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True,
                  disable=args.no_progress) as bar:
        task = bar.add_task("sim", total=len(specs))
        if fleet is None:
            requests, programs, engine = simulate_programs(
                specs, times, profile, policy, deadlines,
                progress=lambda n: bar.update(task, completed=n))
        else:
            from dynasim.cluster import simulate_cluster_programs
            from dynasim.routers import make_router

            requests, programs, engine = simulate_cluster_programs(
                specs, times, fleet, new_policy,
                make_router(args.router, **router_knobs(args.router_knob)), deadlines)
    summary = summarize(requests, num_replicas=len(fleet or [profile]))
    window = {"warmup": args.warmup_programs, "cooldown": args.cooldown_programs}
    summary.update(summarize_programs(programs, **window))
    summary["deadline_protocol"] = deadline_protocol(args.base_deadline,
                                                     args.base_deadline_multiple, **window)
    summary.update({
        "workload": workload.name, "workload_notes": workload.notes,
        "profile": profile.name, "scheduling": profile.scheduling,
        "policy": policy.label, "intra_program": repr(policy.intra),
        "program_rate": args.request_rate, "burstiness": args.burstiness,
        "seed": args.seed, "slo_scale": args.slo_scale, "base_deadline_s": base,
        "prefix_cache_hit_rate": engine.prefix_cache_hit_rate,
        "engine_steps": engine.num_steps, "wall_seconds": time.perf_counter() - t0})
    requests.to_parquet(out / "requests.parquet", index=False)
    programs.to_parquet(out / "programs.parquet", index=False)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=json_default) + "\n")
    print_summary(summary)
    print_program_summary(summary)
    print(f"wrote {out / 'requests.parquet'}, {out / 'programs.parquet'} and "
          f"{out / 'summary.json'}")


def cmd_trace_generate(args: argparse.Namespace) -> None:
    """``dynasim trace generate``: a seeded Poisson/Gamma trace with real lengths."""
    from dynasim import arrivals
    from dynasim import trace as trace_mod

    src = trace_mod.read_trace(args.lengths_from)
    tr = arrivals.generate(src, args.num_prompts, args.request_rate, args.burstiness,
                           args.seed)
    trace_mod.write_mooncake(tr, args.output)
    print(f"wrote {len(tr)} requests to {args.output} ({tr.source})")


def cmd_benchmark(args: argparse.Namespace) -> None:
    """``dynasim benchmark``: simulator speed on a real trace (see dynasim.experiments.benchmark)."""
    from dynasim.experiments.benchmark import (
        run_benchmark,
        run_scale_benchmark,
        run_startup_benchmark,
    )

    if args.startup:
        run_startup_benchmark(15 if args.repeat == 1 else args.repeat)
        return
    if args.programs:
        from dynasim.experiments.benchmark import run_programs_benchmark

        require_at_least_one(args.num_programs, "--num-programs")
        require_rate(args.program_rate, "--program-rate", "programs/s")
        profile = args.profile if args.profile != "distserve-opt13b-a100" \
            else "vllm023-qwen3-14b-h100"
        run_programs_benchmark(tuple(w for w in args.workloads.split(",") if w),
                               args.policy, profile, args.num_programs,
                               args.program_rate, repeat=args.repeat)
        return
    if args.scale:
        require_at_least_one(args.num_requests, "--num-requests")
        require_rate(args.rate_per_replica, "--rate-per-replica", "req/s")
        run_scale_benchmark(args.num_requests, tuple(int_list(args.replicas, "replicas")),
                            args.rate_per_replica, args.profile, args.router, args.trace,
                            cprofile=args.cprofile)
        return
    run_benchmark(args.trace, args.profile, args.repeat, scheduling=args.scheduling,
                  max_model_len=args.max_model_len)
