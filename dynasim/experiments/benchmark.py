"""Speed benchmark (a script, not a test): simulate a whole real trace and print wall
seconds and simulated seconds per wall second.

    dynasim benchmark [--trace azure-conv-2023] [--profile distserve-opt13b-a100]
    dynasim benchmark --startup        # how long `dynasim --help` takes
    dynasim benchmark --scale          # 1M Azure-like requests; 8 replicas x 1M
    dynasim benchmark --scale --cprofile 25   # and where the simulate time goes
    dynasim benchmark --programs       # simulate_programs on ToT and SC workloads

Default: the Azure 2023 conversation trace (19,366 requests at their recorded arrival
times, one hour) on ``distserve-opt13b-a100``. Target (issue #2): under 30 s on one core.

``--scale`` (issue 19): a deterministic Azure-like trace of a million requests per
replica (:func:`azure_like`: the recorded trace's gaps and lengths repeated, time
scaled to ``--rate-per-replica`` × replicas req/s) is written as Mooncake JSONL, then
timed through the two phases a user pays for: reading it (:func:`~dynasim.trace.read_trace`)
and simulating it (one replica: :func:`~dynasim.simulation.simulate`; several:
:func:`~dynasim.cluster.simulate_cluster` behind ``--router``). Targets (issue 19): one
replica × 1M requests in 30 s including the read; 8 replicas × 1M requests each in 4
minutes.

``--programs`` (issue 19): :func:`~dynasim.simulation.simulate_programs` on the
Tree-of-Thoughts and self-consistency Game of 24 workloads and on long chains of thought
(:data:`PROGRAM_WORKLOADS`, :func:`run_programs_benchmark`): requests per wall second and
peak memory per request.
"""

from __future__ import annotations

import math
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from dynasim.policies import make_policy
from dynasim.profiles import load_profile
from dynasim.simulation import simulate
from dynasim.trace import Trace, read_trace


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


def azure_like(num_requests: int, request_rate: float,
               source: str = "azure-conv-2023") -> Trace:
    """A deterministic Azure-like trace of ``num_requests`` requests: request i has the
    prompt and output lengths of row ``i mod len(source)`` of the recorded trace and the
    recorded gap before that row (the gap before row 0 being the trace's mean gap), all
    gaps scaled by one factor so the mean rate is ``request_rate`` req/s (the burst
    pattern of the recording kept). No randomness: the same arguments give the same
    trace on every machine.

    Raises:
        InputError: an unreadable ``source`` (:func:`~dynasim.trace.read_trace`).
        ValueError: ``num_requests < 1`` or a rate that is not finite and > 0.
    """
    import pandas as pd

    if num_requests < 1 or not 0 < request_rate < math.inf:
        raise ValueError("need num_requests >= 1 and a finite request_rate > 0")
    src = read_trace(source).frame
    t = src["arrival_time"].to_numpy(float)
    gaps = np.diff(t, prepend=t[0] - (t[-1] - t[0]) / max(1, len(t) - 1))
    idx = np.arange(num_requests) % len(src)
    times = np.cumsum(gaps[idx])
    times -= times[0]
    if times[-1] > 0:
        times *= (num_requests / request_rate) / times[-1]
    frame = pd.DataFrame({"arrival_time": times,
                          "prompt_tokens": src["prompt_tokens"].to_numpy()[idx],
                          "output_tokens": src["output_tokens"].to_numpy()[idx]})
    frame.index.name = "request_id"
    return Trace(f"azure-like(from={source}, n={num_requests}, rate={request_rate})", frame)


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_scale_benchmark(num_requests: int = 1_000_000, replicas: tuple[int, ...] = (1, 8),
                        rate_per_replica: float = 1.8,
                        profile: str = "distserve-opt13b-a100",
                        router: str = "least-outstanding", source: str = "azure-conv-2023",
                        workdir: str | Path | None = None,
                        cprofile: int = 0) -> list[dict]:
    """For each fleet size N in ``replicas``: write :func:`azure_like` with
    ``num_requests`` × N requests at ``rate_per_replica`` × N req/s as Mooncake JSONL,
    read it back and simulate it on N replicas of ``profile`` (FCFS, ``router`` when
    N > 1); print and return one row per fleet: ``read_s`` and ``simulate_s`` (wall
    seconds), ``total_s``, ``read_cpu_s`` and ``simulate_cpu_s`` (this process's CPU
    seconds: the figure to trust on a shared machine), requests served, throughput
    (served req/s), engine steps and peak memory (MB).

    ``cprofile`` > 0: simulate under :mod:`cProfile` and print its ``cprofile`` most
    costly functions by own time (the run is then slower than the figures without it).
    The default rate, 1.8 req/s per replica, is about 90% of what one
    ``distserve-opt13b-a100`` replica serves of the Azure conversation trace.

    Raises:
        InputError: an unknown profile, router or source trace.
    """
    from dynasim.cluster import simulate_cluster
    from dynasim.routers import make_router
    from dynasim.trace import write_mooncake

    prof = load_profile(profile)
    make_router(router)  # a bad name fails before the long part
    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for n in replicas:
            total = num_requests * n
            path = Path(tmp) / f"azure-like-{total}.jsonl"
            t0 = time.perf_counter()
            write_mooncake(azure_like(total, rate_per_replica * n, source), path)
            write_s = time.perf_counter() - t0
            t0, c0 = time.perf_counter(), time.process_time()
            tr = read_trace(str(path))
            read_s, read_cpu = time.perf_counter() - t0, time.process_time() - c0
            path.unlink()

            def run(tr: Trace = tr, n: int = n) -> tuple:
                if n == 1:
                    return simulate(tr, prof, make_policy("fcfs"))
                return simulate_cluster(tr, [prof] * n, lambda: make_policy("fcfs"),
                                        make_router(router))

            t0, c0 = time.perf_counter(), time.process_time()
            if cprofile:
                import cProfile
                import pstats

                prof_run = cProfile.Profile()
                records, engine = prof_run.runcall(run)
            else:
                records, engine = run()
            sim_s, sim_cpu = time.perf_counter() - t0, time.process_time() - c0
            served = int((records["error"] == "").sum())
            duration = float(records["finish_time"].max())
            row = {"replicas": n, "requests": total, "served": served, "profile": profile,
                   "router": router if n > 1 else "-", "rate": rate_per_replica * n,
                   "write_s": write_s, "read_s": read_s, "simulate_s": sim_s,
                   "total_s": read_s + sim_s, "read_cpu_s": read_cpu,
                   "simulate_cpu_s": sim_cpu, "throughput": served / duration,
                   "engine_steps": engine.num_steps, "peak_rss_mb": _peak_rss_mb()}
            rows.append(row)
            print(f"{n} replica(s) x {num_requests} requests ({total} at "
                  f"{row['rate']:g} req/s, {served} served) on {profile}"
                  f"{f', router {router}' if n > 1 else ''}: read {read_s:.2f} s, "
                  f"simulate {sim_s:.2f} s, total {row['total_s']:.2f} s wall (CPU: read "
                  f"{read_cpu:.2f} s, simulate {sim_cpu:.2f} s; writing the trace took "
                  f"{write_s:.1f} s); {row['throughput']:.2f} "
                  f"req/s served, {engine.num_steps} engine steps, peak memory "
                  f"{row['peak_rss_mb']:.0f} MB", flush=True)
            if cprofile:
                pstats.Stats(prof_run).sort_stats("tottime").print_stats(cprofile)
            del records, engine, tr
    return rows


def _rss_mb() -> float:
    """Resident memory of this process now, MB (Linux ``/proc/self/statm``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return 0.0


#: the program workloads ``--programs`` times by default: Tree of Thoughts and
#: self-consistency (Game of 24) and long chains of thought with probes every 64 tokens
#: (R1-Llama-8B on MATH500: the kind the issue's 6,000 requests per wall second came from)
PROGRAM_WORKLOADS = ("game24-tot", "game24-sc", "cot-r1-llama8b-math500")


def default_policy(workload: object) -> str:
    """The policy ``--programs`` runs a workload under unless told: ``sjf+dynasor-cot``
    for chains of thought (algorithm ``cot``), ``sjf+certaindex`` otherwise (Dynasor §4)."""
    progs = getattr(workload, "programs", ())
    return ("sjf+dynasor-cot" if progs and all(s.algorithm == "cot" for s in progs)
            else "sjf+certaindex")


def run_programs_benchmark(workloads: tuple[str, ...] = PROGRAM_WORKLOADS,
                           policy: str | None = None,
                           profile: str = "vllm023-qwen3-14b-h100",
                           num_programs: int = 1000, rate: float = 1.0,
                           seed: int = 0, repeat: int = 1) -> list[dict]:
    """Time :func:`~dynasim.simulation.simulate_programs` on each workload under
    ``policy`` (None: :func:`default_policy` of each) (``rate``
    programs/s, Poisson, ``num_programs`` programs, base deadline 240 s as in Dynasor
    §4): print and return one row per run with the requests simulated, wall and CPU
    seconds, requests per wall second and the peak memory per request (KB: this
    process's peak resident memory after the run minus its resident memory before,
    divided by the requests; run it in a fresh process, since the peak never falls).

    Raises:
        InputError: an unknown workload, policy or profile.
    """
    from dynasim.simulation import online_programs, simulate_programs
    from dynasim.workloads.catalog import load_workload

    prof = load_profile(profile)
    rows = []
    for name in workloads:
        wl = load_workload(name)
        pol_name = policy or default_policy(wl)
        for i in range(repeat):
            specs, times, deadlines, _ = online_programs(
                wl, None, rate, seed=seed, num_programs=num_programs, base=240.0)
            before = _rss_mb()
            t0, c0 = time.perf_counter(), time.process_time()
            requests, programs, engine = simulate_programs(specs, times, prof,
                                                           make_policy(pol_name), deadlines)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            n = len(requests)
            kb = max(0.0, _peak_rss_mb() - before) * 1024 / max(1, n)
            row = {"workload": name, "policy": pol_name, "profile": profile,
                   "programs": len(programs), "requests": n, "wall_s": wall, "cpu_s": cpu,
                   "requests_per_wall_s": n / wall, "requests_per_cpu_s": n / cpu,
                   "peak_kb_per_request": kb, "engine_steps": engine.num_steps}
            rows.append(row)
            print(f"run {i + 1}: {name}, {len(programs)} programs at {rate:g}/s, {n} "
                  f"requests, {pol_name} on {profile}: wall {wall:.2f} s (CPU {cpu:.2f} s), "
                  f"{n / wall:.0f} requests per wall s ({n / cpu:.0f} per CPU s), peak "
                  f"memory {kb:.2f} KB per request, {engine.num_steps} engine steps",
                  flush=True)
            del requests, programs, engine
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
