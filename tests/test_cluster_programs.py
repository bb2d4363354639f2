"""Reasoning programs on a fleet: per-replica policies, routed calls, program affinity."""

from __future__ import annotations

import pytest

from dynasim.cluster import simulate_cluster_programs
from dynasim.policies import make_policy
from dynasim.routers import make_router
from dynasim.simulation import simulate_programs
from dynasim.workloads.call import Call
from dynasim.workloads.program import ProgramSpec, difficulty_of
from tests.helpers import make_profile


def sc(qid: str, answers: str, out: int) -> ProgramSpec:
    correct = [a == "x" for a in answers]
    calls = tuple(Call(((f"prompt:{qid}", 64),), out + i, a, c)
                  for i, (a, c) in enumerate(zip(answers, correct)))
    return ProgramSpec(qid, "sc", calls, difficulty_of(correct))


SPECS = [sc(f"q{i}", "xxxxxxxxxx" if i % 2 else "abcdexxxxx", 20 + 7 * i) for i in range(16)]
TIMES = [0.02 * i for i in range(16)]


def prof():
    return make_profile("v1", max_num_seqs=8).with_overrides(enable_prefix_caching=True)


@pytest.mark.parametrize("policy", ["fcfs", "sjf+certaindex", "gang+two-sided@eager"])
def test_one_replica_fleet_equals_simulate_programs(policy):
    kw = dict(cap=10, detect_at=5, low_threshold=0.2)
    a, pa, _ = simulate_programs(SPECS, TIMES, prof(), make_policy(policy, **kw))
    b, pb, cluster = simulate_cluster_programs(
        SPECS, TIMES, [prof()], lambda: make_policy(policy, **kw),
        make_router("least-outstanding"))
    assert a.equals(b) and pa.equals(pb) and len(cluster) == 1


def test_program_affinity_keeps_a_programs_calls_on_one_replica():
    reqs, progs, cluster = simulate_cluster_programs(
        SPECS, TIMES, [prof()] * 3, lambda: make_policy("sjf+certaindex", cap=10),
        make_router("program-affinity"))
    assert len(progs) == 16 and reqs["replica"].nunique() == 3
    assert (reqs.groupby("program_id")["replica"].nunique() == 1).all()
    rr, _, _ = simulate_cluster_programs(
        SPECS, TIMES, [prof()] * 3, lambda: make_policy("sjf+certaindex", cap=10),
        make_router("round-robin"))
    assert (rr.groupby("program_id")["replica"].nunique() > 1).any()
    # a program kept on one replica finds its shared prompt cached there
    assert cluster.prefix_cache_hit_rate > 0.5


def test_fleet_runs_are_deterministic():
    run = lambda: simulate_cluster_programs(  # noqa: E731
        SPECS, TIMES, [prof()] * 2, lambda: make_policy("gang"), make_router("least-kv"))
    a, pa, _ = run()
    b, pb, _ = run()
    assert a.equals(b) and pa.equals(pb)
