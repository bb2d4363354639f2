"""Is this machine steady enough to judge a simulator by? ``python -m replay.steadiness
[--seconds 60] [--cpu 0]`` times one fixed piece of CPU work (a 256 x 256 float32
matmul 200 times, then a 300,000-step Python loop: about 0.1 s on one core of the
2-core CI box) every 0.2 s, pinned to one CPU, and prints the spread of its wall time,
the median of each 10 s window, and the share of CPU time the hypervisor took (``steal``
in ``/proc/stat``).

Run it with nothing else on the machine. A live fidelity target (e.g. median E2E error
<= 10%) cannot be checked on a machine whose own speed moves by more than that between
windows: the server's step times move with it, while the simulator's calibrated profile
stays where it was measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

WINDOW_S = 10.0


def _work(a: np.ndarray) -> float:
    s = 0.0
    for _ in range(200):
        s += float((a @ a)[0, 0])
    x = 0
    for i in range(300_000):
        x += i * i
    return s + x


def _cpu_times() -> tuple[int, int] | None:
    """(steal, total) jiffies over all CPUs from ``/proc/stat``; None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def measure(seconds: float, cpu: int | None = 0, pause: float = 0.2) -> dict:
    """Time the fixed work for ``seconds`` (s). Returns ``times`` (s, in order),
    ``starts`` (s since the first), ``steal_fraction`` (of all CPU time over the run;
    NaN where ``/proc/stat`` is missing).

    Raises:
        OSError: ``cpu`` is not a CPU this process may run on.
    """
    saved = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        a = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
        _work(a)  # warm-up
        before, times, starts = _cpu_times(), [], []
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            t = time.perf_counter()
            _work(a)
            times.append(time.perf_counter() - t)
            starts.append(t - t0)
            time.sleep(pause)
        after = _cpu_times()
    finally:
        os.sched_setaffinity(0, saved)
    steal = float("nan")
    if before and after and after[1] > before[1]:
        steal = (after[0] - before[0]) / (after[1] - before[1])
    return {"times": np.array(times), "starts": np.array(starts), "steal_fraction": steal}


def summary(result: dict) -> dict:
    """Median, p10 and p90 of the work's wall time (ms), the medians of each 10 s window
    (ms) and the largest change between two windows (fraction of the smaller)."""
    t, s = result["times"] * 1e3, result["starts"]
    windows = [float(np.median(t[(s >= w) & (s < w + WINDOW_S)]))
               for w in np.arange(0, s.max() + 1e-9, WINDOW_S)
               if ((s >= w) & (s < w + WINDOW_S)).any()]
    return {"runs": int(len(t)), "median_ms": float(np.median(t)),
            "p10_ms": float(np.percentile(t, 10)), "p90_ms": float(np.percentile(t, 90)),
            "window_medians_ms": windows,
            "window_swing": (max(windows) / min(windows) - 1) if windows else float("nan"),
            "steal_fraction": result["steal_fraction"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m replay.steadiness", description=__doc__
                                .split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="how long to measure (s)")
    p.add_argument("--cpu", type=int, default=0, help="CPU to pin to (-1: do not pin)")
    args = p.parse_args(argv)
    if args.seconds <= 0:
        p.error("--seconds must be > 0")
    try:
        r = summary(measure(args.seconds, None if args.cpu < 0 else args.cpu))
    except OSError as exc:
        print(f"steadiness: error: cannot pin to CPU {args.cpu} ({exc})", file=sys.stderr)
        return 2
    print(f"fixed work, {r['runs']} runs: median {r['median_ms']:.1f} ms, "
          f"p10 {r['p10_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms "
          f"(p90/p10 = {r['p90_ms'] / r['p10_ms']:.2f})")
    print("median per 10 s window (ms): "
          + ", ".join(f"{w:.1f}" for w in r["window_medians_ms"]))
    print(f"largest swing between windows: {r['window_swing']:.1%}; "
          f"hypervisor steal: {r['steal_fraction']:.1%} of all CPU time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
