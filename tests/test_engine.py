"""Engine invariants (hypothesis), hand-computed scenarios, determinism."""

from __future__ import annotations

import math

import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynasim.engine import Engine, _steps_covering
from dynasim.policies import FCFS
from dynasim.profiles import Profile
from dynasim.request import FINISHED, Request
from dynasim.simulation import arrival_node, simulate
from tests.helpers import make_profile, make_trace


def run_requests(profile: Profile, reqs: list[Request], max_decode_run=None,
                 check=None):
    env = simpy.Environment()
    done: list[Request] = []
    eng = Engine(env, profile, FCFS(), on_finish=done.append)
    eng.max_decode_run = max_decode_run
    env.process(arrival_node(env, eng, sorted(reqs, key=lambda r: r.arrival_time)))
    last = 0.0
    while env.peek() < math.inf:
        env.step()
        assert env.now >= last, "time went backwards"
        last = env.now
        if check:
            check(eng)
    return done, eng


# --------------------------------------------------------------- hand-computed
def test_hand_computed_v0():
    # prefill 10 ms + 0.1 ms/token, decode 5 ms. R0 (P=100,O=3) at 0; R1 (P=50,O=2) at 12 ms.
    # v0: [0,20] prefill R0 -> R0 tok1; R1 arrived mid-step; [20,35] prefill R1 -> tok1;
    # [35,40] decode both -> R0 tok2, R1 tok2 (R1 done); [40,45] decode R0 -> done.
    prof = make_profile("v0")
    r0, r1 = Request(0, 0.0, 100, 3), Request(1, 0.012, 50, 2)
    run_requests(prof, [r0, r1])
    assert r0.first_token_time == pytest.approx(0.020)
    assert r0.finish_time == pytest.approx(0.045)
    assert r1.first_token_time - r1.arrival_time == pytest.approx(0.023)
    assert r1.finish_time - r1.arrival_time == pytest.approx(0.028)


def test_hand_computed_v1_chunked_mixed_step():
    # v1: [0,20] prefill R0; [20,35] mixed: R0 decode + R1 prefill (10 + 0.1*50, the
    # decode constant dropped); [35,40] both decode -> both finish at 40 ms.
    prof = make_profile("v1")
    r0, r1 = Request(0, 0.0, 100, 3), Request(1, 0.012, 50, 2)
    run_requests(prof, [r0, r1])
    assert r0.first_token_time == pytest.approx(0.020)
    assert r0.finish_time == pytest.approx(0.040)
    assert r1.first_token_time - r1.arrival_time == pytest.approx(0.023)
    assert r1.finish_time - r1.arrival_time == pytest.approx(0.028)


def test_chunked_prefill_respects_token_budget():
    # budget 64: a 150-token prompt takes chunks 64, 64, 22 -> three prefill steps of
    # 10 + 0.1*64, 10 + 0.1*64, 10 + 0.1*22 ms (the c term is 0), first token after them.
    prof = make_profile("v1", max_num_batched_tokens=64, max_num_seqs=8)
    r = Request(0, 0.0, 150, 2)
    run_requests(prof, [r])
    assert r.first_token_time == pytest.approx((16.4 + 16.4 + 12.2) / 1000)
    assert r.finish_time == pytest.approx((16.4 + 16.4 + 12.2 + 5) / 1000)


def test_arrival_interrupts_a_decode_run_at_the_next_step_boundary():
    # R0 decodes in 5 ms steps from 20 ms; R1 arrives at 102.5 ms, so it joins the step
    # starting at 105 ms (mixed: 10 + 0.1*50 = 15 ms) and gets its first token at 120 ms.
    prof = make_profile("v1")
    r0, r1 = Request(0, 0.0, 100, 100), Request(1, 0.1025, 50, 3)
    run_requests(prof, [r0, r1])
    assert r1.first_token_time == pytest.approx(0.120)
    # R0: 20 ms prefill, 99 decode steps of 5 ms, one of them 15 ms (the mixed step)
    assert r0.finish_time == pytest.approx(0.020 + 98 * 0.005 + 0.015)


def test_preemption_recompute_last_admitted_victim():
    # 4 blocks of 16 tokens. Both prompts (16) fit; after 16 decode steps both need a
    # third block and R1 (last admitted) is preempted, recomputed after R0 finishes.
    prof = make_profile("v1", kv_capacity_tokens=64)
    r0, r1 = Request(0, 0.0, 16, 40), Request(1, 0.0, 16, 40)
    done, eng = run_requests(prof, [r0, r1])
    assert (r0.num_preemptions, r1.num_preemptions) == (0, 1)
    assert r1.finish_time > r0.finish_time
    assert r0.num_generated == r1.num_generated == 40
    assert eng.free_blocks == eng.total_blocks


def test_rejects_requests_longer_than_max_model_len():
    prof = make_profile("v1", max_model_len=128)
    ok, bad = Request(0, 0.0, 100, 28), Request(1, 0.0, 100, 29)
    done, _ = run_requests(prof, [ok, bad])
    assert ok.status == FINISHED and bad.status == "rejected"
    assert "max_model_len" in bad.error and len(done) == 2


def test_steps_covering():
    # steps of 1, 2, 3, ... s: boundaries at 1, 3, 6, 10
    assert _steps_covering(1.0, 1.0, 0.0, 10) == 1
    assert _steps_covering(1.0, 1.0, 3.0, 10) == 2
    assert _steps_covering(1.0, 1.0, 3.01, 10) == 3
    assert _steps_covering(1.0, 1.0, 100.0, 4) == 4
    assert _steps_covering(0.5, 0.0, 1.2, 10) == 3


# ------------------------------------------------------------------ invariants
requests_st = st.lists(
    st.tuples(st.floats(0, 2.0), st.integers(1, 300), st.integers(1, 120)),
    min_size=1, max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=requests_st, mode=st.sampled_from(["v1", "v0"]),
       kv=st.sampled_from([512, 1024, 4096]), seqs=st.sampled_from([2, 8, 64]),
       budget=st.sampled_from([128, 512, 2048]))
def test_invariants_on_random_traces(spec, mode, kv, seqs, budget):
    if mode == "v0":  # vLLM v0 requires a whole prompt to fit the budget
        budget = max(budget, 420)
    prof = make_profile(mode, kv_capacity_tokens=kv, max_num_seqs=seqs,
                        max_num_batched_tokens=max(budget, seqs), max_model_len=420)

    def check(eng: Engine):
        assert 0 <= eng.free_blocks <= eng.total_blocks
        held = 0
        for r in eng.running:
            eng.sync(r)
            held += r.num_blocks
            assert r.num_computed <= r.prompt_tokens + r.num_generated
        assert held == eng.used_blocks()
        assert len(eng.running) <= eng.max_num_seqs

    reqs = [Request(i, t, p, o) for i, (t, p, o) in enumerate(sorted(spec))]
    done, eng = run_requests(prof, reqs, check=check)
    assert sorted(r.request_id for r in done) == list(range(len(reqs)))
    for r in done:
        if r.status == FINISHED:
            assert r.num_generated == r.output_tokens
            assert r.arrival_time <= r.first_token_time <= r.finish_time
        else:
            assert r.prompt_tokens + r.output_tokens > 420
    assert eng.free_blocks == eng.total_blocks


@settings(max_examples=30, deadline=None)
@given(spec=requests_st, mode=st.sampled_from(["v1", "v0"]))
def test_decode_runs_equal_step_by_step(spec, mode):
    """Advancing many decode steps per timeout gives the same times as one by one."""
    prof = make_profile(mode, kv_capacity_tokens=1024, max_num_seqs=8,
                        max_num_batched_tokens=256 if mode == "v1" else 420,
                        max_model_len=420, sloped=True)

    def times(run_cap):
        reqs = [Request(i, t, p, o) for i, (t, p, o) in enumerate(sorted(spec))]
        run_requests(prof, reqs, max_decode_run=run_cap)
        return [(r.first_token_time, r.finish_time, r.num_preemptions) for r in reqs]

    fast, slow = times(None), times(1)
    for a, b in zip(fast, slow):
        assert a[2] == b[2]
        for x, y in zip(a[:2], b[:2]):
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-9)


def test_same_input_same_result():
    tr = make_trace(200, seed=3)
    prof = make_profile("v1", kv_capacity_tokens=4096, max_num_seqs=16)
    a, _ = simulate(tr, prof, FCFS())
    b, _ = simulate(tr, prof, FCFS())
    assert a.equals(b)
    assert a["num_preemptions"].sum() > 0  # the scenario does exercise preemption


def test_v0_padding_pads_prompts_and_caps_the_padding():
    # vLLM 0.2.x: prompts in one prefill step are padded to the longest. R0 (P=100) and
    # R1 (P=50) both waiting at 0: one step costs 10 + 0.1 * 2 * 100 = 30 ms (not 25).
    prof = make_profile("v0").model_copy(update={"max_paddings": 256})
    r0, r1 = Request(0, 0.0, 100, 2), Request(1, 0.0, 50, 2)
    run_requests(prof, [r0, r1])
    assert r0.first_token_time == pytest.approx(0.030)
    assert r1.first_token_time == pytest.approx(0.030)
    # with max_paddings 40 the 50 padding tokens are refused: R1 waits for its own step
    # (10 + 0.1 * 100 = 20 ms, then 10 + 0.1 * 50 = 15 ms)
    prof = make_profile("v0").model_copy(update={"max_paddings": 40})
    r0, r1 = Request(0, 0.0, 100, 2), Request(1, 0.0, 50, 2)
    run_requests(prof, [r0, r1])
    assert r0.first_token_time == pytest.approx(0.020)
    assert r1.first_token_time == pytest.approx(0.035)
    # and the padded batch counts against the token budget: 2 x 100 > 150
    prof = make_profile("v0", max_num_batched_tokens=150, max_num_seqs=8).model_copy(
        update={"max_paddings": 256})
    r0, r1 = Request(0, 0.0, 100, 2), Request(1, 0.0, 50, 2)
    run_requests(prof, [r0, r1])
    assert r1.first_token_time == pytest.approx(0.035)
