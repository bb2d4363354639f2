"""The recording client's concurrency cap, simulated: a closed loop between a load
generator that keeps at most ``N`` requests in flight and the simulated server.

A recorded run's driver may cap the requests it has in flight: ``blis observe`` (the
residency runs' driver, inference-sim/inference-sim ``cmd/observe_cmd.go``) has
``--max-concurrency`` (default 256, "Maximum simultaneous in-flight requests"). Below
the cap the client sends each request at its scheduled (Poisson) time; at the cap a due
request waits until an earlier one's response ends, and is sent at that instant (in
the residency w7 agg12 run the server has exactly 256 requests in flight from 40 s on,
and every late send follows a response's last chunk by 0.06 ms, median). The recorded
send times of such a run then carry the real server's finish times: replayed open-loop,
a simulated server a few percent faster drains the backlog the real one kept, and its
queueing delay goes to zero (TTFT 84% off in that run). Simulated in a closed loop, the
cap holds the same number of requests at the server, and an error in the server's
throughput shows as the same relative error in latency (Little's law) instead of
accumulating over the run.

Trace columns (:mod:`dynasim.runs.common`): ``scheduled_time`` (s on the trace clock:
when the client meant to send), ``client_max_concurrency`` (the cap; NaN or <= 0:
none). :func:`simulate_capped` simulates such a trace; the records' ``arrival_time`` is
the simulated send, so TTFT and E2E are measured from it, as the client measured them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the engine side is imported where it runs (readers import this)
    import pandas as pd

    from dynasim.policies.base import Policy
    from dynasim.profiles.profile import Profile
    from dynasim.request import Request
    from dynasim.trace import Trace

SCHEDULE = "scheduled_time"
CAP = "client_max_concurrency"

#: ``blis observe --max-concurrency`` default (inference-sim ``cmd/observe_cmd.go``)
BLIS_OBSERVE_MAX_CONCURRENCY = 256


def client_cap(trace: Trace) -> int | None:
    """The trace's client concurrency cap (:data:`CAP`, the same on every row), or
    ``None`` when it has none (column absent, NaN or <= 0) or no ``scheduled_time``."""
    f = trace.frame
    if CAP not in f.columns or SCHEDULE not in f.columns or not len(f):
        return None
    cap = float(f[CAP].iloc[0])
    return int(cap) if math.isfinite(cap) and cap >= 1 else None


def simulate_capped(trace: Trace, profile: Profile, policy: Policy, cap: int, *,
                    measure_from: str = "send",
                    progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Simulate ``trace`` on one replica behind a client holding at most ``cap``
    requests in flight (module docstring); deterministic.

    Requests are due at their ``scheduled_time`` (seconds; the ``arrival_time`` where
    the trace has no such column) in that order (ties by id); a due request is sent
    when fewer than ``cap`` are in flight, else at the instant an in-flight request
    finishes, fails or times out (the slot frees when its response ends). A sent
    request reaches the engine ``profile.frontend_latency_ms`` later, as in
    :func:`dynasim.simulation.simulate`; its ``client_timeout_s`` (if any) counts from
    the send.

    Args:
        measure_from: ``"send"``: a record's ``arrival_time`` is the send (the recorded
            runs' clients measure from it); ``"due"``: the due time, so TTFT and E2E
            include the wait in the client's queue (``dynasim replay
            --max-concurrency`` measures so: ``arrival_time = send - client_queue_time``).
        progress: called with the number of requests done, now and then.

    Returns:
        the record table (:mod:`dynasim.data_record`).

    Raises:
        ValueError: ``cap`` < 1 or an unknown ``measure_from``.
    """
    import simpy

    from dynasim.data_record import records_frame
    from dynasim.engine import Engine
    from dynasim.simulation import requests_from_trace

    if cap < 1:
        raise ValueError(f"client concurrency cap must be >= 1, got {cap}")
    if measure_from not in ("send", "due"):
        raise ValueError(f"measure_from must be 'send' or 'due', got {measure_from!r}")
    env = simpy.Environment()
    f = trace.frame
    sched = f[SCHEDULE if SCHEDULE in f.columns else "arrival_time"].to_numpy(float)
    by_id = {r.request_id: r for r in requests_from_trace(trace)}
    ids = trace.frame.index.to_numpy().astype(np.int64)
    order = np.lexsort((ids, sched))
    due = [(float(sched[i]), by_id[int(ids[i])]) for i in order[::-1]]  # a stack
    front = profile.frontend_latency_ms / 1000.0
    done: list[Request] = []
    state = {"in_flight": 0, "timer_at": -math.inf}  # the pending wake-up, if any
    due_at: dict[Request, float] = {}  # measure_from="due": each request's due time

    def send_due(_: object = None) -> None:
        while due and state["in_flight"] < cap:
            t, req = due[-1]
            if t > env.now:
                if state["timer_at"] != t:  # one wake-up per due time
                    state["timer_at"] = t
                    env.timeout(t - env.now).callbacks.append(send_due)
                return
            due.pop()
            state["in_flight"] += 1
            req.arrival_time = env.now
            if measure_from == "due":
                due_at[req] = t
            if front > 0:
                env.timeout(front).callbacks.append(lambda _, r=req: engine.submit(r))
            else:
                engine.submit(req)

    every = max(1, len(trace) // 200)

    def on_finish(req: Request) -> None:
        done.append(req)
        if progress is not None and len(done) % every == 0:
            progress(len(done))
        state["in_flight"] -= 1
        send_due()

    engine = Engine(env, profile, policy, on_finish=on_finish)
    env.timeout(0).callbacks.append(send_due)
    env.run()
    if len(done) != len(trace):
        raise RuntimeError(f"simulation ended with {len(trace) - len(done)} requests "
                           "unfinished")
    for req, t in due_at.items():  # measured from the due time (the engine saw the send)
        req.arrival_time = t
    return records_frame(done)
