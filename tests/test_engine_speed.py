"""The simulator's speed paths (issue 19) give exactly the records of the plain ones:
arrivals by chained callbacks and decode runs that wait for a known arrival instead of
being interrupted (``simulate``) against a SimPy arrival process that interrupts them;
the vectorised ``requests_from_trace``; the engine's in-flight count; and
``Engine.used_blocks_now`` against a step-by-step engine."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import simpy

from dynasim.data_record import records_frame
from dynasim.engine import Engine
from dynasim.policies import make_policy
from dynasim.request import Request
from dynasim.simulation import arrival_node, requests_from_trace, simulate
from dynasim.trace import Trace
from tests.helpers import make_profile, make_trace


def plain_simulate(trace: Trace, profile, policy, max_decode_run=None) -> pd.DataFrame:
    """``simulate`` as it was: a SimPy arrival process whose arrivals interrupt runs."""
    env = simpy.Environment()
    done: list[Request] = []
    eng = Engine(env, profile, policy, on_finish=done.append)
    eng.max_decode_run = max_decode_run
    env.process(arrival_node(env, eng, requests_from_trace(trace),
                             profile.frontend_latency_ms / 1000.0))
    env.run()
    assert eng.next_arrival is None  # never told: every cut was an interrupt
    return records_frame(done)


def tied_trace(n: int, seed: int) -> Trace:
    """Arrivals on a coarse grid (many at the same instant, some on step boundaries of
    the 5 ms decode steps of ``make_profile``), a few too long for the profile."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"arrival_time": np.sort(rng.integers(0, 400, n)) * 0.005,
                          "prompt_tokens": rng.integers(1, 300, n),
                          "output_tokens": rng.integers(1, 120, n)})
    frame.index.name = "request_id"
    return Trace("tied", frame)


@pytest.mark.parametrize("scheduling", ["v0", "v1"])
@pytest.mark.parametrize("make", [lambda: make_trace(400, seed=3, rate=40.0),
                                  lambda: tied_trace(400, seed=4)])
def test_simulate_equals_an_interrupting_arrival_process(scheduling, make):
    tr = make()
    prof = make_profile(scheduling, kv_capacity_tokens=4096, max_num_seqs=32,
                        max_model_len=380, sloped=True)
    for fe in (0.0, 7.0):
        p = prof.with_overrides(frontend_latency_ms=fe)
        fast, _ = simulate(tr, p, make_policy("fcfs"))
        pd.testing.assert_frame_equal(fast, plain_simulate(tr, p, make_policy("fcfs")),
                                      check_exact=True)
    assert (fast["error"] != "").any() and (fast["num_preemptions"] > 0).any()


def test_simulate_equals_plain_under_sjf_aging_and_async():
    tr = tied_trace(300, seed=5)
    prof = make_profile("v1", kv_capacity_tokens=8192, max_num_seqs=16, sloped=True)
    for p, pol in ((prof, "sjf"), (prof.with_overrides(async_scheduling=True), "fcfs")):
        fast, _ = simulate(tr, p, make_policy(pol))
        pd.testing.assert_frame_equal(fast, plain_simulate(tr, p, make_policy(pol)),
                                      check_exact=True)


def test_simulate_equals_plain_with_client_timeouts():
    """Client timeouts abort requests mid-run: the aborts cut runs that wait for an
    arrival exactly as they interrupt them."""
    tr = make_trace(300, seed=6, rate=40.0)
    tr.frame["client_timeout_s"] = np.where(np.arange(300) % 3 == 0, 0.25, np.nan)
    prof = make_profile("v1", kv_capacity_tokens=4096, max_num_seqs=16, sloped=True)
    p = prof.with_overrides(client_timeouts=True)
    fast, eng = simulate(tr, p, make_policy("fcfs"))
    pd.testing.assert_frame_equal(fast, plain_simulate(tr, p, make_policy("fcfs")),
                                  check_exact=True)
    assert eng.num_aborted > 10


def test_requests_from_trace_sorts_and_reads_the_optional_columns():
    frame = pd.DataFrame({"arrival_time": [0.5, 0.1, 0.1, 0.3],
                          "prompt_tokens": np.array([10, 20, 30, 40], dtype=np.int32),
                          "output_tokens": [1, 2, 3, 4],
                          "hash_ids": [[1, 2], None, [3], [4]],
                          "client_timeout_s": [np.nan, 5.0, 0.0, 2.5]},
                         index=pd.Index([7, 9, 8, 6], name="request_id"))
    reqs = requests_from_trace(Trace("t", frame))
    assert [r.request_id for r in reqs] == [8, 9, 6, 7]  # by time, then id
    assert [r.prompt_tokens for r in reqs] == [30, 20, 40, 10]
    assert all(type(r.prompt_tokens) is int and type(r.arrival_time) is float for r in reqs)
    assert [r.hash_ids for r in reqs] == [(3,), None, (4,), (1, 2)]
    assert [r.timeout_s for r in reqs] == [math.inf, 5.0, 2.5, math.inf]
    plain = requests_from_trace(Trace("t", frame[["arrival_time", "prompt_tokens",
                                                  "output_tokens"]]))
    assert [(r.request_id, r.hash_ids, r.timeout_s) for r in plain] == \
        [(8, None, math.inf), (9, None, math.inf), (6, None, math.inf), (7, None, math.inf)]


def stepped(profile, trace, max_decode_run, probe_times):
    """Run ``trace`` and read ``used_blocks_now`` at ``probe_times`` (a probe process
    scheduled before the arrivals, so it sees each instant before the engine acts)."""
    env = simpy.Environment()
    done: list[Request] = []
    eng = Engine(env, profile, make_policy("fcfs"), on_finish=done.append)
    eng.max_decode_run = max_decode_run
    seen = []

    def probe():
        for t in probe_times:
            yield env.timeout(t - env.now)
            seen.append((eng.used_blocks_now(), eng.num_in_flight,
                         len(eng.waiting) + len(eng.running)))

    env.process(probe())
    env.process(arrival_node(env, eng, requests_from_trace(trace)))
    env.run()
    return seen


def test_used_blocks_now_equals_step_by_step_and_in_flight_counts():
    tr = make_trace(150, seed=2, rate=30.0)
    prof = make_profile("v1", kv_capacity_tokens=4096, sloped=True)
    times = np.sort(np.random.default_rng(0).uniform(0, 6, 400)) + 1e-7  # off boundaries
    fast = stepped(prof, tr, None, times)
    slow = stepped(prof, tr, 1, times)
    assert [s[0] for s in fast] == [s[0] for s in slow]
    assert len({s[0] for s in fast}) > 20  # the probes saw the cache fill and drain
    assert all(a == b for _, a, b in fast + slow)


def shared_prefix_trace(n: int, seed: int) -> Trace:
    """Poisson arrivals at a rate that often leaves the queue empty, prompts that share
    leading blocks (three templates), so that cache releases happen in decode runs."""
    rng = np.random.default_rng(seed)
    prompts = rng.integers(17, 300, n)
    frame = pd.DataFrame({"arrival_time": np.cumsum(rng.exponential(0.2, n)),
                          "prompt_tokens": prompts,
                          "output_tokens": rng.integers(1, 150, n)})
    frame["hash_ids"] = [[int(t), *range(1000 * i, 1000 * i + p // 16)]
                         for i, (t, p) in enumerate(zip(rng.integers(0, 3, n), prompts))]
    frame.index.name = "request_id"
    return Trace("shared", frame)


@pytest.mark.parametrize("scheduling", ["v0", "v1"])
def test_lookahead_past_finishes_equals_plain(scheduling):
    """simulate's engine takes runs and finishes ahead of time while its queue is empty
    and no arrival comes first (Engine.lookahead): the same records, bit for bit, as an
    engine that stops at every finish, with the prefix cache on (releases at the
    finish's instant) and under KV pressure."""
    tr = shared_prefix_trace(400, seed=8)
    prof = make_profile(scheduling, kv_capacity_tokens=3072, max_num_seqs=24,
                        max_model_len=420, sloped=True)
    for p in (prof, prof.with_overrides(enable_prefix_caching=True)):
        fast, eng = simulate(tr, p, make_policy("fcfs"))
        pd.testing.assert_frame_equal(fast, plain_simulate(tr, p, make_policy("fcfs")),
                                      check_exact=True)
        assert eng.num_finished_ahead > 30
        assert p.enable_prefix_caching or eng.num_preemptions > 50  # KV pressure


@pytest.mark.parametrize("router", ["least-outstanding", "least-kv", "prefix-affinity"])
def test_fleet_lookahead_equals_plain(router):
    """In a fleet the engines look ahead to the next arrival at the router (any
    replica's): routers that read in-flight counts, KV use or the prefix cache see the
    same fleet as without lookahead."""
    from dynasim.cluster import Cluster, simulate_cluster
    from dynasim.routers import make_router
    from dynasim.simulation import start_arrivals

    tr = shared_prefix_trace(400, seed=9)
    tr.frame["arrival_time"] /= 6
    prof = make_profile("v1", kv_capacity_tokens=4096, max_num_seqs=24,
                        sloped=True).with_overrides(enable_prefix_caching=True)
    fast, fleet = simulate_cluster(tr, [prof] * 3, lambda: make_policy("fcfs"),
                                   make_router(router))
    env = simpy.Environment()
    done: list[Request] = []
    plain = Cluster(env, [prof] * 3, lambda: make_policy("fcfs"), make_router(router),
                    on_finish=done.append)
    start_arrivals(env, plain, requests_from_trace(tr))
    env.run()
    pd.testing.assert_frame_equal(fast, records_frame(done), check_exact=True)
    assert sum(e.num_finished_ahead for e in fleet.engines) > 30
    assert sum(e.num_finished_ahead for e in plain.engines) == 0
