"""Wire a trace, a profile and a policy into one simulated run; return the records.

Data flows one way: trace -> requests -> policy + engine -> records (-> metrics).
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import simpy

from dynasim.data_record import records_frame
from dynasim.engine import Engine
from dynasim.policy import Policy
from dynasim.profile import Profile
from dynasim.request import Request
from dynasim.trace import Trace


def requests_from_trace(trace: Trace) -> list[Request]:
    """One :class:`Request` per trace row, ids = trace ids, in arrival order."""
    f = trace.frame
    hashes = f["hash_ids"] if "hash_ids" in f.columns else None
    out = []
    for i, (rid, t, p, o) in enumerate(zip(f.index, f["arrival_time"], f["prompt_tokens"],
                                            f["output_tokens"])):
        h = hashes.iloc[i] if hashes is not None else None
        out.append(Request(int(rid), float(t), int(p), int(o),
                           hash_ids=tuple(h) if isinstance(h, list) else None))
    out.sort(key=lambda r: (r.arrival_time, r.request_id))
    return out


def arrival_node(env: simpy.Environment, engine: Engine, requests: list[Request],
                 frontend_latency: float = 0.0):
    """SimPy process: submit each request (sorted by arrival) to the engine at its
    arrival time plus ``frontend_latency`` seconds (the API server's share of TTFT)."""
    for req in requests:
        delay = req.arrival_time + frontend_latency - env.now
        if delay > 0:
            yield env.timeout(delay)
        engine.submit(req)


def simulate(trace: Trace, profile: Profile, policy: Policy,
             progress: Callable[[int], None] | None = None) -> tuple[pd.DataFrame, Engine]:
    """Simulate ``trace`` on one replica; deterministic for the same inputs.

    Args:
        progress: called with the number of requests done, now and then.

    Returns:
        (records, engine): the record table (:mod:`dynasim.data_record`) and the engine
        (for its counters: ``num_steps``, ``num_preemptions``).
    """
    env = simpy.Environment()
    done: list[Request] = []
    every = max(1, len(trace) // 200)

    def on_finish(req: Request) -> None:
        done.append(req)
        if progress is not None and len(done) % every == 0:
            progress(len(done))

    engine = Engine(env, profile, policy, on_finish=on_finish)
    env.process(arrival_node(env, engine, requests_from_trace(trace),
                             profile.frontend_latency_ms / 1000.0))
    env.run()
    if progress is not None:
        progress(len(done))
    if len(done) != len(trace):
        raise RuntimeError(f"simulation ended with {len(trace) - len(done)} requests "
                           "unfinished")
    return records_frame(done), engine
