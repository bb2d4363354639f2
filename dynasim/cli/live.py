"""``dynasim replay`` and ``compare``, and the registration of the other commands that
talk to live OpenAI-compatible servers (vLLM): ``calibrate``
(:mod:`dynasim.cli.calibrate`), ``fidelity`` (:mod:`dynasim.cli.fidelity`) and ``proxy``
(:mod:`dynasim.cli.proxy`).

Flag names follow ``vllm bench serve`` (``--base-url``, ``--model``, ``--request-rate``,
``--burstiness``, ``--seed``, ``--num-prompts``, ``--max-concurrency``, ``--goodput``)
and ``dynasim simulate`` (``--trace`` / ``--workload``, ``--policy`` and the program
flags), so that the same command line with ``simulate`` swapped for ``replay`` runs the
same trace, programs and seed against a live server. ``--base-url URL1,URL2,...`` replays
against several servers, each request routed by ``--router`` / ``--router-knob`` (the
routers and flags of ``dynasim simulate --replicas``; :mod:`replay.dispatcher`).
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from typing import TYPE_CHECKING

from dynasim.cli.calibrate import (
    add_calibrate_flags,
    add_from_runs_flags,
    add_server_flags,
    cmd_calibrate,
)
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
from dynasim.cli.proxy import add_proxy_command
from dynasim.errors import InputError

if TYPE_CHECKING:
    import aiohttp
    import numpy as np
    from rich.progress import Progress, TaskID

    from dynasim.request import Request
    from dynasim.workloads.program import ProgramSpec


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
    add_proxy_command(sub)


def add_replay_flags(p: argparse.ArgumentParser) -> None:
    """The flags of ``dynasim replay`` other than the program flags."""
    add_server_flags(p)
    for action in p._actions:
        if action.dest == "base_url":
            action.help = ("server root, e.g. http://127.0.0.1:8000, or several, comma-"
                           "separated, routed by --router")
    p.add_argument("--router", default="least-outstanding",
                   help="with several --base-url servers: round-robin, least-outstanding,"
                        " least-kv, prefix-affinity or program-affinity (default "
                        "least-outstanding), the routers of dynasim simulate --replicas")
    p.add_argument("--router-knob", nargs="+", metavar="KEY=VALUE", default=[],
                   help="router knobs, e.g. cache_threshold=0.5 balance_abs_threshold=32 "
                        "balance_rel_threshold=1.5 (dynasim/routers/affinity.py)")
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


def parse_base_urls(text: str) -> list[str]:
    """The servers of ``--base-url``: one root or several, comma-separated, each
    ``http://`` or ``https://`` with a host, none repeated; trailing ``/`` dropped.

    Raises:
        InputError: (field ``base_url``) an empty item, another scheme or no host, or a
            server given twice, naming the item.
    """
    from urllib.parse import urlparse

    urls = [u.strip().rstrip("/") for u in text.split(",")]
    for k, url in enumerate(urls):
        where = f"item {k + 1} of {len(urls)}"
        if not url:
            raise InputError(f"{where} is empty (give URL1,URL2,... without blanks)",
                             source=text, field="base_url")
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InputError(f"{where}, {url!r}, is not an http:// or https:// server "
                             "root", source=text, field="base_url")
        if url in urls[:k]:
            raise InputError(f"{where}, {url!r}, repeats an earlier server",
                             source=text, field="base_url")
    return urls


async def check_servers(client: aiohttp.ClientSession, urls: list[str], model: str,
                        headers: dict) -> tuple[list[int], bool, int | None]:
    """Start-up checks of every server of a replay: the model is served (its token pool
    read from the first server, :func:`replay.prompts.fetch_token_pool`), priority
    probing (:func:`replay.server_checks.probe_priority`) and ``max_model_len``
    (:func:`replay.vllm_metrics.served_max_model_len`) per server. Returns (token pool,
    whether every server honours ``priority``, the smallest ``max_model_len`` or
    ``None`` when none reports one): a request must fit whichever server it is routed to.

    Raises:
        InputError: (field ``base_url``) a server fails a check, named with its error.
    """
    from replay.prompts import fetch_token_pool
    from replay.server_checks import probe_priority
    from replay.vllm_metrics import served_max_model_len

    honoured, lens = True, []
    pool: list[int] = []
    for k, url in enumerate(urls):
        try:
            if k == 0:
                pool = await fetch_token_pool(client, url, model, headers)
            honoured = await probe_priority(client, url, model, headers, pool[0]) \
                and honoured
            lens.append(await served_max_model_len(client, url, model, headers))
        except RuntimeError as exc:
            raise InputError(str(exc), field="base_url") from exc
    known = [n for n in lens if n is not None]
    return pool, honoured, min(known) if known else None


def server_deltas(before: list[dict[str, float]],
                  after: list[dict[str, float]]) -> dict[str, float]:
    """``server_<counter>``: each ``/metrics`` counter's change over the run
    (:func:`replay.server_checks.scrape_metrics`, one dict per server before and after),
    summed over the servers; a counter a server does not export adds nothing."""
    out: dict[str, float] = {}
    for b, a in zip(before, after):
        for k, v in a.items():
            out[f"server_{k}"] = out.get(f"server_{k}", 0.0) + v - b.get(k, 0.0)
    return out


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

    from dynasim.cli.simulate import router_knobs
    from dynasim.metrics import parse_goodput
    from dynasim.policies import make_policy
    from dynasim.routers import make_router
    from replay.client import new_session
    from replay.dispatcher import Replay, check_policy
    from replay.journal import Journal
    from replay.prompts import PromptBuilder
    from replay.server_checks import scrape_metrics

    goodput = parse_goodput(args.goodput)
    policy = make_policy(args.policy, inter=args.inter_program, aging_s=args.sjf_aging,
                         **intra_args(args))
    check_policy(policy)
    urls = parse_base_urls(args.base_url)
    knobs = router_knobs(args.router_knob)
    router = make_router(args.router, **knobs)  # checked even for one server, unused
    router = router if len(urls) > 1 else None
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
    if router is not None:
        meta.update({"base_urls": urls, "router": router.name, "router_knobs": knobs})
    journal = Journal(args.output_dir, meta, goodput, programs=specs is not None,
                      num_replicas=len(urls))
    total = len(requests) if requests is not None else len(specs)
    unit = "requests" if requests is not None else "programs"

    async def main(bar: Progress, task: TaskID) -> dict:
        async with new_session() as client:
            pool, honoured, max_len = await check_servers(client, urls, args.model,
                                                          headers)
            if not honoured:
                console.print("[yellow]the server" + ("s do" if len(urls) > 1 else
                              " does") + " not honour vLLM's priority field "
                              "(start vLLM with --scheduling-policy priority): priorities "
                              "are not sent; in-engine order is the server's FCFS")
            meta.update({"server_priority_scheduling": honoured,
                         "priority_sent": honoured, "server_max_model_len": max_len})
            before = [await scrape_metrics(client, u, headers) for u in urls]

            def progress(n_req: int, n_prog: int) -> None:
                bar.update(task, completed=n_req if requests is not None else n_prog)

            rep = Replay(urls if len(urls) > 1 else urls[0], args.model, policy, journal,
                         PromptBuilder(pool, salt), api_key=args.api_key,
                         max_concurrency=args.max_concurrency, timeout=args.timeout,
                         send_priority=honoured, progress=progress, dynasor=dynasor,
                         max_model_len=max_len,
                         warn=lambda msg: console.print(f"[yellow]{msg}", soft_wrap=True),
                         router=router)
            await rep.run(requests, specs, times, deadlines)
            after = [await scrape_metrics(client, u, headers) for u in urls]
            extra = server_deltas(before, after)
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


