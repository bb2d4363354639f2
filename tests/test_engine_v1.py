"""V1 engine rules switchable per profile (issue 16, part 4): async scheduling,
full-prompt admission, client timeouts. Each test names its vLLM source."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynasim.decode_set import _max_piece
from dynasim.engine import Engine
from dynasim.policies import FCFS
from dynasim.profiles import Profile
from dynasim.request import ABORTED, FINISHED, Request
from dynasim.simulation import requests_from_trace, simulate
from dynasim.trace import Trace
from tests.helpers import make_profile
from tests.test_engine import run_requests


def with_(profile: Profile, **fields) -> Profile:
    """``profile`` with ``fields`` replaced, validated."""
    return Profile.model_validate({**profile.model_dump(), **fields})


def tokens_profile(step_ms=3.0, dense_floor_ms=2.0, seq_ms=0.5, decode_ms=0.001,
                   **limits) -> Profile:
    """A ``tokens`` profile whose GPU part grows with context past its CPU part."""
    return with_(make_profile("v1", **limits),
                 step_time={"form": "tokens", "step_ms": step_ms,
                            "dense_floor_ms": dense_floor_ms, "dense_ms_per_token": 0.01,
                            "prefill_attention_ms_per_pair": 1e-5,
                            "decode_attention_ms_per_token": decode_ms, "seq_ms": seq_ms})


# ------------------------------------------------------------- async scheduling
def test_split_sums_to_step_time_and_cpu_part_is_the_overheads():
    """StepTimeModel.split: the per-step and per-sequence overheads are the CPU part."""
    prof = tokens_profile()
    for shape in (([(100, 0)], 3, 500), ([], 8, 2000), ([(16, 32), (5, 0)], 0, 0)):
        gpu, cpu = prof.step_time.split(*shape)
        assert gpu + cpu == pytest.approx(prof.step_time.step_time(*shape))
        assert cpu == pytest.approx((3.0 + 0.5 * (shape[1] + len(shape[0]))) / 1000)
    ds = with_(make_profile("v1"), step_time={
        "form": "distserve", "prefill": (10.0, 0.1, 0.0), "decode_small_batch": (5, 0, 0),
        "decode_large_batch": (5, 0, 0), "step_overhead_ms": 2.0, "overhead_ms_per_seq": 1.0})
    gpu, cpu = ds.step_time.split([], 4, 100)
    assert (gpu, cpu) == pytest.approx((0.005, 0.006))


@pytest.mark.parametrize("floor_ms, step_s", [(2.0, 0.0035), (20.0, 0.020)])
def test_async_step_takes_max_of_gpu_and_cpu(floor_ms, step_s):
    """vLLM AsyncScheduler / EngineCore.step_with_batch_queue: step N+1 is scheduled and
    step N's output processed while the GPU runs, so a step takes max(GPU, CPU).
    One request, 1 token per step: GPU = floor (+ tiny terms), CPU = 3 + 0.5 ms."""
    prof = tokens_profile(dense_floor_ms=floor_ms)
    prof = with_(prof, step_time={**prof.step_time.model_dump(),
                                  "prefill_attention_ms_per_pair": 0.0,
                                  "decode_attention_ms_per_token": 0.0})
    sync = Request(0, 0.0, 16, 5)
    run_requests(prof, [sync])
    assert sync.finish_time == pytest.approx(5 * (floor_ms + 3.5) / 1000)
    fast = Request(0, 0.0, 16, 5)
    run_requests(with_(prof, async_scheduling=True), [fast])
    assert fast.finish_time == pytest.approx(5 * step_s)


def test_async_finished_request_keeps_its_seat_for_one_more_step():
    """vLLM AsyncScheduler: a request finishing in step N is freed by
    update_from_output(N), after step N+1 was scheduled: a waiting request cannot use
    its seat in step N+1. Hand-computed (prefill 10 + 0.1 ms/token, decode 5 ms, no
    CPU overheads so both modes have the same step times): A and C prefill together
    (13.2 ms), decode once (5 ms): A finishes at 18.2 ms. Sync: B prefills next
    (11.6 ms, C's decode rides along) -> 29.8 ms. Async: C decodes alone first (5 ms)."""
    prof = make_profile("v1", max_num_seqs=2)
    for flag, first in ((False, 0.0298), (True, 0.0348)):
        a, c = Request(0, 0.0, 16, 2), Request(1, 0.0, 16, 50)
        b = Request(2, 0.0001, 16, 1)
        run_requests(with_(prof, async_scheduling=flag), [a, c, b])
        assert a.finish_time == pytest.approx(0.0182)
        assert b.first_token_time == pytest.approx(first)


def test_max_piece_splits_at_the_crossing():
    """Steps take max(a + b i, c): a run stays on one side of the crossing."""
    assert _max_piece(1.0, 0.5, 2.0, 100) == (2.0, 0.0, 3)  # i = 0, 1, 2 are CPU-bound
    assert _max_piece(3.0, 0.5, 2.0, 100) == (3.0, 0.5, 100)
    assert _max_piece(3.0, -0.5, 2.0, 100) == (3.0, -0.5, 3)
    assert _max_piece(1.0, 0.0, 2.0, 7) == (2.0, 0.0, 7)


requests_st = st.lists(
    st.tuples(st.floats(0, 2.0), st.integers(1, 300), st.integers(1, 120)),
    min_size=1, max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=requests_st, kv=st.sampled_from([512, 1024, 4096]),
       full=st.booleans(), seqs=st.sampled_from([2, 8]))
def test_async_and_full_prompt_decode_runs_equal_step_by_step(spec, kv, full, seqs):
    """Decode runs (many steps per timeout) stay equal to one step at a time with
    async scheduling (a run stops where GPU time crosses CPU time) and full-prompt
    admission; blocks are conserved (finished requests' blocks held one step)."""
    prof = with_(tokens_profile(decode_ms=0.004, kv_capacity_tokens=kv, max_num_seqs=seqs,
                                max_num_batched_tokens=256, max_model_len=420),
                 async_scheduling=True, admit_full_prompt=full)

    def check(eng: Engine):
        held = 0
        for r in [*eng.running, *eng._lingering]:
            eng.sync(r)
            held += r.num_blocks
        assert held == eng.used_blocks()
        assert len(eng.running) + len(eng._lingering) <= eng.max_num_seqs

    def times(cap):
        reqs = [Request(i, t, p, o) for i, (t, p, o) in enumerate(sorted(spec))]
        done, eng = run_requests(prof, reqs, max_decode_run=cap, check=check)
        assert len(done) == len(reqs) and eng.free_blocks == eng.total_blocks
        return [(r.first_token_time, r.finish_time, r.num_preemptions) for r in reqs]

    for a, b in zip(times(None), times(1)):
        assert a[2] == b[2]
        for x, y in zip(a[:2], b[:2]):
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-9)


def test_v1_rules_refused_for_v0_profiles():
    with pytest.raises(ValueError, match="V1 scheduler"):
        with_(make_profile("v0", max_num_batched_tokens=4096), async_scheduling=True)


# -------------------------------------------------------- full-prompt admission
def test_full_prompt_admission_stops_a_long_prompt_preempting_itself():
    """Newer vLLM V1 admits a waiting request only if KVCacheManager.allocate_slots
    can hold its whole prompt (full-sequence reservation); checking only the first
    chunk (older V1, dynasim's default) admits B, whose second chunk then finds no
    blocks and preempts B itself (the last admitted, ``self.running.pop()``).
    10 blocks of 16; A (16 + 64 tokens) holds 3 blocks when B (120-token prompt,
    8 blocks) arrives, chunks of 64 tokens."""
    prof = make_profile("v1", kv_capacity_tokens=160, max_num_batched_tokens=64,
                        max_num_seqs=8)
    for full in (False, True):
        a, b = Request(0, 0.0, 16, 64), Request(1, 0.105, 120, 1)
        done, eng = run_requests(with_(prof, admit_full_prompt=full), [a, b])
        assert a.status == b.status == FINISHED
        if full:
            assert b.num_preemptions == 0 and b.first_token_time > a.finish_time
        else:
            assert b.num_preemptions >= 1


# ------------------------------------------------------------ client timeouts
def test_client_timeout_aborts_a_running_request_and_frees_its_seat():
    """inference-perf's request timeout: the client closes the stream and the server
    aborts the request (EngineCore.abort_requests -> Scheduler.finish_requests,
    FINISHED_ABORTED) at the next step boundary: 11.6 ms prefill then 5 ms decodes,
    the first boundary at or after 0.1 s is 101.6 ms; B prefills next (11.6 ms)."""
    prof = make_profile("v1", max_num_seqs=1)
    a = Request(0, 0.0, 16, 1000, timeout_s=0.1)
    b = Request(1, 0.001, 16, 2)
    c = Request(2, 0.002, 16, 2, timeout_s=0.05)  # still waiting at 52 ms
    done, eng = run_requests(with_(prof, client_timeouts=True), [a, b, c])
    assert {r.request_id for r in done} == {0, 1, 2}  # on_finish called for timeouts
    assert a.status == ABORTED and a.error == "client timeout (0.1 s)"
    assert a.finish_time == pytest.approx(0.1016) and a.num_generated == 19
    assert c.status == ABORTED and c.finish_time == pytest.approx(0.052)
    assert b.status == FINISHED and b.first_token_time == pytest.approx(0.1132)
    assert eng.free_blocks == eng.total_blocks
    a2 = Request(0, 0.0, 16, 1000, timeout_s=0.1)
    run_requests(prof, [a2])  # switch off (default): the timeout is ignored
    assert a2.status == FINISHED


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=requests_st, limits=st.lists(st.floats(0.01, 1.0), min_size=25, max_size=25),
       is_async=st.booleans())
def test_client_timeouts_in_decode_runs_equal_step_by_step(spec, limits, is_async):
    prof = with_(make_profile("v1", kv_capacity_tokens=1024, max_num_seqs=8,
                              max_num_batched_tokens=256, max_model_len=420, sloped=True),
                 client_timeouts=True, async_scheduling=is_async)

    def times(cap):
        reqs = [Request(i, t, p, o, timeout_s=limits[i])
                for i, (t, p, o) in enumerate(sorted(spec))]
        done, _ = run_requests(prof, reqs, max_decode_run=cap)
        assert len(done) == len(reqs)
        return [(r.status, r.first_token_time, r.finish_time) for r in reqs]

    for a, b in zip(times(None), times(1)):
        assert a[0] == b[0]
        for x, y in zip(a[1:], b[1:]):
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-9)


def test_trace_client_timeout_reaches_the_requests_and_simulate():
    """A recorded run's ``client_timeout_s`` (dynasim.runs.common.make_trace) becomes
    Request.timeout_s (NaN: none); simulate then records the timed-out request."""
    frame = pd.DataFrame({"arrival_time": [0.0, 0.0], "prompt_tokens": [16, 16],
                          "output_tokens": [1000, 2], "client_timeout_s": [0.1, math.nan]})
    frame.index.name = "request_id"
    reqs = requests_from_trace(Trace("t", frame))
    assert [r.timeout_s for r in reqs] == [0.1, math.inf]
    prof = with_(make_profile("v1"), client_timeouts=True)
    records, eng = simulate(Trace("t", frame), prof, FCFS())
    assert list(records["error"]) == ["client timeout (0.1 s)", ""]
    assert eng.num_aborted == 1


def test_switches_are_written_only_when_on():
    """Profiles written before the switches existed stay what their builders write."""
    prof = make_profile("v1")
    assert not {"async_scheduling", "admit_full_prompt", "client_timeouts"} & set(
        prof.model_dump())
    on = with_(prof, client_timeouts=True)
    assert on.model_dump()["client_timeouts"] is True
    assert Profile.model_validate_json(on.model_dump_json()) == on


# ------------------------------------------------- a preempted request's own blocks
def preempted_readmission(cache: bool) -> list[tuple[int, list[tuple[int, int]]]]:
    """Two 400 + 400-token requests without shared content on a 64-block cache: the
    second is preempted as the first grows, then readmitted when it finishes. Returns
    each step's prefill shape ``(new tokens, computed before)`` by request id."""
    prof = with_(make_profile("v1", kv_capacity_tokens=64 * 16, max_num_batched_tokens=2048),
                 enable_prefix_caching=cache)
    env = simpy.Environment()
    eng = Engine(env, prof, FCFS())
    steps: list[tuple[int, list[tuple[int, int]]]] = []
    plain = eng._step_time

    def spy(prefill, n_dec, ctx):
        ids = [r.request_id for r in eng.prefilling]
        steps.extend((i, [p]) for i, p in zip(ids, prefill))
        return plain(prefill, n_dec, ctx)

    eng._step_time = spy
    a, b = Request(0, 0.0, 400, 400), Request(1, 0.0, 400, 400)
    eng.submit(a)
    eng.submit(b)
    env.run()
    assert a.status == b.status == FINISHED and b.num_preemptions == 1
    return steps


def test_preempted_request_re_hits_its_own_cached_blocks():
    """vLLM V1 hashes every full block of every request, generated tokens included
    (``Request.block_hashes``, ``BlockPool.cache_full_blocks``), and a preempted
    request's blocks go back to the free queue still cached (``Scheduler.
    _preempt_request`` -> ``KVCacheManager.free``): readmitted, it hits the ones not
    evicted meanwhile (``get_computed_blocks``), its tail evicted first. By hand: a
    grows to 800 tokens = 50 blocks, evicting b's idle blocks tail first, so b's
    leading 64 - 50 = 14 blocks survive and b recomputes only the rest."""
    off = [s for i, s in preempted_readmission(False) if i == 1]
    on = [s for i, s in preempted_readmission(True) if i == 1]
    (first_off, again_off), (first_on, again_on) = off, on
    assert first_on == first_off == [(400, 0)]
    known = again_off[0][0]  # prompt + generated before the preemption
    assert again_off == [(known, 0)]
    assert again_on == [(known - 14 * 16, 14 * 16)]
