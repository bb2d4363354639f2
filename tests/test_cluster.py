"""The fleet: N engines behind a router in one SimPy environment (dynasim.cluster)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import simpy

from dynasim.cluster import Cluster, simulate_cluster
from dynasim.metrics import summarize
from dynasim.policies import make_policy
from dynasim.request import Request
from dynasim.routers import ROUTERS, make_router
from dynasim.simulation import simulate
from dynasim.trace import Trace
from tests.helpers import make_profile, make_trace


def fcfs():
    return make_policy("fcfs")


def shared_prefix_trace(n: int, groups: int = 4, rate: float = 20.0) -> Trace:
    """Requests of ``groups`` conversations, each sharing its first 512-token block."""
    rng = np.random.default_rng(1)
    g = np.arange(n) % groups
    frame = pd.DataFrame({
        "arrival_time": np.cumsum(rng.exponential(1 / rate, n)),
        "prompt_tokens": rng.integers(600, 1100, n),
        "output_tokens": rng.integers(1, 60, n),
        "hash_ids": [[int(k), 1000 + i] for i, k in enumerate(g)]})
    frame.index.name = "request_id"
    return Trace("prefix", frame)


@pytest.mark.parametrize("router", list(ROUTERS))
@pytest.mark.parametrize("scheduling", ["v1", "v0"])
def test_one_replica_equals_simulate(router, scheduling):
    prof = make_profile(scheduling, kv_capacity_tokens=8192, sloped=True)
    prof = prof.with_overrides(enable_prefix_caching=True)
    tr = shared_prefix_trace(300, rate=40.0)
    want, engine = simulate(tr, prof, fcfs())
    got, cluster = simulate_cluster(tr, [prof], fcfs, make_router(router))
    pd.testing.assert_frame_equal(got, want)
    assert cluster.num_steps == engine.num_steps
    assert cluster.num_preemptions == engine.num_preemptions > 0  # KV pressure exercised
    assert cluster.prefix_cache_hit_rate == engine.prefix_cache_hit_rate > 0


def test_round_robin_spreads_in_arrival_order_and_records_replica():
    tr = make_trace(40)
    records, cluster = simulate_cluster(tr, [make_profile()] * 4, fcfs,
                                        make_router("round-robin"))
    order = np.argsort(tr.frame["arrival_time"].to_numpy(), kind="stable")
    assert list(records["replica"].to_numpy()[order]) == [i % 4 for i in range(40)]
    s = summarize(records, num_replicas=4)
    assert s["num_replicas"] == 4 and s["replica_requests"] == [10] * 4
    assert s["replica_request_imbalance"] == 1.0
    assert sum(s["replica_tokens"]) == s["total_input_tokens"] + s["total_output_tokens"]
    assert len(cluster) == 4 and sum(e.num_steps for e in cluster.engines) == cluster.num_steps


def test_four_replicas_sustain_four_times_one_under_overload():
    """An arrival rate far above one replica's capacity: throughput scales with N."""
    tr = make_trace(800, rate=400.0)
    prof = make_profile(max_num_seqs=8)
    one = summarize(simulate_cluster(tr, [prof], fcfs, make_router("least-outstanding"))[0])
    four = summarize(simulate_cluster(tr, [prof] * 4, fcfs,
                                      make_router("least-outstanding"))[0], num_replicas=4)
    ratio = four["request_throughput"] / one["request_throughput"]
    assert 3.6 < ratio <= 4.1, ratio
    assert four["replica_request_imbalance"] < 1.05


def test_prefix_affinity_raises_the_prefix_hit_rate():
    prof = make_profile(kv_capacity_tokens=65536).with_overrides(enable_prefix_caching=True)
    tr = shared_prefix_trace(400, groups=37, rate=5.0)  # 37: round-robin scatters them
    rates = {}
    for name in ("round-robin", "prefix-affinity"):
        records, cluster = simulate_cluster(tr, [prof] * 4, fcfs, make_router(name))
        rates[name] = cluster.prefix_cache_hit_rate
        if name == "prefix-affinity":  # each conversation stays on one replica
            groups = records["request_id"] % 37
            assert records.groupby(groups)["replica"].nunique().max() == 1
    assert rates["prefix-affinity"] > rates["round-robin"] + 0.1, rates


@pytest.mark.parametrize("router", ["round-robin", "least-outstanding", "program-affinity"])
def test_decode_runs_equal_step_by_step_for_load_routers(router):
    """Routers that read only requests in flight see the same fleet whether the engines
    leap over decode runs or step one by one."""
    tr = make_trace(300, rate=60.0)
    prof = make_profile(kv_capacity_tokens=16384, sloped=True)
    fast, _ = simulate_cluster(tr, [prof] * 3, fcfs, make_router(router))
    slow, _ = simulate_cluster(tr, [prof] * 3, fcfs, make_router(router), max_decode_run=1)
    pd.testing.assert_frame_equal(fast, slow)


def test_decode_runs_equal_step_by_step_for_least_kv():
    """least-kv reads Engine.used_blocks_now, exact during a decode run in one timeout."""
    tr = make_trace(300, rate=60.0)
    prof = make_profile(kv_capacity_tokens=16384, sloped=True)
    fast, _ = simulate_cluster(tr, [prof] * 3, fcfs, make_router("least-kv"))
    slow, _ = simulate_cluster(tr, [prof] * 3, fcfs, make_router("least-kv"),
                               max_decode_run=1)
    pd.testing.assert_frame_equal(fast, slow)


def test_heterogeneous_front_end_latency_delays_the_slower_replica():
    fast = make_profile().with_overrides(frontend_latency_ms=0.0)
    slow = make_profile().with_overrides(frontend_latency_ms=50.0)
    tr = make_trace(2, rate=0.01)  # far apart: an idle fleet each time
    records, cluster = simulate_cluster(tr, [fast, slow], fcfs, make_router("round-robin"))
    assert cluster.frontend_latency == 0.0
    ttft = records.set_index("replica")["ttft"]
    # same work on an idle replica: the slow one's TTFT is 50 ms longer, length aside
    assert ttft[1] > 0.05
    solo, _ = simulate(Trace("x", tr.frame.iloc[1:]), slow, fcfs())
    assert ttft[1] == pytest.approx(solo["ttft"].iloc[0])


def test_abort_goes_to_the_requests_engine():
    env = simpy.Environment()
    cluster = Cluster(env, [make_profile()] * 2, fcfs, make_router("round-robin"))
    calls = []
    for i, e in enumerate(cluster.engines):
        e.abort = lambda r, i=i: calls.append((i, r.request_id))
    reqs = [Request(i, 0.0, 10, 5) for i in range(3)]
    for r in reqs:
        cluster.submit(r)
    cluster.abort(reqs[1])
    cluster.abort(reqs[2])
    assert calls == [(1, 1), (0, 2)]


def test_abort_in_the_front_end_waits_for_the_engine():
    """A request aborted while still in a slower replica's front-end is aborted by its
    engine the moment it arrives (Engine.abort of a request it never saw would fail)."""
    env = simpy.Environment()
    slow = make_profile().with_overrides(frontend_latency_ms=50.0)
    cluster = Cluster(env, [make_profile(), slow], fcfs, make_router("round-robin"))
    first, second = Request(0, 0.0, 10, 50), Request(1, 0.0, 10, 50)
    cluster.submit(first)
    cluster.submit(second)  # replica 1, in its front-end for 50 ms
    assert cluster.views[1].num_outstanding() == 1
    cluster.abort(second)
    env.run(until=1.0)
    assert first.status == "finished" and second.status == "aborted"
    assert second.finish_time == pytest.approx(0.05)
    assert cluster.views[1].num_outstanding() == 0


def test_bad_router_index_is_refused():
    class Bad:
        name = "bad"

        def route(self, req, views):
            return len(views)

    cluster = Cluster(simpy.Environment(), [make_profile()], fcfs, Bad())
    with pytest.raises(ValueError, match="replica 1 of 1"):
        cluster.submit(Request(0, 0.0, 10, 5))
