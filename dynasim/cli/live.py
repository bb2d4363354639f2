"""``dynasim replay``, ``compare``, ``calibrate``, ``fidelity`` and ``proxy``: the commands
that talk to live OpenAI-compatible servers (vLLM).

Flag names follow ``vllm bench serve`` (``--base-url``, ``--model``, ``--request-rate``,
``--burstiness``, ``--seed``, ``--num-prompts``, ``--max-concurrency``, ``--goodput``)
and ``dynasim simulate`` (``--trace`` / ``--workload``, ``--policy`` and the program
flags), so that the same command line with ``simulate`` swapped for ``replay`` runs the
same trace, programs and seed against a live server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from typing import TYPE_CHECKING

from dynasim.cli.common import (
    add_program_flags,
    check_online_flags,
    intra_args,
    online_profile,
    prepare_output_dir,
    print_program_summary,
    print_summary,
    trace_from_args,
)
from dynasim.cli.fidelity import add_fidelity_flags, cmd_fidelity
from dynasim.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    from rich.progress import Progress, TaskID

    from dynasim.request import Request
    from dynasim.workloads.program import ProgramSpec
    from replay.proxy.config import DynasorConfig


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``replay``, ``compare``, ``calibrate``, ``fidelity`` and ``proxy``."""
    p = sub.add_parser("replay", help="replay a trace or workload against a live "
                       "OpenAI-compatible server (vLLM)")
    add_replay_flags(p)
    add_program_flags(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("compare", help="simulated against replayed run: per-request "
                       "TTFT/E2E errors and SLO attainment")
    p.add_argument("sim_dir", metavar="SIM_DIR", help="output dir of dynasim simulate")
    p.add_argument("real_dir", metavar="REAL_DIR", help="output dir of dynasim replay")
    p.add_argument("--goodput", nargs="+", metavar="KEY:MS",
                   help="request SLOs for trace runs (default: the replay's --goodput)")
    p.add_argument("--output", help="figure file (.html; default REAL_DIR/compare.html; "
                   "a .png is written beside it when Chromium is installed)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("calibrate", help="measure a running vLLM through its API and fit "
                       "a profile (step times, per-request overhead, limits)")
    add_calibrate_flags(p)
    add_from_runs_flags(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("fidelity", help="live fidelity: replay Poisson traces on a server "
                       "and simulate them with its calibrated profile")
    add_fidelity_flags(p)
    p.set_defaults(func=cmd_fidelity)
    _add_proxy_command(sub)


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


def add_replay_flags(p: argparse.ArgumentParser) -> None:
    """The flags of ``dynasim replay`` other than the program flags."""
    add_server_flags(p)
    p.add_argument("--trace", help="dataset name or trace file (.jsonl Mooncake, .csv "
                   "Azure 2023)")
    p.add_argument("--workload", help="reasoning workload name or per-sample CSV")
    p.add_argument("--policy", default="fcfs", help="fcfs, gang, sjf, optionally "
                   "+certaindex (LPM needs server support and is refused)")
    p.add_argument("--request-rate", type=float, default=None,
                   help="trace: re-time with this rate (req/s; default: the trace's "
                        "timestamps); workload: Poisson program arrival rate (programs/s)")
    p.add_argument("--burstiness", type=float, default=1.0)
    p.add_argument("--num-prompts", type=int, help="use only the first N requests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", help="profile used to derive the base deadline as "
                   "dynasim simulate does (workloads; or give --base-deadline)")
    p.add_argument("--max-concurrency", type=int, help="most requests in flight; due "
                   "requests wait in the policy's client-side queue")
    p.add_argument("--timeout", type=float, default=None, help="seconds per request "
                   "(default: none)")
    p.add_argument("--goodput", nargs="+", metavar="KEY:MS",
                   help="SLOs for goodput, e.g. ttft:200 tpot:50 e2el:10000")
    p.add_argument("--prefix-salt", help="salt of the prompt token ids (default: fresh "
                   "per run, so no run hits another run's prefix cache)")
    p.add_argument("--dynasor", metavar="JSON", help="send this dynasor object with "
                   "every request, for a --base-url that is a Dynasor proxy (dynasim "
                   "proxy), e.g. '{\"probe_interval\": 32}'; its per-request reports "
                   "go into the dynasor_* columns")
    p.add_argument("--output-dir", required=True, help="where requests.parquet, "
                   "programs.parquet and summary.json go (written as results arrive)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in "
                   "--output-dir (removes its requests.*, programs.*, summary.json, "
                   "compare.*); without it such a folder is refused")
    p.add_argument("--max-failed-fraction", type=float, default=0.5, help="exit with "
                   "status 2 when more than this share of the requests failed (0-1, "
                   "default 0.5); the errors are listed per reason either way")
    p.add_argument("--no-progress", action="store_true")


def _inputs(args: argparse.Namespace) -> tuple[
        list[Request] | None, list[ProgramSpec] | None, np.ndarray | None,
        list[float] | None, dict]:
    """(requests or None, specs, times, deadlines, meta) from the flags, read exactly as
    ``dynasim simulate`` reads them."""
    from dynasim.simulation import requests_from_trace

    if (args.trace is None) == (args.workload is None):
        raise InputError("give exactly one of --trace and --workload", field="trace")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise InputError("--max-concurrency must be >= 1", field="max_concurrency")
    if args.timeout is not None and not args.timeout > 0:
        raise InputError("--timeout must be > 0 seconds", field="timeout")
    if not 0.0 <= args.max_failed_fraction <= 1.0:
        raise InputError(f"must be between 0 and 1, got {args.max_failed_fraction:g}",
                         field="max_failed_fraction")
    if args.trace is not None:
        tr = trace_from_args(args)
        meta = {"trace": tr.source, "num_prompts": len(tr), "request_rate":
                args.request_rate if args.request_rate is not None else "trace",
                "burstiness": args.burstiness, "seed": args.seed}
        return requests_from_trace(tr), None, None, None, meta
    from dynasim.profiles import load_profile
    from dynasim.simulation import deadline_protocol, online_programs
    from dynasim.workloads.catalog import load_workload

    workload = load_workload(args.workload)
    if args.base_deadline is None and args.profile is None:
        raise InputError("give --base-deadline (seconds) or --profile (the base deadline "
                         "is then derived as dynasim simulate derives it)",
                         field="base_deadline")
    check_online_flags(args)
    # the profile only derives the base deadline; a given --base-deadline needs none
    profile = online_profile(args, load_profile(args.profile)) if args.profile else None
    if args.warmup_programs or args.cooldown_programs:  # the journal counts every program
        raise InputError("replay does not apply a steady-state window yet: give none and "
                         "select programs by arrival_time in programs.parquet",
                         field="warmup_programs")
    specs, times, deadlines, base = online_programs(
        workload, profile, args.request_rate, burstiness=args.burstiness, seed=args.seed,
        num_programs=args.num_programs, slo_scale=args.slo_scale, base=args.base_deadline,
        cap=args.cap, base_multiple=args.base_deadline_multiple)
    meta = {"workload": workload.name, "program_rate": args.request_rate,
            "burstiness": args.burstiness, "seed": args.seed, "slo_scale": args.slo_scale,
            "base_deadline_s": base, "num_programs": len(specs),
            "deadline_protocol": deadline_protocol(args.base_deadline,
                                                   args.base_deadline_multiple)}
    return None, specs, times, deadlines, meta


def _dynasor_arg(text: str | None) -> dict | None:
    """The ``--dynasor`` JSON object (None when not given), checked with the proxy's own
    rules (:meth:`replay.proxy.config.DynasorConfig.merged`) so that a bad field stops
    the run before it starts instead of failing every request with HTTP 400.

    Raises:
        InputError: not JSON, not an object, an unknown field or a value out of range
            (field ``dynasor.<name>``).
    """
    if text is None:
        return None
    import json

    from replay.proxy.config import BadField, DynasorConfig

    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise InputError(f"not JSON ({exc})", field="dynasor") from exc
    if not isinstance(obj, dict):
        raise InputError("must be a JSON object, e.g. '{\"probe_interval\": 32}'",
                         field="dynasor")
    try:
        DynasorConfig().merged(obj)
    except BadField as exc:
        raise InputError(exc.message, field=exc.field) from None
    except TypeError as exc:  # e.g. a list where the proxy compares numbers
        raise InputError(f"bad value ({exc})", field="dynasor") from None
    return obj


def _check_failures(summary: dict, limit: float, out_dir: str) -> None:
    """Print the failed requests per reason; refuse the run as a result when more than
    ``limit`` of its requests failed.

    Raises:
        InputError: (field ``max_failed_fraction``) the failed share is above ``limit``.
    """
    errors = summary.get("errors") or {}
    failed, total = summary["failed"], summary["completed"] + summary["failed"]
    if not errors:
        return
    print(f"Errors ({failed} failed requests, by reason):")
    for reason, n in errors.items():
        print(f"  {n:>6}  {reason}")
    if total and failed / total > limit:
        raise InputError(f"{failed} of {total} requests failed ({failed / total:.0%} > "
                         f"{limit:g}; see the errors above and the error column)",
                         source=f"{out_dir}/requests.parquet", field="max_failed_fraction")


def cmd_replay(args: argparse.Namespace) -> None:
    """``dynasim replay``: run the trace or programs against the server (module doc)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from dynasim.metrics import parse_goodput
    from dynasim.policies import make_policy
    from replay.client import new_session
    from replay.dispatcher import Replay, check_policy, probe_priority, scrape_metrics
    from replay.journal import Journal
    from replay.prompts import PromptBuilder, fetch_token_pool
    from replay.vllm_metrics import served_max_model_len

    goodput = parse_goodput(args.goodput)
    policy = make_policy(args.policy, inter=args.inter_program, aging_s=args.sjf_aging,
                         **intra_args(args))
    check_policy(policy)
    requests, specs, times, deadlines, meta = _inputs(args)
    dynasor = _dynasor_arg(args.dynasor)
    prepare_output_dir(args.output_dir, args.overwrite, "replay")  # flags checked first
    console = Console(stderr=True)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    salt = args.prefix_salt or uuid.uuid4().hex[:12]
    meta.update({"base_url": args.base_url, "model": args.model, "policy": policy.label,
                 "intra_program": repr(policy.intra), "max_concurrency":
                 args.max_concurrency, "timeout": args.timeout, "prefix_salt": salt,
                 "dynasor": dynasor})
    journal = Journal(args.output_dir, meta, goodput, programs=specs is not None)
    total = len(requests) if requests is not None else len(specs)
    unit = "requests" if requests is not None else "programs"

    async def main(bar: Progress, task: TaskID) -> dict:
        async with new_session() as client:
            try:
                pool = await fetch_token_pool(client, args.base_url, args.model, headers)
                honoured = await probe_priority(client, args.base_url, args.model,
                                                headers, pool[0])
                max_len = await served_max_model_len(client, args.base_url, args.model,
                                                     headers)
            except RuntimeError as exc:
                raise InputError(str(exc), field="base_url") from exc
            if not honoured:
                console.print("[yellow]the server does not honour vLLM's priority field "
                              "(start vLLM with --scheduling-policy priority): priorities "
                              "are not sent; in-engine order is the server's FCFS")
            meta.update({"server_priority_scheduling": honoured,
                         "priority_sent": honoured, "server_max_model_len": max_len})
            before = await scrape_metrics(client, args.base_url, headers)

            def progress(n_req: int, n_prog: int) -> None:
                bar.update(task, completed=n_req if requests is not None else n_prog)

            rep = Replay(args.base_url, args.model, policy, journal,
                         PromptBuilder(pool, salt), api_key=args.api_key,
                         max_concurrency=args.max_concurrency, timeout=args.timeout,
                         send_priority=honoured, progress=progress, dynasor=dynasor,
                         max_model_len=max_len,
                         warn=lambda msg: console.print(f"[yellow]{msg}", soft_wrap=True))
            await rep.run(requests, specs, times, deadlines)
            after = await scrape_metrics(client, args.base_url, headers)
            extra = {f"server_{k}": after[k] - before.get(k, 0.0) for k in after}
            extra["interrupted"] = False
            if dynasor is not None:
                extra["dynasor_reported"] = rep.dynasor_reported
            if "server_num_preemptions" in extra:
                extra["num_preemptions"] = int(extra["server_num_preemptions"])
            return journal.write(final=True, extra=extra)  # with the server's counters

    with Progress(TextColumn("replaying"), BarColumn(), TextColumn(
            "{task.completed}/{task.total} " + unit), TimeElapsedColumn(),
            console=console, transient=True, disable=args.no_progress) as bar:
        task = bar.add_task("replay", total=total)
        terminated = []

        async def main_until_sigterm() -> dict:
            # SIGTERM ends the run as Ctrl-C does (asyncio.run cancels its main task
            # on SIGINT): in-flight requests are recorded, summary.json says interrupted
            import signal

            me = asyncio.current_task()
            assert me is not None

            def on_sigterm() -> None:
                terminated.append(True)
                me.cancel()

            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
            return await main(bar, task)

        try:
            summary = asyncio.run(main_until_sigterm())
        except KeyboardInterrupt:
            console.print(f"interrupted: partial results in {args.output_dir}")
            raise
        except asyncio.CancelledError:
            if not terminated:
                raise
            console.print(f"interrupted (SIGTERM): partial results in {args.output_dir}")
            raise SystemExit(143) from None  # 128 + SIGTERM, the shell's convention
    print_summary(summary, "replayed")
    if specs is not None:
        print_program_summary(summary)
    if "p99_dispatch_lag_ms" in summary:
        print(f"{'Dispatch lag p50/p99 (ms):':<40} {summary['median_dispatch_lag_ms']:.2f}"
              f" / {summary['p99_dispatch_lag_ms']:.2f}")
    print(f"wrote {args.output_dir}/requests.parquet, summary.json"
          + (", programs.parquet" if specs is not None else ""))
    _check_failures(summary, args.max_failed_fraction, args.output_dir)


def cmd_compare(args: argparse.Namespace) -> None:
    """``dynasim compare SIM_DIR REAL_DIR`` (see :mod:`replay.compare`)."""
    import sys

    from replay.compare import compare_dirs, print_comparison

    result = compare_dirs(args.sim_dir, args.real_dir, goodput=args.goodput,
                          output=args.output)
    for line in result["warnings"]:  # a partial run: compared, but say what is missing
        print(f"dynasim: warning: {line}", file=sys.stderr)
    print_comparison(result)


def _defaults_from_args(args: argparse.Namespace) -> DynasorConfig:
    """The proxy's server-wide :class:`DynasorConfig` from its flags."""
    from dataclasses import fields

    from replay.proxy.config import DynasorConfig

    kw = {f.name: getattr(args, f.name) for f in fields(DynasorConfig)
          if getattr(args, f.name, None) is not None}
    if "hesitation_words" in kw:
        kw["hesitation_words"] = tuple(w for w in kw["hesitation_words"].split(",") if w)
    return DynasorConfig(**kw)


def _add_proxy_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``dynasim proxy`` (its defaults read from :class:`DynasorConfig`)."""
    from replay.proxy.config import DynasorConfig

    p = sub.add_parser("proxy", help="OpenAI-compatible proxy with Dynasor-CoT early "
                       "exit (certaindex probing) in front of a vLLM server")
    p.add_argument("--target-base-url", required=True,
                   help="upstream server root, e.g. http://127.0.0.1:8000")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default "
                   "127.0.0.1: loopback only)")
    p.add_argument("--port", type=int, default=8001, help="TCP port (default 8001)")
    p.add_argument("--probe-timeout", type=float, default=60.0,
                   help="seconds per probe before it counts as failed (default 60)")
    g = p.add_argument_group("server-wide defaults of the per-request dynasor object")
    d = DynasorConfig()
    g.add_argument("--probe-interval", type=int, help=f"T tokens (default {d.probe_interval})")
    g.add_argument("--certainty-window", type=int,
                   help=f"w probes (default {d.certainty_window})")
    g.add_argument("--threshold", type=float, help=f"tau (default {d.threshold:g})")
    g.add_argument("--probe-text", help="text appended for a probe (default Dynasor's)")
    g.add_argument("--probe-max-tokens", type=int,
                   help=f"tokens per probe (default {d.probe_max_tokens})")
    g.add_argument("--probe-temperature", type=float,
                   help=f"(default {d.probe_temperature:g})")
    g.add_argument("--probe-top-p", type=float, help=f"(default {d.probe_top_p:g})")
    g.add_argument("--hesitation-words", help="comma-separated (default: "
                   + ",".join(d.hesitation_words) + ")")
    p.set_defaults(func=cmd_proxy)


def _log_to_stderr() -> None:
    """The proxy's access log and warnings (``replay.proxy`` loggers) on stderr."""
    import logging
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("replay.proxy")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def cmd_proxy(args: argparse.Namespace) -> None:
    """``dynasim proxy``: serve until Ctrl-C or SIGTERM."""
    import signal

    from replay.proxy.config import BadField
    from replay.proxy.server import make_app, serve

    try:
        defaults = _defaults_from_args(args).validated("defaults")
    except BadField as exc:
        raise InputError(exc.message, field=exc.field.replace("defaults.", "")) from exc
    if not args.target_base_url.startswith(("http://", "https://")):
        raise InputError("must start with http:// or https://", field="target_base_url")
    if not 1 <= args.port <= 65535:
        raise InputError(f"must be a TCP port 1-65535, got {args.port}", field="port")
    _log_to_stderr()
    app = make_app(args.target_base_url, defaults, args.probe_timeout)

    async def main() -> None:
        try:
            runner = await serve(app, args.host, args.port)
        except (OSError, OverflowError) as exc:  # the session is closed by serve
            raise InputError(f"cannot listen on {args.host}:{args.port}: "
                             f"{getattr(exc, 'strerror', None) or exc}",
                             field="port") from None
        print(f"dynasor proxy on http://{args.host}:{args.port} -> "
              f"{args.target_base_url}; Ctrl-C stops", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
