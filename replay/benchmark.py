"""Client overhead of the replay harness: dispatch lag against a fast local stub.

Dispatch lag = actual send time − scheduled send time (the journal's ``dispatch_lag``):
how late the open-loop client puts a request on the wire because it is busy. The client
runs as ``dynasim replay`` runs it (the same start-up heap: pandas, pyarrow, aiohttp,
the trace read by dynasim's reader, the prompts), one fresh process per rate, on a
seeded Poisson trace; the server is :mod:`replay.testing.stub` in a process of its own (no
token delay, short streams), so the figure is the client's, not a server's. Run::

    python -m replay.benchmark                 # 40, 200 and 1000 req/s, 10 s each
    python -m replay.benchmark --rates 200 --duration 20 --output-tokens 32

It prints one line per rate: requests, failures, dispatch lag p50 / p99 / max in ms
with the run time of the worst send, and the gen-2 (full) collections of CPython's
cyclic GC while the run dispatched, with the longest (CPU time, which a busy machine
does not inflate): a full collection stops the event
loop while it scans every tracked object, which is why
:meth:`replay.dispatcher.Replay.run` freezes the start-up heap (issue 15). Target
(issue 4): p99 <= 5 ms at 200 req/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dynasim.arrivals import arrival_times


def write_trace(path: Path, rate: float, duration: float, prompt_tokens: int,
                output_tokens: int, seed: int = 0) -> int:
    """A Mooncake JSONL trace of ``rate`` req/s (Poisson, ``vllm bench serve``'s draw)
    for ``duration`` seconds; returns the number of requests."""
    n = max(1, int(rate * duration))
    with open(path, "w") as f:
        for t in arrival_times(n, rate, 1.0, seed):
            f.write(json.dumps({"timestamp": float(t) * 1000.0, "input_length": prompt_tokens,
                                "output_length": output_tokens}) + "\n")
    return n


def measure(base_url: str, rate: float, duration: float, prompt_tokens: int,
            output_tokens: int, seed: int = 0) -> dict:
    """Replay a Poisson trace of ``rate`` req/s for ``duration`` s against ``base_url``
    as ``dynasim replay`` does (the trace read by :func:`dynasim.trace.read_trace`,
    prompts built from the stub's token ids, a :class:`~replay.journal.Journal`, FCFS);
    returns the lag figures (ms), the run time of the worst send (s), counts, and the
    gen-2 collections during the run (count, longest in CPU ms)."""
    import numpy as np

    from dynasim.policies import make_policy
    from dynasim.simulation import requests_from_trace
    from dynasim.trace import read_trace
    from replay.dispatcher import Replay
    from replay.journal import Journal
    from replay.prompts import PromptBuilder
    from replay.testing.stub import TOKEN_ID_OFFSET, VOCAB_SIZE

    # (start, CPU seconds) of every gen-2 collection: CPU time of the collecting thread,
    # not wall time, so that a busy machine's scheduler does not inflate it
    full: list[tuple[float, float]] = []
    started: list[tuple[float, float]] = []

    def on_gc(phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started.append((time.perf_counter(), time.thread_time()))
        elif started:
            full.append((started[-1][0], time.thread_time() - started[-1][1]))

    with tempfile.TemporaryDirectory() as d:
        trace = Path(d) / "trace.jsonl"
        n = write_trace(trace, rate, duration, prompt_tokens, output_tokens, seed)
        reqs = requests_from_trace(read_trace(str(trace)))
        journal = Journal(Path(d) / "run", {})
        rep = Replay(base_url, "stub", make_policy("fcfs"), journal,
                     PromptBuilder(range(TOKEN_ID_OFFSET, VOCAB_SIZE), salt=f"bench{seed}"))
        gc.callbacks.append(on_gc)
        try:
            summary = asyncio.run(rep.run(reqs))
        finally:
            gc.callbacks.remove(on_gc)
        rows = journal.requests
    lag = np.array([r["dispatch_lag"] for r in rows]) * 1000.0
    during = [s for t, s in full if t >= rep.t0]
    return {"rate": rate, "requests": n, "failed": summary["failed"],
            "p50_ms": float(np.percentile(lag, 50)), "p99_ms": float(np.percentile(lag, 99)),
            "max_ms": float(lag.max()),
            "max_at_s": float(rows[int(lag.argmax())]["scheduled_time"]),
            "gen2_collections": len(during),
            "gen2_longest_ms": 1000.0 * max(during, default=0.0)}


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="40,200,1000", help="comma-separated req/s")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per rate")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--output-tokens", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)  # one rate, JSON out
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, float(args.rates), args.duration,
                                 args.prompt_tokens, args.output_tokens, args.seed)))
        return
    from replay.testing.stub import StubServer

    with StubServer(max_model_len=args.prompt_tokens + args.output_tokens) as base_url:
        print(f"stub at {base_url}; {args.prompt_tokens} prompt / {args.output_tokens} "
              f"output tokens; {args.duration:g} s per rate; a fresh client process per "
              "rate", flush=True)
        for rate in args.rates.split(","):
            child = subprocess.run(
                [sys.executable, "-m", "replay.benchmark", "--child", base_url, "--rates",
                 rate, "--duration", str(args.duration), "--prompt-tokens",
                 str(args.prompt_tokens), "--output-tokens", str(args.output_tokens),
                 "--seed", str(args.seed)], capture_output=True, text=True, check=False)
            if child.returncode != 0:
                raise SystemExit(f"client at {rate} req/s failed:\n{child.stderr[-2000:]}")
            r = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"{r['rate']:>7g} req/s  {r['requests']:>6} requests  {r['failed']} failed  "
                  f"dispatch lag p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
                  f"max {r['max_ms']:.2f} ms (at {r['max_at_s']:.1f} s)  gen-2 GCs "
                  f"{r['gen2_collections']} (longest {r['gen2_longest_ms']:.1f} ms CPU)",
                  flush=True)


if __name__ == "__main__":
    main()
