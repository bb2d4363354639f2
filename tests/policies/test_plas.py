"""PLAS: program-level least attained service (Autellix §4.2), gang-admitted, aging."""

from __future__ import annotations

import math

import pytest
import simpy

from dynasim.engine import Engine
from dynasim.policies import INTER, make_policy
from dynasim.policies.plas import PLAS
from dynasim.request import Request
from dynasim.simulation import arrival_node, simulate_programs
from dynasim.workloads.call import Call
from dynasim.workloads.program import ProgramSpec
from tests.helpers import make_profile


class FakeProgram:
    def __init__(self, pid: int, arrival: float) -> None:
        self.program_id, self.arrival_time = pid, arrival


def finished(rid: int, pid: int, prompt: int, output: int, cached: int = 0) -> Request:
    r = Request(rid, 0.0, prompt, output, program_id=pid)
    r.status, r.num_cached_tokens = "finished", cached
    return r


def plas_with(*arrivals: float, aging_s: float = 30.0) -> PLAS:
    plas = PLAS(aging_s=aging_s)
    for pid, t in enumerate(arrivals):
        plas.on_program_arrival(FakeProgram(pid, t), t)
    return plas


def queue_of(plas: PLAS, reqs: list[Request], now: float):
    q = plas.new_queue()
    for r in reqs:
        plas.on_arrival(r, r.arrival_time)
        q.push(r)
    plas.on_step(now)
    q.refresh()
    return q


def test_attained_service_counts_prefill_less_cache_hits_and_output_of_finished_calls():
    plas = plas_with(0.0)
    plas.on_finish(finished(0, 0, prompt=100, output=50, cached=64), 1.0)
    assert plas.attained(0) == 36 + 50
    rejected = finished(1, 0, prompt=100, output=50)
    rejected.status = "rejected"
    plas.on_finish(rejected, 1.0)  # a rejected call received no service
    assert plas.attained(0) == 86


def test_least_attained_service_first_ties_by_arrival():
    plas = plas_with(0.0, 1.0, 2.0)
    plas.on_finish(finished(9, 0, prompt=10, output=500), 3.0)  # the oldest has served
    reqs = [Request(i, 3.0 + i, 1, 999, program_id=i) for i in range(3)]
    q = queue_of(plas, reqs, 5.0)
    # program 0 has 510 tokens of service; 1 and 2 none: arrival order between them
    assert [q.pop()[0].program_id for _ in range(3)] == [1, 2, 0]


def test_program_waves_are_admitted_together():
    plas = plas_with(0.0, 1.0)
    reqs = [Request(0, 1.0, 1, 1, program_id=0), Request(1, 1.0, 1, 1, program_id=1),
            Request(2, 1.5, 1, 1, program_id=0)]
    q = queue_of(plas, reqs, 2.0)
    assert [r.request_id for r in q.pop()] == [0, 2]


def test_a_program_waiting_aging_s_is_served_first_in_waiting_order():
    plas = plas_with(0.0, 20.0, 25.0, aging_s=30.0)
    plas.on_finish(finished(9, 0, prompt=1, output=1000), 1.0)   # long, served
    plas.on_finish(finished(8, 1, prompt=1, output=10), 21.0)    # short, served
    reqs = [Request(0, 1.0, 1, 1, program_id=0), Request(1, 21.0, 1, 1, program_id=1),
            Request(2, 25.0, 1, 1, program_id=2)]
    q = queue_of(plas, reqs, 30.9)
    assert q.peek()[0].program_id == 2 and plas.priority(reqs[0]) == 1002
    assert plas.order_changes_at(30.9) == 31.0  # program 0's wave reaches 30 s then
    plas.on_step(31.0)
    q.refresh()
    assert q.peek()[0].program_id == 0 and plas.priority(reqs[0]) == 0
    plas.on_step(51.0)  # program 1's wave starves too: it started waiting later
    q.refresh()
    assert [q.pop()[0].program_id for _ in range(3)] == [0, 1, 2]
    assert plas.order_changes_at(55.0) is None


def test_priority_is_attained_tokens_plus_one_lower_first():
    plas = plas_with(0.0, 0.0)
    plas.on_finish(finished(9, 1, prompt=30, output=70), 1.0)
    a, b = Request(0, 1.0, 1, 1, program_id=0), Request(1, 1.0, 1, 1, program_id=1)
    queue_of(plas, [a, b], 2.0)
    assert (plas.priority(a), plas.priority(b)) == (1, 101)


def test_victim_is_the_most_served_program():
    plas = plas_with(0.0, 1.0)
    plas.on_finish(finished(9, 0, prompt=1, output=100), 1.0)
    reqs = [Request(i, 0.0, 1, 1, program_id=i % 2) for i in range(4)]
    running = {r: None for r in reqs}
    assert plas.victim(running) is reqs[2]  # program 0 served more: its last admitted
    plas.on_finish(finished(8, 1, prompt=1, output=500), 2.0)
    assert plas.victim(running) is reqs[3]


def test_registry_name_and_aging():
    assert INTER["plas"] is PLAS
    pol = make_policy("plas+certaindex", aging_s=5.0)
    assert isinstance(pol, PLAS) and pol.label == "plas+certaindex" and pol.aging_s == 5.0
    assert make_policy("certaindex", inter="plas").label == "plas+certaindex"


def test_plas_beats_fcfs_on_mean_program_latency_for_short_and_long_programs():
    """Two long SC programs (waves of 2 x 300 tokens) then short ones (2 x 10 tokens)
    arriving while the long ones run: FCFS serves the long programs' second waves
    before the short ones queued behind them; PLAS sees the long programs' service
    and lets the short ones go first."""
    prof = make_profile(max_num_seqs=2)
    long_ = ProgramSpec("long", "sc", tuple(Call(((f"l{i}", 20),), 300, "x", True)
                                            for i in range(4)))
    short = ProgramSpec("short", "sc", tuple(Call(((f"s{i}", 20),), 10, "x", True)
                                             for i in range(4)))
    specs = [long_, long_, short, short, short, short]
    times = [0.0, 0.0, 0.5, 0.6, 0.7, 0.8]

    def mean_latency(name: str) -> float:
        pol = make_policy(name, cap=4, detect_at=2)
        _, progs, _ = simulate_programs(specs, times, prof, pol)
        return float((progs.finish_time - progs.arrival_time).mean())

    fcfs, plas = mean_latency("fcfs"), mean_latency("plas")
    assert plas < 0.8 * fcfs, (plas, fcfs)
    assert mean_latency("plas") == pytest.approx(plas, rel=1e-12)  # deterministic


def aging_case(max_decode_run: int | None) -> list[Request]:
    """A (1 call, 400 tokens) runs from 0 on 2 seats. C (1 call; 50 tokens of service
    already) arrives at 1.2 ms, B (2 calls, no service) at 2 ms: PLAS puts B first, but
    B needs 2 seats and only 1 is free. When C's call has waited aging_s = 0.5 s it
    outranks B and fits the free seat, at the step boundary after 0.5012 s (0.506 s:
    A's decode steps of 5 ms start at 11 ms); B waits for A."""
    plas = plas_with(0.0, 0.002, 0.0012, aging_s=0.5)
    plas.on_finish(finished(99, 2, prompt=1, output=50), 0.0)
    reqs = [Request(0, 0.0, 10, 400, program_id=0), Request(1, 0.0012, 10, 2, program_id=2),
            Request(2, 0.002, 10, 2, program_id=1), Request(3, 0.002, 10, 2, program_id=1)]
    env = simpy.Environment()
    eng = Engine(env, make_profile("v1", max_num_seqs=2), plas)
    eng.max_decode_run = max_decode_run
    env.process(arrival_node(env, eng, reqs))
    while env.peek() < math.inf:
        env.step()
    return reqs


def test_aging_cuts_a_decode_run_as_step_by_step_would():
    fast, slow = aging_case(None), aging_case(1)
    assert slow[1].first_token_time == pytest.approx(0.506 + 0.011)  # admitted once aged
    assert slow[2].first_token_time > 1.9  # B waited for A
    for a, b in zip(fast, slow):
        assert a.first_token_time == pytest.approx(b.first_token_time, rel=1e-9)
        assert a.finish_time == pytest.approx(b.finish_time, rel=1e-9)
