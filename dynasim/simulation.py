"""Wire a trace, a profile and a policy into one simulated run; return the records.

Data flows one way: trace -> requests -> policy + engine -> records (-> metrics).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import simpy

from dynasim.data_record import records_frame
from dynasim.engine import Engine
from dynasim.errors import InputError
from dynasim.policies.base import Policy
from dynasim.profiles import Profile
from dynasim.request import Request
from dynasim.trace import Trace

if TYPE_CHECKING:
    from dynasim.workloads.call import Call
    from dynasim.workloads.catalog import Workload
    from dynasim.workloads.program import ProgramSpec


def requests_from_trace(trace: Trace) -> list[Request]:
    """One :class:`Request` per trace row, ids = trace ids, in arrival order.

    A ``client_timeout_s`` column (recorded runs, :mod:`dynasim.runs.common`; NaN or
    absent: none) becomes each request's ``timeout_s`` (seconds after its arrival);
    the engine honours it only under a profile with ``client_timeouts``. A ``priority``
    column (vLLM's per-request integer priority, lower first; a Mooncake line's extra
    key) becomes each request's ``priority``, which the ``priority`` policy orders by
    (:mod:`dynasim.policies.priority`) and the replay harness sends; 0 where a row has
    none.

    Raises:
        InputError: a ``priority`` that is not an integer (field ``priority``, the row's
            request id).
    """
    f = trace.frame
    prios = None
    if "priority" in f.columns:
        prio = f["priority"].map(lambda v: 0 if isinstance(v, float) and math.isnan(v)
                                 else v)  # a line without the key: vLLM's default 0
        bad = prio.map(lambda v: isinstance(v, bool) or not float(v).is_integer()
                       if isinstance(v, (int, float)) else True)
        if bad.any():
            rid = prio.index[bad.to_numpy()][0]
            raise InputError(f"priority must be an integer, got {prio[rid]!r} (request "
                             f"{rid})", source=trace.source, field="priority")
        prios = prio.to_numpy().astype(np.int64)
    n = len(f)
    times = f["arrival_time"].to_numpy(float)
    ids = f.index.to_numpy().astype(np.int64)
    order = np.lexsort((ids, times))  # by arrival time, then id (a stable sort)
    timeouts = (f["client_timeout_s"].to_numpy(float)[order] if "client_timeout_s" in f.columns
                else None)
    hashes = f["hash_ids"].to_numpy(object)[order] if "hash_ids" in f.columns else None
    cols = zip(ids[order].tolist(), times[order].tolist(),
               f["prompt_tokens"].to_numpy().astype(np.int64)[order].tolist(),
               f["output_tokens"].to_numpy().astype(np.int64)[order].tolist())
    if hashes is None and timeouts is None:  # the common case, no per-row options
        reqs = [Request(rid, t, p, o) for rid, t, p, o in cols]
    else:
        if timeouts is None:
            timeouts = np.full(n, np.nan)
        limits = np.where(timeouts > 0, timeouts, math.inf).tolist()  # NaN or <= 0: none
        if hashes is None:
            hashes = [None] * n
        reqs = [Request(rid, t, p, o, hash_ids=tuple(h) if isinstance(h, list) else None,
                        timeout_s=limit)
                for (rid, t, p, o), h, limit in zip(cols, hashes, limits)]
    if prios is not None:
        for r, v in zip(reqs, prios[order].tolist()):
            r.priority = v
    return reqs


def start_arrivals(env: simpy.Environment, engine: Engine, requests: list[Request],
                   frontend_latency: float = 0.0) -> None:
    """Submit each request (sorted by arrival) to the engine at its arrival time plus
    ``frontend_latency`` seconds, exactly as ``env.process(arrival_node(...))`` does
    (the same event times, priorities and order, hence the same records), but with a
    callback on each timeout instead of a SimPy process resumed per arrival (cheaper
    at a million requests, issue 19)."""
    from simpy.events import URGENT, Event, Timeout

    it = iter(requests)
    nxt: list[Request | None] = [next(it, None)]
    # the engine (or fleet) may wait for the next arrival instead of being interrupted
    # by it and look ahead to it (Engine.tell_next_arrival); whatever else cuts a run
    # (an abort) wakes it the same way
    tell = getattr(engine, "tell_next_arrival", None)

    def arrive(_: object = None) -> None:
        req = nxt[0]
        while req is not None:
            delay = req.arrival_time + frontend_latency - env.now
            if delay > 0:
                if tell is not None:
                    tell(env.now + delay, req)  # SimPy's event time
                Timeout(env, delay).callbacks.append(arrive)  # type: ignore[union-attr]
                nxt[0] = req
                return
            engine.submit(req)
            req = next(it, None)
        nxt[0] = None
        if tell is not None:
            tell(math.inf, None)

    start = Event(env)  # like a process's Initialize: urgent, now
    start._ok, start._value = True, None
    start.callbacks.append(arrive)  # type: ignore[union-attr]
    env.schedule(start, URGENT)


def arrival_node(env: simpy.Environment, engine: Engine, requests: list[Request],
                 frontend_latency: float = 0.0) -> Generator[simpy.Event, object, None]:
    """SimPy process: submit each request (sorted by arrival) to the engine at its
    arrival time plus ``frontend_latency`` seconds (the API server's share of TTFT)."""
    for req in requests:
        delay = req.arrival_time + frontend_latency - env.now
        if delay > 0:
            yield env.timeout(delay)
        engine.submit(req)


def simulate(trace: Trace, profile: Profile, policy: Policy | None,
             progress: Callable[[int], None] | None = None,
             max_decode_run: int | None = None,
             make_engine: Callable[..., Engine] | None = None
             ) -> tuple[pd.DataFrame, Engine]:
    """Simulate ``trace`` on one replica; deterministic for the same inputs.

    Args:
        progress: called with the number of requests done, now and then.
        max_decode_run: the engine's cap on decode steps per timeout (1: step by step).
        make_engine: ``make_engine(env, on_finish=...)`` builds what the requests go to
            instead of one :class:`Engine` on ``profile`` under ``policy`` (a fleet:
            :func:`dynasim.cluster.simulate_cluster`); requests reach it after
            ``profile``'s front-end latency.

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

    if make_engine is None:
        engine = Engine(env, profile, policy, on_finish=on_finish)  # type: ignore[arg-type]
        engine.lookahead = True  # on_finish only records; nothing else watches it
    else:
        engine = make_engine(env, on_finish=on_finish)
    engine.max_decode_run = max_decode_run
    start_arrivals(env, engine, requests_from_trace(trace), profile.frontend_latency_ms / 1000.0)
    env.run()
    if progress is not None:
        progress(len(done))
    if len(done) != len(trace):
        raise RuntimeError(f"simulation ended with {len(trace) - len(done)} requests "
                           "unfinished")
    return records_frame(done), engine


# ----------------------------------------------------------------- programs
def program_order(workload: Workload, num_programs: int | None,
                  seed: int) -> list[ProgramSpec]:
    """The programs of an online run: every question once in a seeded random order,
    repeated with fresh orders until ``num_programs`` (default: one pass). Each copy's
    sample draw order is shuffled by its own seeded RNG.

    A mixed workload (``workload.mix``, :mod:`dynasim.workloads.mix`) draws each
    program's workload with the mix's proportions (RNG seeded by ``seed``), then takes
    that workload's next program in its own order as above (default count: one pass
    over all the parts' programs)."""
    if workload.mix:
        return _mixed_order(workload, num_programs, seed)
    return _order(list(workload.programs), num_programs, seed)


def _mixed_order(workload: Workload, num_programs: int | None,
                 seed: int) -> list[ProgramSpec]:
    n = num_programs or len(workload.programs)
    names = [name for name, _ in workload.mix]
    rng = random.Random(f"{seed}:mix")
    picks = rng.choices(range(len(names)), weights=[w for _, w in workload.mix], k=n)
    streams = []
    for i, name in enumerate(names):
        specs = [s for s in workload.programs if s.workload == name]
        streams.append(iter(_order(specs, picks.count(i), seed)))
    return [next(streams[i]) for i in picks]


def _order(specs: list[ProgramSpec], num_programs: int | None,
           seed: int) -> list[ProgramSpec]:
    from dynasim.workloads.program import program_rng, shuffled

    n = num_programs if num_programs is not None else len(specs)
    if n and not specs:
        raise InputError("a workload with no programs", field="workload")
    out, rnd = [], 0
    while len(out) < n:
        order = specs[:]
        random.Random(f"{seed}:order:{rnd}").shuffle(order)
        for spec in order[:n - len(out)]:
            out.append(shuffled(spec, program_rng(seed, f"{spec.question_id}#{rnd}")))
        rnd += 1
    return out


def online_programs(workload: Workload, profile: Profile | None, rate: float, *,
                    burstiness: float = 1.0, seed: int = 0, num_programs: int | None = None,
                    slo_scale: float = 1.0, base: float | Mapping[str, float] | None = None,
                    cap: int = 20, base_multiple: float | None = None
                    ) -> tuple[list[ProgramSpec], np.ndarray, list[float],
                               float | dict[str, float]]:
    """The inputs of an online run: programs (:func:`program_order`), their arrival
    times (``rate`` programs/s, :func:`~dynasim.arrivals.arrival_times`) and deadlines
    (:func:`deadlines_for`, base from :func:`base_deadlines` at ``cap`` on ``profile``
    unless given, times ``base_multiple`` when given; ``profile`` may be ``None`` when
    ``base`` is given).

    Returns:
        (specs, arrival times in s, deadlines in s after arrival, base deadline in s:
        one float, or per workload for a mix).

    Raises:
        InputError: a rate or program count :func:`~dynasim.arrivals.arrival_times`
            rejects; ``base`` and ``base_multiple`` both given, or a ``base_multiple``
            that is not finite and > 0 (:func:`check_base_deadline`).
    """
    from dynasim.arrivals import arrival_times

    check_base_deadline(base, base_multiple)
    specs = program_order(workload, num_programs, seed)
    times = arrival_times(len(specs), rate, burstiness, seed)
    if base is None:
        base = base_deadlines(workload, profile, cap, base_multiple)
    return specs, times, deadlines_for(specs, slo_scale, base), base


def simulate_programs(specs: Sequence[ProgramSpec], arrival_times: Sequence[float] | np.ndarray,
                      profile: Profile, policy: Policy,
                      deadlines: Sequence[float] | np.ndarray | None = None,
                      progress: Callable[[int], None] | None = None,
                      max_decode_run: int | None = None,
                      make_engine: Callable[..., Engine] | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame, Engine]:
    """Simulate reasoning programs arriving at ``arrival_times`` (seconds, one per spec).

    Each program's waves are sent to the engine (after the profile's front-end latency)
    when the previous wave has finished; the policy's intra-program part decides the
    waves and its inter-program part orders the engine's queue. Under eager dispatch
    the calls a program cancels are aborted in the engine (:meth:`Engine.abort`, vLLM's
    ``abort_request``); their records have status ``aborted``. Deterministic.

    Args:
        specs: :class:`~dynasim.workloads.program.ProgramSpec` list (see :func:`program_order`).
        deadlines: per-program deadline in seconds after arrival (default: none).
        max_decode_run: the engine's cap on decode steps per timeout
            (:attr:`~dynasim.engine.Engine.max_decode_run`; 1 is the step-by-step
            reference the tests compare the default against).
        make_engine: ``make_engine(env, on_finish=..., on_progress=...)`` builds what
            the requests go to instead of one :class:`Engine` on ``profile`` (a fleet:
            :func:`dynasim.cluster.simulate_cluster_programs`); it must offer
            ``submit``, ``abort``, ``sync``, ``cache_generated`` and
            ``max_decode_run``.

    Returns:
        (requests, programs, engine): the request and program record tables
        (:mod:`dynasim.data_record`) and the engine.

    Raises:
        RuntimeError: a program left unfinished (a bug, never silent).
    """
    from dynasim.data_record import programs_frame
    from dynasim.workloads.program import Program

    env = simpy.Environment()
    done: list[Request] = []
    finished: list[Program] = []
    owner: dict[Request, tuple[Program, Call]] = {}
    outstanding: dict[int, int] = {}
    in_flight: dict[int, dict[Request, Call]] = defaultdict(dict)  # per program
    fe = profile.frontend_latency_ms / 1000.0
    ids = iter(range(1 << 62))

    def send(prog: Program, wave: list[Call]) -> Generator[simpy.Event, object, None]:
        if fe > 0:
            yield env.timeout(fe)
        for call in wave:
            req = Request(next(ids), env.now, call.prompt_tokens, call.output_tokens,
                          program_id=prog.program_id, prompt=call.prompt)
            req.priority = policy.priority(req)
            if prog.spec.trajectory is not None and call is prog.spec_main():
                req.output_key = f"cot-gen:{prog.spec.question_id}"
                req.watch = prog.watch(call, 0)
            owner[req] = (prog, call)
            in_flight[prog.program_id][req] = call
            engine.submit(req)

    def start_wave(prog: Program, wave: list[Call]) -> None:
        if not wave:
            policy.on_program_finish(prog, env.now)
            finished.append(prog)
            if progress is not None:
                progress(len(finished))
            return
        outstanding[prog.program_id] = len(wave)
        env.process(send(prog, wave))

    def on_finish(req: Request) -> None:
        done.append(req)
        prog, call = owner.pop(req)
        del in_flight[prog.program_id][req]
        if req.status == "finished":
            prog.on_call_done(call)
            cancel = prog.take_cancelled()
            if cancel:
                abort(prog, cancel)
        else:
            prog.on_call_rejected(call, req.error)
        outstanding[prog.program_id] -= 1
        if outstanding[prog.program_id] == 0:
            start_wave(prog, prog.on_wave_done(env.now))

    def abort(prog: Program, calls: list[Call]) -> None:
        """Eager dispatch stopped (or shrank) the program: abort the requests of
        ``calls`` (the engine frees them at its next step boundary)."""
        ids = {id(c) for c in calls}
        mine = in_flight[prog.program_id]
        for r in [r for r, c in mine.items() if id(c) in ids]:
            del owner[r]
            engine.sync(r)
            prog.on_call_aborted(mine.pop(r), r.num_generated)
            engine.abort(r)
            done.append(r)
            outstanding[prog.program_id] -= 1

    def on_progress(req: Request) -> None:
        """A CoT main request reached its watch: issue the probe due, set the next."""
        prog, call = owner[req]
        engine.cache_generated(req)  # the probe's prompt continues these blocks
        new = prog.on_call_progress(call, req.num_generated)
        req.watch = prog.watch(call, req.num_generated)
        if new:
            outstanding[prog.program_id] += len(new)
            env.process(send(prog, new))

    def arrive(prog: Program) -> Generator[simpy.Event, object, None]:
        delay = prog.arrival_time - env.now
        if delay > 0:
            yield env.timeout(delay)
        policy.on_program_arrival(prog, env.now)
        start_wave(prog, prog.start())

    if make_engine is None:
        engine = Engine(env, profile, policy, on_finish=on_finish, on_progress=on_progress)
    else:
        engine = make_engine(env, on_finish=on_finish, on_progress=on_progress)
    engine.max_decode_run = max_decode_run
    programs = []
    for i, (spec, t) in enumerate(zip(specs, arrival_times)):
        prog = Program(i, spec, policy.intra, float(t))
        if deadlines is not None:
            prog.deadline = float(deadlines[i])
        programs.append(prog)
        env.process(arrive(prog))
    env.run()
    if len(finished) != len(programs):
        raise RuntimeError(f"simulation ended with {len(programs) - len(finished)} "
                           "programs unfinished")
    return records_frame(done), programs_frame(finished), engine


def isolated_latencies(specs: Sequence[ProgramSpec], profile: Profile, policy: Policy) -> np.ndarray:
    """Latency (s) of each program run alone on the profile (arrivals far apart), in
    spec order; the basis of the automatic base deadline (:func:`base_deadline`)."""
    gap = 1e6
    _, progs, _ = simulate_programs(specs, [i * gap for i in range(len(specs))], profile,
                                    policy)
    return progs.sort_values("program_id")["latency"].to_numpy()


def base_deadline(specs: Sequence[ProgramSpec], profile: Profile, cap: int) -> float:
    """Automatic base deadline in seconds: the 90th percentile of the programs' isolated
    latencies under baseline-even at ``cap`` with FCFS (policy-independent, so every
    policy is judged against the same deadlines). The paper fixes base deadlines per
    workload for its A100 setup (SC/MATH 240 s, §4); dynasim derives one per workload
    and profile so that SLO scale 1 means "as fast as a lone program, 9 times in 10"."""
    from dynasim.policies import FCFS
    from dynasim.policies.intra_program import BaselineEven

    lat = isolated_latencies(specs, profile, FCFS(BaselineEven(cap)))
    return float(np.percentile(lat, 90))


def base_deadlines(workload: Workload, profile: Profile, cap: int,
                   base_multiple: float | None = None) -> float | dict[str, float]:
    """:func:`base_deadline` of the workload's programs times ``base_multiple``
    (default 1), in seconds; for a mix (:mod:`dynasim.workloads.mix`), one per part,
    each from that part's own programs (a mix judges every program against its own
    workload's isolated latency)."""
    k = base_multiple or 1.0
    if not workload.mix:
        return base_deadline(workload.programs, profile, cap) * k
    return {name: base_deadline([s for s in workload.programs if s.workload == name],
                                profile, cap) * k for name, _ in workload.mix}


def deadlines_for(specs: Sequence[ProgramSpec], slo_scale: float,
                  base: float | Mapping[str, float]) -> list[float]:
    """Per-program deadline = SLO scale × difficulty factor × base deadline (§4); with
    a base per workload (a mix), each program's own workload's base.

    Raises:
        InputError: a program whose workload has no base (field ``workload``).
    """
    if not isinstance(base, Mapping):
        return [slo_scale * s.difficulty * base for s in specs]
    missing = {s.workload for s in specs} - set(base)
    if missing:
        raise InputError(f"no base deadline for workload(s) {', '.join(sorted(missing))}",
                         field="workload")
    return [slo_scale * s.difficulty * base[s.workload] for s in specs]


# ------------------------------------------------------ the deadline protocol
def check_base_deadline(base: float | None, base_multiple: float | None) -> None:
    """Check the two ways of fixing the base deadline: an absolute ``base`` (s, the
    paper's way: SC/MATH 240 s on A100, Dynasor §4) or ``base_multiple`` x the isolated
    p90 (:func:`base_deadline`); at most one.

    Raises:
        InputError: both given (field ``base_deadline_multiple``), or a multiple that is
            not finite and > 0.
    """
    if base_multiple is None:
        return
    if base is not None:
        raise InputError("give either base_deadline (s) or base_deadline_multiple (x the "
                         "isolated p90), not both", field="base_deadline_multiple")
    if not 0 < base_multiple < float("inf"):
        raise InputError(f"base_deadline_multiple must be finite and > 0, got "
                         f"{base_multiple}", field="base_deadline_multiple")


def deadline_protocol(base: float | None = None, base_multiple: float | None = None,
                      warmup: int = 0, cooldown: int = 0) -> str:
    """The protocol a run's SLO attainment was measured under, in words: how the base
    deadline was fixed (``"absolute 240 s"``, ``"isolated-p90 x1"``, ``"isolated-p90 x8"``)
    and, with a warm-up or cool-down, the steady-state window
    (``"; steady state: skip first 50, last 50 arrivals"``)."""
    if base is not None:
        text = f"absolute {base:g} s"
    else:
        text = f"isolated-p90 x{base_multiple if base_multiple is not None else 1:g}"
    if warmup or cooldown:
        text += f"; steady state: skip first {warmup}, last {cooldown} arrivals"
    return text
