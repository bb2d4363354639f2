"""What several ``dynasim`` commands share: engine-limit and program flags, the trace and
profile they name, and the ``vllm bench serve``-style summary printout. Imports only the
standard library and :mod:`dynasim.errors` at module level, so ``dynasim --help`` stays
fast; the rest is imported inside the functions that need it.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from dynasim.errors import InputError

if TYPE_CHECKING:
    from dynasim.profiles.profile import Profile
    from dynasim.trace import Trace

_T = TypeVar("_T")

def _run_files(folder: Path) -> list[Path]:
    """The files of a previous run in ``folder``
    (:data:`dynasim.data_record.RUN_FILES` and ``compare.*``)."""
    from dynasim.data_record import RUN_FILES

    found = [folder / n for n in RUN_FILES if (folder / n).is_file()]
    return found + sorted(p for p in folder.glob("compare.*") if p.is_file())


def prepare_output_dir(path: str | Path, overwrite: bool, kind: str) -> Path:
    """Create (or reuse) the output folder of a ``kind`` run (``"simulate"``,
    ``"replay"``) and return it, so that two runs' files never mix: ``compare`` reads
    ``requests.jsonl`` before ``requests.parquet``, so a stale file would be read as
    this run's result.

    A folder holding another run's files (:data:`~dynasim.data_record.RUN_FILES`,
    ``compare.*``) is refused unless ``overwrite``; with ``overwrite`` exactly those files
    are removed (anything else in the folder is kept). Call it before the run starts, so bad flags cost
    nothing.

    Raises:
        InputError: (field ``output_dir``) ``path`` is an existing file, cannot be
            created or written, or holds another run and ``overwrite`` is false.
    """
    out = Path(path)
    src = str(path)
    if out.exists() and not out.is_dir():
        raise InputError("is an existing file, not a folder", source=src,
                         field="output_dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):  # root ignores mode bits: really write
            pass
    except OSError as exc:
        raise InputError(f"cannot create or write this folder: "
                         f"{exc.strerror or exc}", source=src, field="output_dir") from None
    old = _run_files(out)
    if old and not overwrite:
        names = ", ".join(p.name for p in old)
        raise InputError(f"holds another run ({names}); pass --overwrite to replace it "
                         f"with this {kind} run, or choose another folder", source=src,
                         field="output_dir")
    for p in old:
        try:
            os.unlink(p)
        except OSError as exc:
            raise InputError(f"cannot remove {p.name}: {exc.strerror or exc}",
                             source=src, field="output_dir") from None
    return out


def add_limit_flags(p: argparse.ArgumentParser) -> None:
    """Flags overriding the profile's engine limits (the names of vLLM's own flags)."""
    g = p.add_argument_group("engine limits (override the profile's)")
    g.add_argument("--max-num-seqs", type=int, help="most running requests per step")
    g.add_argument("--max-num-batched-tokens", type=int, help="token budget per step")
    g.add_argument("--kv-capacity-tokens", type=int, help="KV cache size in tokens")
    g.add_argument("--block-size", type=int, help="tokens per KV block")
    g.add_argument("--max-model-len", type=int, help="prompt + output limit (tokens)")
    g.add_argument("--scheduling", choices=("v1", "v0"),
                   help="v1: chunked prefill, decode first; v0: prefill-only steps first")


def profile_from_args(args: argparse.Namespace) -> Profile:
    """The ``--profile`` named by ``args`` with the limit flags applied.

    Raises:
        InputError: an unknown profile or a bad override.
    """
    from dynasim.profiles import LIMITS, load_profile

    prof = load_profile(args.profile)
    return prof.with_overrides(**{k: getattr(args, k) for k in LIMITS})


def trace_from_args(args: argparse.Namespace) -> Trace:
    """The trace of ``--trace`` (a path, a public trace name, or ``recorded:RUN``, a
    recorded vLLM run of :mod:`dynasim.runs`), cut to ``--num-prompts`` and re-timed by
    ``--request-rate`` / ``--burstiness`` / ``--seed`` (``simulate`` and ``replay``
    read the same requests at the same times from the same flags).

    Raises:
        InputError: an unreadable trace or ``--num-prompts < 1``.
    """
    from dynasim import arrivals
    from dynasim import trace as trace_mod

    if args.trace.startswith("recorded:"):  # a recorded vLLM run (dynasim.runs)
        from dynasim.runs import load_run

        tr = load_run(args.trace).trace
    else:
        tr = trace_mod.read_trace(args.trace)
    if args.num_prompts is not None:
        require_at_least_one(args.num_prompts, "--num-prompts")
        tr = tr.head(args.num_prompts)
    if args.request_rate is not None:
        tr = arrivals.retime(tr, args.request_rate, args.burstiness, args.seed)
    return tr


def print_summary(s: dict, title: str = "simulated") -> None:
    """Print a summary in ``vllm bench serve``'s layout (``title``: simulated/replayed)."""
    def line(label: str, value: float | None, fmt: str = "{:<10.2f}") -> None:
        print(f"{label:<40} " + (fmt.format(value) if value is not None else ""))

    print("{s:{c}^{n}}".format(s=f" Serving Benchmark Result ({title}) ", n=50, c="="))
    line("Successful requests:", s["completed"], "{:<10}")
    line("Failed requests:", s["failed"], "{:<10}")
    if "aborted" in s:
        line("Aborted requests (client):", s["aborted"], "{:<10}")
        line("  tokens they had generated:", s["aborted_output_tokens"], "{:<10}")
    line("Benchmark duration (s):", s["duration"])
    line("Total input tokens:", s["total_input_tokens"], "{:<10}")
    line("Total generated tokens:", s["total_output_tokens"], "{:<10}")
    line("Request throughput (req/s):", s["request_throughput"])
    if "request_goodput" in s:
        line("Request goodput (req/s):", s["request_goodput"])
    line("Output token throughput (tok/s):", s["output_throughput"])
    line("Total Token throughput (tok/s):", s["total_token_throughput"])
    if s.get("num_preemptions") is None:  # a replay without the server's /metrics
        print(f"{'Preemptions:':<40} n/a")
    else:
        line("Preemptions:", s["num_preemptions"], "{:<10}")
    for key, title in (("ttft", "Time to First Token"),
                       ("tpot", "Time per Output Token (excl. 1st token)"),
                       ("e2el", "End-to-end Latency")):
        print("{s:{c}^{n}}".format(s=title, n=50, c="-"))
        line(f"Mean {key.upper()} (ms):", s[f"mean_{key}_ms"])
        line(f"Median {key.upper()} (ms):", s[f"median_{key}_ms"])
        line(f"P90 {key.upper()} (ms):", s[f"p90_{key}_ms"])
        line(f"P99 {key.upper()} (ms):", s[f"p99_{key}_ms"])
    if s.get("num_replicas", 1) > 1:  # a fleet behind a router (dynasim.cluster)
        print("{s:{c}^{n}}".format(s=f"Replicas ({s.get('router', '')})", n=50, c="-"))
        line("Replicas:", s["num_replicas"], "{:<10}")
        for i, (n, t) in enumerate(zip(s["replica_requests"], s["replica_tokens"])):
            print(f"{f'  replica {i} requests / tokens:':<40} {n} / {t}")
        line("Request imbalance (max/mean):", s["replica_request_imbalance"])
        line("Token imbalance (max/mean):", s["replica_token_imbalance"])
    print("=" * 50)


def add_program_flags(p: argparse.ArgumentParser, online: bool = True) -> None:
    """Flags naming a workload and the intra-program policy's knobs."""
    g = p.add_argument_group("reasoning programs (Dynasor App. D.2)")
    if online:
        g.add_argument("--inter-program", choices=("fcfs", "lpm", "gang", "sjf", "plas", "priority"),
                       help="queue order when --policy names only an intra-program "
                            "policy (certaindex or two-sided alone means +sjf)")
        g.add_argument("--num-programs", type=int, help="programs to run (default: every "
                       "question once, in a seeded random order)")
        g.add_argument("--slo-scale", type=float, default=1.0,
                       help="deadline = SLO scale x difficulty (1-3) x base deadline")
        g.add_argument("--base-deadline", type=float, help="seconds (default: the p90 "
                       "latency of the programs run alone at the cap, baseline-even)")
        g.add_argument("--base-deadline-multiple", type=float, metavar="K",
                       help="base deadline = K x that isolated p90 (not with "
                            "--base-deadline; the paper fixes an absolute base, e.g. "
                            "240 s for SC/MATH on A100, that leaves room for queueing)")
        g.add_argument("--warmup-programs", type=int, default=0, metavar="N",
                       help="SLO attainment skips the first N programs to arrive")
        g.add_argument("--cooldown-programs", type=int, default=0, metavar="N",
                       help="SLO attainment skips the last N programs to arrive (with "
                            "--warmup-programs: the steady state only)")
        g.add_argument("--sjf-aging", type=float, default=30.0, help="seconds a program "
                       "waits before SJF serves it ahead of non-starving ones")
        g.add_argument("--probe-interval", type=int, default=64, metavar="T",
                       help="dynasor-cot: generated tokens between probes (a multiple of "
                            "the data's 64; default 64)")
        g.add_argument("--certainty-window", type=int, default=2, metavar="W",
                       help="dynasor-cot: probes that must agree (default 2; --threshold "
                            "is tau, default 1.0)")
        g.add_argument("--token-budget", type=int, metavar="B",
                       help="budget: most tokens of a chain of thought")
        g.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction,
                       default=None, help="prefix cache (default: on for workloads)")
    g.add_argument("--cap", type=int, default=20, help="resource cap: SC samples / ToT "
                   "beam width (default 20, the paper's SC cap)")
    g.add_argument("--detect-at", type=int, default=5,
                   help="detect step: SC samples / ToT steps (default 5 / use 1 for ToT)")
    g.add_argument("--threshold", type=float, help="certaindex H̃ threshold (default 0.7)")
    g.add_argument("--reward-threshold", type=float, help="certaindex R threshold (ToT)")
    g.add_argument("--low-threshold", type=float, help="two-sided: stop a hopeless program, "
                   "H̃ (or R for ToT) <= this (default 0.0)")
    g.add_argument("--dispatch", choices=("waves", "eager"), default="waves",
                   help="SC samples: waves (detect-step samples, then the rest; the "
                        "paper's run) or eager (all --cap at once, the unneeded ones "
                        "aborted after the detect step)")
    g.add_argument("--gamma", type=float, default=1.0, help="curve policy exponent")
    g.add_argument("--length-tokens", type=int, default=0,
                   help="baseline-length: stop when detect-step outputs total <= this "
                        "(batch default: the threshold stopping as many programs as "
                        "certaindex)")


def intra_args(args: argparse.Namespace, *, single_cap: bool = True) -> dict:
    """The intra-program policy's knobs from the program flags, as
    :func:`dynasim.policies.make_intra` takes them, after checking them.

    ``single_cap``: ``--cap`` is the one cap of the run, so ``--detect-at`` must not
    exceed it (``batch`` sweeps ``--caps`` and takes ``min(detect, cap)`` per cap).

    Raises:
        InputError: ``--cap``/``--detect-at`` < 1, ``--detect-at`` > ``--cap``, a
            ``--threshold``/``--reward-threshold``/``--low-threshold`` outside [0, 1]
            (H̃ and the normalised reward R lie in [0, 1], Dynasor §3), ``--gamma <= 0`` or
            ``--length-tokens < 0``.
    """
    for flag in ("cap", "detect_at"):
        if getattr(args, flag) < 1:
            raise InputError(f"--{flag.replace('_', '-')} must be >= 1 (samples / steps), "
                             f"got {getattr(args, flag)}", field=flag)
    if single_cap and args.detect_at > args.cap:
        raise InputError(f"--detect-at {args.detect_at} is larger than --cap {args.cap}: "
                         "the detect step is one of the cap's samples / steps",
                         field="detect_at")
    for flag in ("threshold", "reward_threshold", "low_threshold"):
        v = getattr(args, flag)
        if v is not None and not 0 <= v <= 1:
            raise InputError(f"--{flag.replace('_', '-')} must be in [0, 1] (certaindex "
                             f"is normalised to [0, 1]), got {v}", field=flag)
    if not args.gamma > 0 or math.isinf(args.gamma):
        raise InputError(f"--gamma must be finite and > 0, got {args.gamma}",
                         field="gamma")
    if args.length_tokens < 0:
        raise InputError(f"--length-tokens must be >= 0, got {args.length_tokens}",
                         field="length_tokens")
    return {"cap": args.cap, "detect_at": args.detect_at, "threshold": args.threshold,
            "reward_threshold": args.reward_threshold, "gamma": args.gamma,
            "max_tokens": args.length_tokens, "low_threshold": args.low_threshold,
            "dispatch": getattr(args, "dispatch", "waves"),
            **{k: getattr(args, k) for k in ("probe_interval", "certainty_window",
                                             "token_budget") if hasattr(args, k)}}


def require_at_least_one(value: int, flag: str) -> None:
    """A count flag (``--num-prompts``, ``--replicas``...) must be >= 1.

    Raises:
        InputError: ``value < 1`` (field: the flag's name with underscores).
    """
    if value < 1:
        raise InputError(f"{flag} must be >= 1, got {value}",
                         field=flag.lstrip("-").replace("-", "_"))


def require_rate(value: float, flag: str, unit: str) -> None:
    """A rate flag must be finite and > 0 (``unit``: ``req/s``, ``programs/s``).

    Raises:
        InputError: NaN, ``<= 0`` or infinite (field: the flag's name with underscores).
    """
    if not value > 0 or math.isinf(value):
        raise InputError(f"{flag} must be finite and > 0 {unit}, got {value}",
                         field=flag.lstrip("-").replace("-", "_"))


def check_online_flags(args: argparse.Namespace) -> None:
    """Check the flags of an online program run (``simulate``/``replay --workload``).

    Raises:
        InputError: a missing, infinite or non-positive ``--request-rate``,
            ``--num-programs < 1``, ``--slo-scale <= 0``, ``--base-deadline <= 0``, a
            negative ``--sjf-aging`` (the sweep config's bounds), both
            ``--base-deadline`` and ``--base-deadline-multiple`` or a multiple <= 0, a
            negative ``--warmup-programs``/``--cooldown-programs`` or a window leaving
            none of ``--num-programs``.
    """
    if args.request_rate is None:
        raise InputError("--request-rate (programs/s) is required with --workload",
                         field="request_rate")
    require_rate(args.request_rate, "--request-rate", "programs/s")
    if args.num_programs is not None and args.num_programs < 1:
        raise InputError("--num-programs must be >= 1", field="num_programs")
    if not args.slo_scale > 0:
        raise InputError("--slo-scale must be > 0", field="slo_scale")
    if args.base_deadline is not None and not args.base_deadline > 0:
        raise InputError("--base-deadline must be > 0 seconds", field="base_deadline")
    from dynasim.metrics import check_window
    from dynasim.simulation import check_base_deadline

    check_base_deadline(args.base_deadline, args.base_deadline_multiple)
    for flag in ("warmup_programs", "cooldown_programs"):
        if getattr(args, flag) < 0:
            raise InputError(f"--{flag.replace('_', '-')} must be >= 0", field=flag)
    if args.num_programs is not None:
        check_window(args.num_programs, args.warmup_programs, args.cooldown_programs)
    if not args.sjf_aging >= 0 or math.isinf(args.sjf_aging):
        raise InputError(f"--sjf-aging must be finite and >= 0 seconds, got "
                         f"{args.sjf_aging}", field="sjf_aging")


def online_profile(args: argparse.Namespace, profile: Profile) -> Profile:
    """Check the flags of an online program run (:func:`check_online_flags`) and return
    the profile to use (prefix caching on unless ``--no-enable-prefix-caching``).

    Raises:
        InputError: see :func:`check_online_flags`.
    """
    check_online_flags(args)
    if args.enable_prefix_caching is not False:
        profile = profile.with_overrides(enable_prefix_caching=True)
    return profile


def print_program_summary(s: dict) -> None:
    """The program-level block printed after the request summary."""
    print("{s:{c}^{n}}".format(s=" Programs ", n=50, c="-"))
    for label, key, fmt in (
            ("Programs:", "num_programs", "{:<10}"),
            ("SLO attainment:", "slo_attainment", "{:<10.3f}"),
            ("  over programs:", "slo_attainment_programs_counted", "{:<10}"),
            ("  deadline protocol:", "deadline_protocol", "{}"),
            ("Accuracy:", "accuracy", "{:<10.3f}"),
            ("Mean program latency (s):", "mean_program_latency_s", "{:<10.2f}"),
            ("P90 program latency (s):", "p90_program_latency_s", "{:<10.2f}"),
            ("Mean samples used:", "mean_samples_used", "{:<10.2f}"),
            ("Calls aborted (eager, CoT stop):", "aborted_calls", "{:<10}"),
            ("Program output tokens:", "total_program_output_tokens", "{:<10}"),
            ("Base deadline (s):", "base_deadline_s", "{:<10.2f}"),
            ("Prefix cache hit rate:", "prefix_cache_hit_rate", "{:<10.3f}")):
        if isinstance(s.get(key), dict):  # a mixed workload: one value per workload
            print(label)
            for w, v in s[key].items():
                print(f"  {w:<38} " + fmt.format(v))
        elif key in s:
            print(f"{label:<40} " + fmt.format(s[key]))
        by = s.get(f"{key}_by_workload")
        if isinstance(by, dict):
            for w, v in by.items():
                print(f"  {w:<38} " + fmt.format(v))
    print("=" * 50)


def int_list(text: str, field: str) -> list[int]:
    """``"5,10,20"`` -> ``[5, 10, 20]`` (each >= 1); raises InputError naming ``field``."""
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"expected comma-separated integers, got {text!r}",
                         field=field) from None
    if not vals or any(v < 1 for v in vals):
        raise InputError(f"expected integers >= 1, got {text!r}", field=field)
    return vals


def csv_list(kind: type[_T]) -> Callable[[str], list[_T]]:
    """An argparse ``type``: a comma-separated list of ``kind`` values."""
    def parse(text: str) -> list[_T]:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise InputError(f"expected comma-separated {kind.__name__} values, got "
                             f"{text!r}") from None
    return parse


async def serve_until_stopped(runner: object) -> None:
    """Wait until SIGINT or SIGTERM, then clean up ``runner`` (an aiohttp ``AppRunner``
    already serving): how ``dynasim serve`` and ``dynasim proxy`` end."""
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]
