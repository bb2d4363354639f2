"""``dynasim`` commands for reasoning programs: ``simulate --workload``, ``batch`` and
``calibrate-thresholds`` (argparse; see :mod:`dynasim.cli` for the rest)."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from dynasim.errors import InputError


def add_program_flags(p: argparse.ArgumentParser, online: bool = True) -> None:
    """Flags naming a workload and the intra-program policy's knobs."""
    g = p.add_argument_group("reasoning programs (Dynasor App. D.2)")
    if online:
        g.add_argument("--inter-program", choices=("fcfs", "lpm", "gang", "sjf"),
                       help="queue order when --policy names only an intra-program "
                            "policy (certaindex alone means certaindex+sjf)")
        g.add_argument("--num-programs", type=int, help="programs to run (default: every "
                       "question once, in a seeded random order)")
        g.add_argument("--slo-scale", type=float, default=1.0,
                       help="deadline = SLO scale x difficulty (1-3) x base deadline")
        g.add_argument("--base-deadline", type=float, help="seconds (default: the p90 "
                       "latency of the programs run alone at the cap, baseline-even)")
        g.add_argument("--sjf-aging", type=float, default=30.0, help="seconds a program "
                       "waits before SJF serves it ahead of non-starving ones")
        g.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction,
                       default=None, help="prefix cache (default: on for workloads)")
    g.add_argument("--cap", type=int, default=20, help="resource cap: SC samples / ToT "
                   "beam width (default 20, the paper's SC cap)")
    g.add_argument("--detect-at", type=int, default=5,
                   help="detect step: SC samples / ToT steps (default 5 / use 1 for ToT)")
    g.add_argument("--threshold", type=float, help="certaindex H̃ threshold (default 0.7)")
    g.add_argument("--reward-threshold", type=float, help="certaindex R threshold (ToT)")
    g.add_argument("--gamma", type=float, default=1.0, help="curve policy exponent")
    g.add_argument("--length-tokens", type=int, default=0,
                   help="baseline-length: stop when detect-step outputs total <= this "
                        "(batch default: the threshold stopping as many programs as "
                        "certaindex)")


def _intra_args(args) -> dict:
    return {"cap": args.cap, "detect_at": args.detect_at, "threshold": args.threshold,
            "reward_threshold": args.reward_threshold, "gamma": args.gamma,
            "max_tokens": args.length_tokens}


def check_online_flags(args) -> None:
    """Check the flags of an online program run (``simulate``/``replay --workload``).

    Raises:
        InputError: a missing, infinite or non-positive ``--request-rate``,
            ``--num-programs < 1``, ``--slo-scale <= 0`` or ``--base-deadline <= 0``.
    """
    if args.request_rate is None or not args.request_rate > 0 or \
            math.isinf(args.request_rate):
        raise InputError("--request-rate (programs/s, finite, > 0) is required with "
                         "--workload", field="request_rate")
    if args.num_programs is not None and args.num_programs < 1:
        raise InputError("--num-programs must be >= 1", field="num_programs")
    if not args.slo_scale > 0:
        raise InputError("--slo-scale must be > 0", field="slo_scale")
    if args.base_deadline is not None and not args.base_deadline > 0:
        raise InputError("--base-deadline must be > 0 seconds", field="base_deadline")


def online_profile(args, profile):
    """Check the flags of an online program run (:func:`check_online_flags`) and return
    the profile to use (prefix caching on unless ``--no-enable-prefix-caching``).

    Raises:
        InputError: see :func:`check_online_flags`.
    """
    check_online_flags(args)
    if args.enable_prefix_caching is not False:
        profile = profile.with_overrides(enable_prefix_caching=True)
    return profile


def simulate_workload(args, profile) -> None:
    """``dynasim simulate --workload W``: Poisson program arrivals on one replica."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from dynasim.cli import print_summary
    from dynasim.data_record import json_default
    from dynasim.metrics import summarize, summarize_programs
    from dynasim.policy import make_policy
    from dynasim.simulation import online_programs, simulate_programs
    from dynasim.workloads import load_workload

    profile = online_profile(args, profile)
    policy = make_policy(args.policy, inter=args.inter_program, aging_s=args.sjf_aging,
                         **_intra_args(args))
    workload = load_workload(args.workload)
    specs, times, deadlines, base = online_programs(
        workload, profile, args.request_rate, burstiness=args.burstiness, seed=args.seed,
        num_programs=args.num_programs, slo_scale=args.slo_scale,
        base=args.base_deadline, cap=args.cap)
    t0 = time.perf_counter()
    with Progress(TextColumn("simulating"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total} programs"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True,
                  disable=args.no_progress) as bar:
        task = bar.add_task("sim", total=len(specs))
        requests, programs, engine = simulate_programs(
            specs, times, profile, policy, deadlines,
            progress=lambda n: bar.update(task, completed=n))
    summary = summarize(requests)
    summary.update(summarize_programs(programs))
    summary.update({
        "workload": workload.name, "workload_notes": workload.notes,
        "profile": profile.name, "scheduling": profile.scheduling,
        "policy": policy.label, "intra_program": repr(policy.intra),
        "program_rate": args.request_rate, "burstiness": args.burstiness,
        "seed": args.seed, "slo_scale": args.slo_scale, "base_deadline_s": base,
        "prefix_cache_hit_rate": engine.prefix_cache_hit_rate,
        "engine_steps": engine.num_steps, "wall_seconds": time.perf_counter() - t0})
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    requests.to_parquet(out / "requests.parquet", index=False)
    programs.to_parquet(out / "programs.parquet", index=False)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=json_default) + "\n")
    print_summary(summary)
    print_program_summary(summary)
    print(f"wrote {out / 'requests.parquet'}, {out / 'programs.parquet'} and "
          f"{out / 'summary.json'}")


def print_program_summary(s: dict) -> None:
    """The program-level block printed after the request summary."""
    print("{s:{c}^{n}}".format(s=" Programs ", n=50, c="-"))
    for label, key, fmt in (
            ("Programs:", "num_programs", "{:<10}"),
            ("SLO attainment:", "slo_attainment", "{:<10.3f}"),
            ("Accuracy:", "accuracy", "{:<10.3f}"),
            ("Mean program latency (s):", "mean_program_latency_s", "{:<10.2f}"),
            ("P90 program latency (s):", "p90_program_latency_s", "{:<10.2f}"),
            ("Mean samples used:", "mean_samples_used", "{:<10.2f}"),
            ("Program output tokens:", "total_program_output_tokens", "{:<10}"),
            ("Base deadline (s):", "base_deadline_s", "{:<10.2f}"),
            ("Prefix cache hit rate:", "prefix_cache_hit_rate", "{:<10.3f}")):
        if key in s:
            print("{:<40} ".format(label) + fmt.format(s[key]))
    print("=" * 50)


def cmd_batch(args) -> None:
    """``dynasim batch``: token-to-accuracy rows for every policy (Dynasor App. G)."""
    from dynasim.batch import matched_length_threshold, token_accuracy, tokens_saved
    from dynasim.policy import INTRA, make_intra
    from dynasim.workloads import load_workload

    caps = _int_list(args.caps, "caps")
    names = [n.strip() for n in args.policy.split(",") if n.strip()]
    for n in names:
        if n not in INTRA:
            raise InputError(f"unknown intra-program policy (known: {', '.join(INTRA)})",
                             field="policy", source=n)
    if args.seeds < 1:
        raise InputError("--seeds must be >= 1", field="seeds")
    workload = load_workload(args.workload)
    base = _intra_args(args)
    if "length" in names and not args.length_tokens:
        cert = make_intra("certaindex", **{**base, "cap": max(caps)})
        base["max_tokens"] = matched_length_threshold(workload.programs, cert, args.seeds)
        print(f"baseline-length threshold {base['max_tokens']} tokens (stops as many "
              f"programs as {cert!r})")

    def factory(name):
        return lambda cap: make_intra(name, **{**base, "cap": cap})

    table = token_accuracy(workload.programs, {n: factory(n) for n in names}, caps,
                           args.seeds)
    table.insert(0, "workload", workload.name)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(f"{'policy':<12}{'cap':>5}{'output tokens':>24}{'accuracy':>20}{'knob':>8}")
    for r in table.itertuples():
        print(f"{r.policy:<12}{r.cap:>5}{r.output_tokens_mean:>14.0f} ± "
              f"{r.output_tokens_std:<7.0f}{r.accuracy_mean:>11.4f} ± "
              f"{r.accuracy_std:<6.4f}{r.knob_mean:>8.2f}")
    if "even" in names:
        for n in names:
            if n != "even":
                s = tokens_saved(table, n)
                how = "fewer" if s["saved"] >= 0 else "more"
                print(f"{n}: {abs(s['saved']):.1%} {how} output tokens than baseline-even"
                      f" at equal accuracy ({s['accuracy']:.4f}), cap {s['cap']}")
    print(f"wrote {out}")


def cmd_calibrate(args) -> None:
    """``dynasim calibrate-thresholds``: profiler-guided threshold on a calibration
    split, evaluated on the disjoint held-out split."""
    from dynasim.calibration import calibrate_threshold
    from dynasim.policy import make_intra
    from dynasim.workloads import load_workload

    workload = load_workload(args.workload)
    grid = [round(i * args.step, 6) for i in range(int(round(1 / args.step)) + 1)]
    base = _intra_args(args)
    key = "reward_threshold" if args.signal == "reward" else "threshold"
    res = calibrate_threshold(
        workload.programs, lambda t: make_intra("certaindex", **{**base, key: t}), grid,
        args.cap, args.tolerance, args.calibration_fraction, args.seeds, args.seed)
    res["workload"] = workload.name
    c, h = res["calibration"], res["held_out"]
    print(f"{workload.name}: threshold {res['threshold']} (cap {args.cap}, detect at "
          f"{args.detect_at}, tolerance {args.tolerance})")
    for label, d in (("calibration", c), ("held-out", h)):
        print(f"  {label:<12} {d['programs']:>4} programs: accuracy {d['accuracy']:.4f} "
              f"(cap {d['accuracy_cap']:.4f}), output tokens {d['output_tokens']:.0f} "
              f"(cap {d['output_tokens_cap']:.0f}, "
              f"{1 - d['output_tokens'] / d['output_tokens_cap']:.1%} saved)")
    if args.output:
        Path(args.output).write_text(json.dumps(res, indent=2, default=float) + "\n")
        print(f"wrote {args.output}")


def _int_list(text: str, field: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"expected comma-separated integers, got {text!r}",
                         field=field) from None
    if not vals or any(v < 1 for v in vals):
        raise InputError(f"expected integers >= 1, got {text!r}", field=field)
    return vals


def add_commands(sub) -> None:
    """Register ``batch`` and ``calibrate-thresholds`` on the ``dynasim`` parser."""
    p = sub.add_parser("batch", help="token-to-accuracy of intra-program policies")
    p.add_argument("--workload", required=True, help="workload name or per-sample CSV")
    p.add_argument("--policy", default="even,certaindex,length,curve",
                   help="comma-separated intra-program policies")
    p.add_argument("--caps", default="5,10,20,40", help="comma-separated caps")
    p.add_argument("--seeds", type=int, default=10, help="draw orders averaged")
    p.add_argument("--output", default="out/batch.csv", help="CSV of the rows")
    add_program_flags(p, online=False)
    p.set_defaults(func=cmd_batch)

    from dynasim.ablation import cmd_ablation
    from dynasim.cli import _add_limit_flags

    p = sub.add_parser("ablation", help="lpm, gang, +certaindex, sjf+certaindex on the "
                       "same programs and arrivals")
    p.add_argument("--workload", required=True)
    p.add_argument("--profile", default="distserve-opt13b-a100")
    p.add_argument("--request-rate", type=float, required=True, help="programs/s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="out/ablation.csv")
    _add_limit_flags(p)
    add_program_flags(p)
    p.set_defaults(func=cmd_ablation)

    p = sub.add_parser("calibrate-thresholds",
                       help="pick a certaindex threshold on a calibration split")
    p.add_argument("--workload", required=True)
    p.add_argument("--signal", choices=("entropy", "reward"), default="entropy")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="accuracy drop allowed against the cap (absolute)")
    p.add_argument("--calibration-fraction", type=float, default=0.5)
    p.add_argument("--step", type=float, default=0.05, help="threshold grid step")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="seed of the split")
    p.add_argument("--output", help="also write the result as JSON here")
    add_program_flags(p, online=False)
    p.set_defaults(func=cmd_calibrate)
