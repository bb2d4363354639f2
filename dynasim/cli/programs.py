"""``dynasim batch``, ``ablation`` and ``calibrate-thresholds``: reasoning programs
offline (token-to-accuracy), the scheduler ablation, and certaindex thresholds."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dynasim.cli.common import (
    add_limit_flags,
    add_program_flags,
    int_list,
    intra_args,
    online_profile,
    profile_from_args,
)
from dynasim.errors import InputError

if TYPE_CHECKING:
    from dynasim.policies.intra_program import IntraPolicy


def cmd_batch(args: argparse.Namespace) -> None:
    """``dynasim batch``: token-to-accuracy rows for every policy (Dynasor App. G)."""
    from dynasim.experiments.batch import matched_length_threshold, token_accuracy, tokens_saved
    from dynasim.policies import INTRA, make_intra
    from dynasim.workloads.catalog import load_workload
    from dynasim.workloads.cot import is_cot_workload

    if is_cot_workload(args.workload):
        return cmd_cot_batch(args)
    if args.select:
        raise InputError("--select filters long chain-of-thought workloads only",
                         field="select")
    caps = int_list(args.caps, "caps")
    names = [n.strip() for n in (args.policy or SC_POLICIES).split(",") if n.strip()]
    for n in names:
        if n not in INTRA:
            raise InputError(f"unknown intra-program policy (known: {', '.join(INTRA)})",
                             field="policy", source=n)
    if args.seeds < 1:
        raise InputError("--seeds must be >= 1", field="seeds")
    base = intra_args(args, single_cap=False)
    workload = load_workload(args.workload)
    if "length" in names and not args.length_tokens:
        cert = make_intra("certaindex", **{**base, "cap": max(caps)})
        base["max_tokens"] = matched_length_threshold(workload.programs, cert, args.seeds)
        print(f"baseline-length threshold {base['max_tokens']} tokens (stops as many "
              f"programs as {cert!r})")

    def factory(name: str) -> Callable[[int], IntraPolicy]:
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


SC_POLICIES = "even,certaindex,length,curve"
COT_POLICIES = "budget,dynasor-cot"


def cmd_cot_batch(args: argparse.Namespace) -> None:
    """``dynasim batch`` on a long chain-of-thought workload: the Dynasor-CoT frontier
    against the token budget (Dynasor §2 Fig. 6; :mod:`dynasim.experiments.cot_frontier`),
    its CSV, the comparison with the paper's table, and ``--plot`` figures."""
    from dynasim.experiments.cot_frontier import (
        POLICIES,
        format_report,
        frontier,
        frontier_figures,
        grading_disagreement,
    )
    from dynasim.workloads.cot import load_cot, parse_select

    names = [n.strip() for n in (args.policy or COT_POLICIES).split(",") if n.strip()]
    for n in names:
        if n not in POLICIES:
            raise InputError(f"unknown chain-of-thought policy (known: {', '.join(POLICIES)})",
                             field="policy", source=n)
    windows = int_list(args.certainty_window, "certainty_window")
    intervals = int_list(args.probe_interval, "probe_interval")
    budgets = int_list(args.budgets, "budgets") if args.budgets else None
    tau = 1.0 if args.threshold is None else args.threshold
    if not 0 < tau <= 1:
        raise InputError(f"--threshold (tau) must be in (0, 1], got {tau}", field="threshold")
    workload = load_cot(args.workload, parse_select(args.select))
    bad = [t for t in intervals if t % workload.probe_interval]
    if bad:
        raise InputError(f"--probe-interval {bad[0]} is not a multiple of the data's "
                         f"{workload.probe_interval}-token probe spacing",
                         field="probe_interval")
    print(f"{workload.name}: {len(workload.trajectories)} trajectories, probes every "
          f"{workload.probe_interval} tokens" + (f" ({workload.notes})" if workload.notes
                                                 else ""))
    table = frontier(workload, policies=names, probe_intervals=intervals, windows=windows,
                     threshold=tau, budgets=budgets)
    print(format_report(table, grading_disagreement(workload)))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(f"wrote {out}")
    if args.plot:
        from dynasim.experiments.plots import png_skipped, write_figures_noting_png

        figs = frontier_figures(table)
        files, err = write_figures_noting_png(
            {out.parent / "plots" / f"token-accuracy-{name}": fig
             for name, fig in figs.items()})
        why = f"PNG failed: {err}" if err else png_skipped()
        print(f"wrote {', '.join(files)}" + (f" ({why})" if why else ""))


def cmd_cot_check(args: argparse.Namespace) -> None:
    """``dynasim cot-check``: how often ``math_equal(final_answer, target)`` disagrees
    with the logged ``final_correct``, per (model, dataset), with examples."""
    from dynasim.experiments.cot_frontier import grading_disagreement
    from dynasim.workloads.cot import load_cot, parse_select

    workload = load_cot(args.workload, parse_select(args.select))
    d = grading_disagreement(workload)
    print(f"{'model':<30}{'dataset':>8}{'trajectories':>13}{'disagree':>9}{'rate':>8}"
          f"{'logged acc':>11}{'math_equal acc':>15}")
    for r in d.itertuples():
        print(f"{r.model.split('/')[-1]:<30}{r.dataset:>8}{r.trajectories:>13}"
              f"{r.disagree:>9}{r.rate:>8.2%}{r.logged_accuracy:>11.4f}"
              f"{r.math_equal_accuracy:>15.4f}")
    n, bad = int(d.trajectories.sum()), int(d.disagree.sum())
    print(f"{'all':<30}{'':>8}{n:>13}{bad:>9}{bad / n:>8.2%}")
    for r in d.itertuples():
        if r.examples:
            print(f"  {r.model.split('/')[-1]} {r.dataset}: {r.examples}")


def cmd_calibrate(args: argparse.Namespace) -> None:
    """``dynasim calibrate-thresholds``: profiler-guided threshold on a calibration
    split, evaluated on the disjoint held-out split; ``--policy two-sided`` calibrates
    the (threshold, low threshold) pair (:func:`~dynasim.experiments.calibration.calibrate_pair`)."""
    from dynasim.experiments.calibration import calibrate_pair, calibrate_threshold
    from dynasim.policies import make_intra
    from dynasim.workloads.catalog import load_workload

    base = intra_args(args)
    if not 0 < args.calibration_fraction < 1:
        raise InputError("--calibration-fraction must be in (0, 1): both the calibration "
                         f"and the held-out split need programs, got "
                         f"{args.calibration_fraction}", field="calibration_fraction")
    if not 0 < args.step <= 1:
        raise InputError(f"--step must be in (0, 1] (thresholds lie in [0, 1]), got "
                         f"{args.step}", field="step")
    if args.seeds < 1:
        raise InputError("--seeds must be >= 1", field="seeds")
    if not args.tolerance >= 0:
        raise InputError(f"--tolerance must be >= 0, got {args.tolerance}",
                         field="tolerance")
    workload = load_workload(args.workload)
    grid = [round(i * args.step, 6) for i in range(int(round(1 / args.step)) + 1)]
    key = "reward_threshold" if args.signal == "reward" else "threshold"
    if args.policy == "two-sided":
        res = calibrate_pair(
            workload.programs, lambda t, low: make_intra(
                "two-sided", **{**base, key: t, "low_threshold": low}),
            grid, args.cap, args.tolerance, args.calibration_fraction, args.seeds,
            args.seed)
        chosen = f"threshold {res['threshold']}, low threshold {res['low_threshold']}"
    else:
        res = calibrate_threshold(
            workload.programs, lambda t: make_intra("certaindex", **{**base, key: t}),
            grid, args.cap, args.tolerance, args.calibration_fraction, args.seeds,
            args.seed)
        chosen = f"threshold {res['threshold']}"
    res["workload"], res["policy"] = workload.name, args.policy
    c, h = res["calibration"], res["held_out"]
    print(f"{workload.name}: {args.policy} {chosen} (cap {args.cap}, detect at "
          f"{args.detect_at}, tolerance {args.tolerance})")
    for label, d in (("calibration", c), ("held-out", h)):
        print(f"  {label:<12} {d['programs']:>4} programs: accuracy {d['accuracy']:.4f} "
              f"(cap {d['accuracy_cap']:.4f}), output tokens {d['output_tokens']:.0f} "
              f"(cap {d['output_tokens_cap']:.0f}, "
              f"{1 - d['output_tokens'] / d['output_tokens_cap']:.1%} saved)")
    if args.output:
        Path(args.output).write_text(json.dumps(res, indent=2, default=float) + "\n")
        print(f"wrote {args.output}")


def cmd_ablation(args: argparse.Namespace) -> None:
    """``dynasim ablation``: print and write the ablation table."""
    from dynasim.experiments.ablation import run_ablation
    from dynasim.simulation import deadline_protocol
    from dynasim.workloads import load_workload

    profile = online_profile(args, profile_from_args(args))
    w = load_workload(args.workload)
    window = {"warmup": args.warmup_programs, "cooldown": args.cooldown_programs}
    table = run_ablation(w, profile, args.request_rate, intra_args(args), args.seed,
                         args.num_programs, args.slo_scale, args.base_deadline,
                         aging_s=args.sjf_aging, base_multiple=args.base_deadline_multiple,
                         **window)
    print(f"{w.name} on {profile.name} ({profile.scheduling}, max_num_seqs "
          f"{profile.max_num_seqs}), {args.request_rate} programs/s, seed {args.seed}, "
          f"SLO scale {args.slo_scale}, base deadline {table.base_deadline_s[0]:.2f} s "
          f"({deadline_protocol(args.base_deadline, args.base_deadline_multiple, **window)})")
    print(f"{'policy':<18}{'mean lat s':>11}{'p90 lat s':>11}{'SLO att.':>10}"
          f"{'accuracy':>10}{'out tokens':>12}{'samples':>9}")
    for r in table.itertuples():
        print(f"{r.policy:<18}{r.mean_program_latency_s:>11.2f}"
              f"{r.p90_program_latency_s:>11.2f}{r.slo_attainment:>10.3f}"
              f"{r.accuracy:>10.3f}{r.total_program_output_tokens:>12}"
              f"{r.mean_samples_used:>9.2f}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(f"wrote {out}")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``batch``, ``ablation`` and ``calibrate-thresholds``."""
    p = sub.add_parser("batch", help="token-to-accuracy of intra-program policies")
    p.add_argument("--workload", required=True, help="workload name or per-sample CSV")
    p.add_argument("--policy", help="comma-separated intra-program policies (default "
                   f"{SC_POLICIES}; for chain-of-thought workloads {COT_POLICIES}, "
                   "also full)")
    p.add_argument("--caps", default="5,10,20,40", help="comma-separated caps")
    p.add_argument("--seeds", type=int, default=10, help="draw orders averaged")
    p.add_argument("--output", default="out/batch.csv", help="CSV of the rows")
    add_program_flags(p, online=False)
    g = p.add_argument_group("long chain of thought (cot-* workloads or a folder; Dynasor "
                             "§2.1; --threshold is tau, default 1.0)")
    g.add_argument("--select", action="append", metavar="KEY=VALUE",
                   help="model=SUBSTRING or dataset=NAME (repeatable)")
    g.add_argument("--probe-interval", default="64,128,256",
                   help="probe every T tokens: comma-separated multiples of the data's 64")
    g.add_argument("--certainty-window", default="2,3,4,8,16",
                   help="comma-separated windows w (probes that must agree)")
    g.add_argument("--budgets", help="comma-separated token budgets B of the budget "
                   "baseline (default: every 256 tokens up to the longest trajectory)")
    g.add_argument("--plot", action="store_true", help="also write the token-accuracy "
                   "figures under the output's folder, plots/")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("cot-check", help="math_equal against the logged grades of a "
                       "chain-of-thought workload")
    p.add_argument("--workload", required=True, help="cot-* name or a folder")
    p.add_argument("--select", action="append", metavar="KEY=VALUE",
                   help="model=SUBSTRING or dataset=NAME (repeatable)")
    p.set_defaults(func=cmd_cot_check)

    p = sub.add_parser("ablation", help="lpm, gang, +certaindex, sjf+certaindex on the "
                       "same programs and arrivals")
    p.add_argument("--workload", required=True)
    p.add_argument("--profile", default="distserve-opt13b-a100")
    p.add_argument("--request-rate", type=float, required=True, help="programs/s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="out/ablation.csv")
    add_limit_flags(p)
    add_program_flags(p)
    p.set_defaults(func=cmd_ablation)

    p = sub.add_parser("calibrate-thresholds",
                       help="pick certaindex thresholds on a calibration split")
    p.add_argument("--workload", required=True)
    p.add_argument("--signal", choices=("entropy", "reward"), default="entropy")
    p.add_argument("--policy", choices=("certaindex", "two-sided"), default="certaindex",
                   help="two-sided: calibrate the (threshold, low threshold) pair")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="accuracy drop allowed against the cap (absolute)")
    p.add_argument("--calibration-fraction", type=float, default=0.5)
    p.add_argument("--step", type=float, default=0.05, help="threshold grid step")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="seed of the split")
    p.add_argument("--output", help="also write the result as JSON here")
    add_program_flags(p, online=False)
    p.set_defaults(func=cmd_calibrate)
