"""vLLM's ``--scheduling-policy priority`` (dynasim.policies.priority): heap order on
(priority, arrival), preempted requests re-queued by priority, and the victim with the
worst (priority, arrival) -- vLLM V1 ``PriorityRequestQueue`` and ``Scheduler.schedule``."""

from __future__ import annotations

import pytest

from dynasim.policies import FCFS, Priority, make_policy
from dynasim.request import Request
from tests.policies.test_schedulers import run, unit_profile


def req(i, arrival, priority, prompt=16, out=40):
    r = Request(i, arrival, prompt, out)
    r.priority = priority
    return r


def test_queue_orders_by_priority_then_arrival_and_requeues_by_priority():
    q = Priority().new_queue()
    a, b, c, d = req(0, 0.0, 1), req(1, 1.0, 0), req(2, 2.0, 0), req(3, 3.0, 2)
    for r in (a, b, c, d):
        q.push(r)
    assert len(q) == 4 and list(q) == [b, c, a, d]
    assert q.pop() == (b,) and q.pop() == (c,)
    q.prepend(c)  # preempted: back by priority (ahead of a, priority 1), not at the head
    q.prepend(b)
    assert [q.pop()[0] for _ in range(2)] == [b, c]
    q.remove(a)
    assert len(q) == 1 and q.peek() == (d,) and list(q) == [d]
    with pytest.raises(ValueError):
        q.remove(a)
    q.pop()
    with pytest.raises(IndexError):
        q.peek()


def test_victim_is_the_worst_priority_then_latest_arrival():
    pol = Priority()
    a, b, c = req(0, 0.0, 0), req(1, 1.0, 2), req(2, 2.0, 1)
    assert pol.victim([a, b, c]) is b      # worst priority, though c was admitted last
    b.priority = 1
    assert pol.victim([a, b, c]) is c      # equal priorities: the later arrival
    twin = req(3, 2.0, 1)
    assert pol.victim([a, c, twin]) is c   # equal keys: the first admitted (Python max)
    assert FCFS().victim([a, b, c]) is c   # FCFS: the last admitted, whatever priority


def test_make_policy_knows_priority_and_sends_the_request_s_own():
    pol = make_policy("priority")
    assert isinstance(pol, Priority) and pol.label == "priority"
    assert pol.priority(req(0, 0.0, 7)) == 7


def test_priority_preempts_the_low_priority_request_not_the_last_admitted():
    # 4 blocks of 16 tokens; a (priority 1) starts first, b (priority 0) joins at 5 ms;
    # each needs a third block at its 33rd token. FCFS preempts b (last admitted);
    # priority preempts a (worst priority).
    prof = unit_profile(max_num_seqs=2, kv=64)
    out = {}
    for pol in (Priority(), FCFS()):
        a, b = req(0, 0.0, 1), req(1, 0.005, 0)
        run(prof, pol, [a, b], at=[0.0, 0.005])
        out[pol.name] = (a.num_preemptions, b.num_preemptions)
    assert out["priority"][0] >= 1 and out["priority"][1] == 0
    assert out["fcfs"][0] == 0 and out["fcfs"][1] >= 1


def test_a_preempted_request_waits_behind_higher_priority_arrivals():
    # as above, plus c (priority 0, short) waiting for a seat when a is preempted:
    # re-queued by priority, a goes behind c, so c is admitted at once (one block free)
    # instead of waiting behind a's 3-block recompute at the head of the queue
    prof = unit_profile(max_num_seqs=2, kv=64)
    a, b, c = req(0, 0.0, 1), req(1, 0.005, 0), req(2, 0.010, 0, out=2)
    done, eng = run(prof, Priority(), [a, b, c], at=[0.0, 0.005, 0.010])
    assert a.num_preemptions >= 1 and len(done) == 3
    assert c.first_token_time < b.finish_time < a.finish_time


def test_a_trace_s_priority_column_reaches_the_requests_and_the_policy(write):
    import simpy

    from dynasim.engine import Engine
    from dynasim.errors import InputError
    from dynasim.simulation import requests_from_trace
    from dynasim.trace import read_trace

    # four requests at once on one seat: the two of priority 0 first (the line without a
    # priority counts as 0, vLLM's default), then the two of priority 5; ties by id
    lines = ['{"timestamp": 0, "input_length": 16, "output_length": 4, "priority": 5}',
             '{"timestamp": 1, "input_length": 16, "output_length": 4, "priority": 5}',
             '{"timestamp": 2, "input_length": 16, "output_length": 4, "priority": 0}',
             '{"timestamp": 3, "input_length": 16, "output_length": 4}']
    reqs = requests_from_trace(read_trace(str(write("p.jsonl", "\n".join(lines) + "\n"))))
    assert [r.priority for r in reqs] == [5, 5, 0, 0]
    env = simpy.Environment()
    done = []
    eng = Engine(env, unit_profile(max_num_seqs=1), Priority(), on_finish=done.append)
    for r in reqs:
        r.arrival_time = 0.0
        eng.submit(r)
    env.run()
    assert [r.request_id for r in done] == [2, 3, 0, 1]
    bad = write("b.jsonl", lines[0].replace("5}", '"high"}') + "\n")
    with pytest.raises(InputError) as exc:
        requests_from_trace(read_trace(str(bad)))
    assert exc.value.field == "priority" and "b.jsonl" in str(exc.value)
