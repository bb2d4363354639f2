"""Engine.abort: vLLM's abort_request frees a request's seat and blocks at a step boundary."""

from __future__ import annotations

import math

import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynasim.engine import Engine
from dynasim.policies import FCFS, make_policy
from dynasim.request import ABORTED, FINISHED, Request
from dynasim.simulation import arrival_node
from tests.helpers import make_profile


def run_with_aborts(profile, reqs, aborts, max_decode_run=None, policy=None, check=None):
    """Run ``reqs``; ``aborts`` is [(time s, request index)]; returns (done, engine)."""
    env = simpy.Environment()
    done: list[Request] = []
    eng = Engine(env, profile, policy or FCFS(), on_finish=done.append)
    eng.max_decode_run = max_decode_run
    env.process(arrival_node(env, eng, sorted(reqs, key=lambda r: r.arrival_time)))

    def aborter(t, r):
        yield env.timeout(max(t, r.arrival_time + 1e-6))  # only requests the engine holds
        eng.abort(r)

    for t, i in aborts:
        env.process(aborter(t, reqs[i]))
    while env.peek() < math.inf:
        env.step()
        if check:
            check(eng)
    return done, eng


def test_abort_while_decoding_leaves_at_the_next_step_boundary():
    # R0 prefills [0, 20] ms then decodes in 5 ms steps; an abort at 52.5 ms lets the
    # step [50, 55] complete: R0 leaves at 55 ms with 1 + 7 tokens sampled.
    prof = make_profile("v1")
    r0 = Request(0, 0.0, 100, 100)
    done, eng = run_with_aborts(prof, [r0], [(0.0525, 0)])
    assert r0.status == ABORTED and done == []
    assert r0.finish_time == pytest.approx(0.055)
    assert r0.num_generated == 8
    assert eng.free_blocks == eng.total_blocks and not eng.running
    assert eng.num_aborted == 1


def test_abort_frees_the_seat_for_a_waiting_request():
    # one seat: R1 waits behind R0; R0 aborted at 52.5 ms leaves at 55 ms, R1 is admitted
    # in the next step (prefill 10 + 0.1*50 = 15 ms) and has its first token at 70 ms.
    prof = make_profile("v1", max_num_seqs=1)
    r0, r1 = Request(0, 0.0, 100, 100), Request(1, 0.001, 50, 2)
    done, _ = run_with_aborts(prof, [r0, r1], [(0.0525, 0)])
    assert r1.first_token_time == pytest.approx(0.070)
    assert r1.finish_time == pytest.approx(0.075)
    assert done == [r1] and r1.status == FINISHED


def test_abort_of_a_waiting_request_is_immediate():
    prof = make_profile("v1", max_num_seqs=1)
    r0, r1 = Request(0, 0.0, 100, 20), Request(1, 0.001, 50, 2)
    done, eng = run_with_aborts(prof, [r0, r1], [(0.030, 1)])
    assert r1.status == ABORTED and r1.finish_time == pytest.approx(0.030)
    assert r1.num_generated == 0 and math.isnan(r1.first_token_time)
    assert done == [r0] and len(eng.waiting) == 0


def test_abort_after_finish_is_ignored():
    prof = make_profile("v1")
    r0 = Request(0, 0.0, 100, 3)
    done, eng = run_with_aborts(prof, [r0], [(1.0, 0)])
    assert r0.status == FINISHED and done == [r0] and eng.num_aborted == 0


def test_abort_of_a_preempted_request_removes_it_from_the_queue():
    # 4 blocks: R1 is preempted at the 17th decode step (see test_engine) and waits;
    # aborting it then removes it from the waiting queue.
    prof = make_profile("v1", kv_capacity_tokens=64)
    r0, r1 = Request(0, 0.0, 16, 40), Request(1, 0.0, 16, 40)
    done, eng = run_with_aborts(prof, [r0, r1], [(0.12, 1)])
    assert r1.num_preemptions == 1 and r1.status == ABORTED
    assert done == [r0] and eng.free_blocks == eng.total_blocks


def test_aborted_blocks_stay_cached_for_a_later_prefix_hit():
    # with prefix caching, the full prompt blocks of an aborted request stay in the
    # cache (idle), so the next request with the same prompt hits them.
    prof = make_profile("v1").with_overrides(enable_prefix_caching=True)
    seg = (("shared", 64),)
    r0 = Request(0, 0.0, 64, 100, prompt=seg)
    r1 = Request(1, 0.2, 64, 2, prompt=seg)
    run_with_aborts(prof, [r0, r1], [(0.05, 0)])
    assert r0.status == ABORTED and r1.num_cached_tokens == 48


requests_st = st.lists(
    st.tuples(st.floats(0, 1.0), st.integers(1, 300), st.integers(1, 120)),
    min_size=1, max_size=20)
aborts_st = st.lists(st.tuples(st.floats(0, 1.5), st.integers(0, 19)), max_size=8)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=requests_st, aborts=aborts_st, mode=st.sampled_from(["v1", "v0"]),
       policy=st.sampled_from(["fcfs", "gang", "sjf", "lpm"]))
def test_aborts_in_decode_runs_equal_step_by_step(spec, aborts, mode, policy):
    """Aborts cut decode runs exactly: advancing many steps per timeout gives the same
    times and tokens as one step per timeout; blocks are all returned at the end."""
    prof = make_profile(mode, kv_capacity_tokens=1024, max_num_seqs=8,
                        max_num_batched_tokens=256 if mode == "v1" else 420,
                        max_model_len=420, sloped=True)

    def check(eng):
        held = 0
        for r in eng.running:
            eng.sync(r)
            held += r.num_blocks
        assert held == eng.used_blocks()

    def outcome(run_cap):
        reqs = [Request(i, t, p, o, program_id=i % 3) for i, (t, p, o) in
                enumerate(sorted(spec))]
        # 3 µs off the 10 µs grid of this profile's step times: an abort exactly on a
        # step boundary may land on either side of it (float rounding of the boundary)
        ab = [(t + 3e-6, i % len(reqs)) for t, i in aborts]
        _, eng = run_with_aborts(prof, reqs, ab, max_decode_run=run_cap,
                                 policy=make_policy(policy), check=check)
        assert eng.used_blocks() == 0
        return [(r.status, r.num_generated, r.first_token_time, r.finish_time)
                for r in reqs]

    fast, slow = outcome(None), outcome(1)
    for a, b in zip(fast, slow):
        assert a[:2] == b[:2]
        for x, y in zip(a[2:], b[2:]):
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-9)


def test_abort_during_the_last_step_still_ends_aborted():
    # R0 (P=100, O=3): prefill [0, 20], decode [20, 25], [25, 30] samples the last
    # token; an abort at 27 ms wins: the client closed its stream, no finish callback.
    prof = make_profile("v1")
    r0 = Request(0, 0.0, 100, 3)
    done, eng = run_with_aborts(prof, [r0], [(0.027, 0)])
    assert r0.status == ABORTED and done == [] and r0.finish_time == pytest.approx(0.030)
    assert r0.num_generated == 3 and eng.used_blocks() == 0


@pytest.mark.parametrize("max_decode_run", [None, 1])
def test_no_progress_callback_for_a_request_whose_abort_is_pending(max_decode_run):
    # R0 watches token 8, sampled by the step [50, 55] ms; its abort at 52.5 ms takes
    # effect at that same boundary: the client has gone, so on_progress must not see it
    # (a stopped chain of thought's program has already forgotten the request).
    prof = make_profile("v1")
    r0 = Request(0, 0.0, 100, 100)
    r0.watch = 8
    seen = []
    env = simpy.Environment()
    eng = Engine(env, prof, FCFS(), on_progress=lambda r: seen.append(r.num_generated))
    eng.max_decode_run = max_decode_run
    env.process(arrival_node(env, eng, [r0]))

    def aborter():
        yield env.timeout(0.0525)
        eng.abort(r0)
    env.process(aborter())
    env.run()
    assert r0.status == ABORTED and r0.num_generated == 8 and seen == []
    r1 = Request(1, 0.0, 100, 100)  # without the abort, the watch fires at token 8
    r1.watch = 8
    env = simpy.Environment()
    eng = Engine(env, prof, FCFS(), on_progress=lambda r: seen.append(r.num_generated))
    env.process(arrival_node(env, eng, [r1]))
    env.run()
    assert seen == [8]
