"""Client overhead of the replay harness: dispatch lag against a fast local stub.

Dispatch lag = actual send time − scheduled send time (the journal's ``dispatch_lag``):
how late the open-loop client puts a request on the wire because it is busy. It is
measured against :mod:`replay.testing.stub` in its own process (no token delay, short streams),
so the figure is the client's, not a server's. Run::

    python -m replay.benchmark                 # 200 and 1000 req/s, 10 s each
    python -m replay.benchmark --rates 200 --duration 20 --output-tokens 32

It prints one line per rate: requests, failures, achieved request rate, and dispatch lag
p50 / p99 / max in ms. Target (issue 4): p99 <= 5 ms at 200 req/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile

import numpy as np

from dynasim.arrivals import arrival_times
from dynasim.policies import make_policy
from dynasim.request import Request
from replay.dispatcher import Replay
from replay.journal import Journal
from replay.prompts import PromptBuilder
from replay.testing.stub import StubServer


def measure(base_url: str, rate: float, duration: float, prompt_tokens: int,
            output_tokens: int, seed: int = 0) -> dict:
    """Replay a Poisson trace of ``rate`` req/s for ``duration`` s; returns the lag
    figures (ms) and counts."""
    n = max(1, int(rate * duration))
    times = arrival_times(n, rate, 1.0, seed)
    reqs = [Request(i, float(t), prompt_tokens, output_tokens) for i, t in enumerate(times)]
    with tempfile.TemporaryDirectory() as d:
        journal = Journal(d, {})
        rep = Replay(base_url, "stub", make_policy("fcfs"), journal,
                     PromptBuilder(range(3, 259), salt=f"bench{seed}"))
        summary = asyncio.run(rep.run(reqs))
        lag = np.array([r["dispatch_lag"] for r in journal.requests]) * 1000.0
    return {"rate": rate, "requests": n, "failed": summary["failed"],
            "achieved_rate": n / float(times[-1]) if times[-1] > 0 else float("nan"),
            "p50_ms": float(np.percentile(lag, 50)), "p99_ms": float(np.percentile(lag, 99)),
            "max_ms": float(lag.max())}


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="200,1000", help="comma-separated req/s")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per rate")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--output-tokens", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    with StubServer() as base_url:
        print(f"stub at {base_url}; {args.prompt_tokens} prompt / {args.output_tokens} "
              f"output tokens; {args.duration:g} s per rate")
        for rate in (float(r) for r in args.rates.split(",")):
            r = measure(base_url, rate, args.duration, args.prompt_tokens,
                        args.output_tokens, args.seed)
            print(f"{rate:>7g} req/s  {r['requests']:>6} requests  {r['failed']} failed  "
                  f"dispatch lag p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
                  f"max {r['max_ms']:.2f} ms")


if __name__ == "__main__":
    main()
