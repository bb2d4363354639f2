"""``dynasim calibrate``: fit a profile to a live vLLM server through its API, or to
recorded vLLM runs (``--from-runs``); and the live-server flags ``replay`` shares."""

from __future__ import annotations

import argparse
import os

from dynasim.errors import InputError


def add_server_flags(p: argparse.ArgumentParser) -> None:
    """``--base-url``, ``--model`` and ``--api-key`` (default ``$OPENAI_API_KEY``, as
    the openai SDK reads it): the live server of ``dynasim calibrate`` and ``replay``."""
    p.add_argument("--base-url", required=True, help="server root, e.g. "
                   "http://127.0.0.1:8000")
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"),
                   help="bearer token (default: $OPENAI_API_KEY)")


def add_calibrate_flags(p: argparse.ArgumentParser) -> None:
    """The flags of ``dynasim calibrate`` (see :mod:`replay.calibrate.run`)."""
    add_server_flags(p)
    p.add_argument("--output", required=True, help="profile JSON to write")
    p.add_argument("--report", help="HTML report to write (measured vs fitted)")
    p.add_argument("--name", help="profile name (default calibrated-MODEL)")
    p.add_argument("--gpu", default="unknown", help="what the server runs on, for the "
                   "profile (vLLM does not report it)")
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="fewer sizes and repeats "
                   "(about 20 s on the tiny CPU model instead of about a minute)")
    for flag in ("max-num-seqs", "max-num-batched-tokens", "max-model-len",
                 "kv-capacity-tokens", "block-size"):
        p.add_argument(f"--{flag}", type=int, help="the server's value, when it cannot "
                       "be read from it" + (" (default 2048)" if "batched" in flag else ""))
    p.add_argument("--scheduling", choices=("v1", "v0"), help="default: v1 for vLLM >= 0.8")
    p.add_argument("--probe-seqs", type=int, default=256, help="requests sent at once to "
                   "find max_num_seqs (when --max-num-seqs is not given)")
    p.add_argument("--no-progress", action="store_true")


def add_from_runs_flags(p: argparse.ArgumentParser) -> None:
    """``--from-runs RUN...`` and its options: calibrate from recorded runs instead of
    a live server (:mod:`dynasim.profiles.fit_runs`); ``--base-url``/``--model`` are
    then not needed."""
    for action in p._actions:  # required only for a live calibration (checked there)
        if action.dest in ("base_url", "model"):
            action.required = False
    p.add_argument("--from-runs", nargs="+", metavar="RUN", help="fit on these recorded "
                   "vLLM runs (names: dynasim validate --list-runs) by simulating them")
    p.add_argument("--held-out", nargs="*", default=[], metavar="RUN",
                   help="with --from-runs: runs to report, not fit")
    p.add_argument("--max-evals", type=int, default=60, help="with --from-runs: "
                   "simulations of the fitting runs (default 60)")
    p.add_argument("--max-requests", type=int, default=3000, help="with --from-runs: "
                   "requests per simulated window of a fitting run (default 3000)")


def cmd_calibrate_from_runs(args: argparse.Namespace) -> None:
    """``dynasim calibrate --from-runs``: fit, print the per-run errors, write."""
    import json
    from pathlib import Path

    from dynasim.profiles.fit_runs import fit_from_runs

    if args.max_evals < 1 or args.max_requests < 1:
        raise InputError("must be >= 1", field="max_evals/max_requests")
    name = args.name or f"calibrated-{args.from_runs[0]}"
    try:
        profile, report = fit_from_runs(args.from_runs, args.held_out, name,
                                        max_requests=args.max_requests,
                                        max_evals=args.max_evals)
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(str(exc), field="from_runs") from None
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(profile.model_dump_json(indent=2) + "\n", encoding="utf-8")
    print(f"fitted on {', '.join(args.from_runs)} in {report['fit_seconds']:.0f} s "
          f"({report['evaluations']} simulations, objective {report['cost']:.4f}); "
          f"decode rows {report['decode_rows']} from "
          + ("chunk times" if report["decode_rows_from_chunks"] else "request windows"))
    print(json.dumps(profile.step_time.model_dump()) +
          f" frontend_latency_ms {profile.frontend_latency_ms}")
    for r in report["runs"]:
        print(f"  {r['run']:36s} {'fitted  ' if r['fitted'] else 'held out'} "
              f"E2E median {r['median_e2e_error']:.1%} p90 {r['p90_e2e_error']:.1%} "
              f"mean {r['mean_e2e_error']:.1%} | TTFT median {r['median_ttft_error']:.1%}"
              f" p90 {r['p90_ttft_error']:.1%} mean {r['mean_ttft_error']:.1%}")
    print(f"wrote {out}")


def cmd_calibrate(args: argparse.Namespace) -> None:
    """``dynasim calibrate``: measure, fit, write the profile (and the report); with
    ``--from-runs``, fit on recorded runs instead (:func:`cmd_calibrate_from_runs`)."""
    from pathlib import Path

    if getattr(args, "from_runs", None):
        return cmd_calibrate_from_runs(args)
    for flag in ("base_url", "model"):
        if not getattr(args, flag):
            raise InputError("required (or give --from-runs RUN...)", field=flag)

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from replay.calibrate.run import calibrate

    limits = {"max_num_seqs": args.max_num_seqs, "max_model_len": args.max_model_len,
              "max_num_batched_tokens": args.max_num_batched_tokens,
              "kv_capacity_tokens": args.kv_capacity_tokens, "block_size": args.block_size}
    for key, value in limits.items():
        if value is not None and value < 1:
            raise InputError(f"must be >= 1, got {value}", field=key)
    console = Console(stderr=True)
    with Progress(TextColumn("calibrating"), BarColumn(), TextColumn(
            "{task.completed}/{task.total} {task.description}"), TimeElapsedColumn(),
            console=console, transient=True, disable=args.no_progress) as bar:
        task = bar.add_task("connecting", total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=what)

        cal = calibrate(args.base_url, args.model, quick=args.quick, api_key=args.api_key,
                        limits=limits, name=args.name, gpu=args.gpu,
                        tensor_parallel_size=args.tensor_parallel_size,
                        scheduling=args.scheduling, probe_seqs=args.probe_seqs,
                        progress=progress)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(cal.profile.model_dump_json(indent=2) + "\n", encoding="utf-8")
    p, f = cal.profile, cal.profile.fit
    console.print(f"step time ({p.step_time.form}): " + ", ".join(
        f"{k} {v:.4g}" for k, v in p.step_time.model_dump().items() if k != "form"))
    console.print(f"fit: {f.rows} rows, {f.held_out_rows} held out; held-out median "
                  f"error {f.held_out_median_error:.1%}, p90 {f.held_out_p90_error:.1%}; "
                  f"frontend latency {p.frontend_latency_ms:.2f} ms")
    console.print("limits: " + ", ".join(f"{k} {getattr(p, k)} ({src})" for k, src in
                                         p.provenance["limits"].items()))
    if p.provenance["discarded_measurements"]:
        console.print(f"[yellow]{p.provenance['discarded_measurements']} measurements "
                      "discarded: requests did not run as planned (e.g. the server let new "
                      "requests in or tokens out only when idle: a CPU-starved API server "
                      "or engine core)")
    print(f"wrote {out} ({cal.seconds:.0f} s of measurements)")
    if args.report:
        from replay.calibrate.report import write_report

        print("report: " + ", ".join(write_report(cal, args.report)))


