"""Long chain of thought online: main request + probes, the stop aborts the main request,
probes hit the main request's cached blocks, the engine's watch is exact."""

from __future__ import annotations

import math

import pytest
import simpy

from dynasim.engine import Engine
from dynasim.errors import InputError
from dynasim.policies import FCFS, make_policy
from dynasim.request import Request
from dynasim.simulation import arrival_node, simulate_programs
from dynasim.workloads.catalog import cot_program_specs
from dynasim.workloads.cot import CotTrajectory, CotWorkload
from tests.helpers import make_profile


def traj(answers, length=640, final="7", target="7", pid="p", seed=0, hesitant=None):
    """A hand-made trajectory: prompt 96 tokens, a probe every 64 generated tokens with
    the given answers, probe prompts = prompt + position + 20 tokens of probe text,
    each probe decoding 8 tokens."""
    pos = tuple(64 * (i + 1) for i in range(len(answers)))
    return CotTrajectory("m", "math500", pid, seed, target, 96, length, True, "stop", final,
                         final == target, pos, tuple(answers),
                         tuple(hesitant or [False] * len(answers)),
                         tuple(96 + p + 20 for p in pos), tuple(8 for _ in pos))


def run(trajs, policy, times=None, max_decode_run=None):
    specs = cot_program_specs(CotWorkload("w", tuple(trajs), 64))
    prof = make_profile("v1", max_num_seqs=64).with_overrides(enable_prefix_caching=True)
    return simulate_programs(specs, times or [0.0] * len(specs), prof, policy,
                             max_decode_run=max_decode_run)


def test_dynasor_cot_stops_at_the_first_agreeing_window_and_aborts_the_main_request():
    # answers by probe: 3, 5, 5 -> with w = 2 the third probe (position 192) stops it
    t = traj(["3", "5", "5", "7", "7", "7", "7", "7", "7"])
    reqs, progs, eng = run([t], make_policy("fcfs+dynasor-cot", certainty_window=2))
    main = reqs.iloc[0]
    assert main["error"] == "aborted" and 192 <= main["output_tokens"] < 640
    probes = reqs.iloc[1:]
    assert len(probes) == 3 and (probes["error"] == "").all()
    p = progs.iloc[0]
    assert p["answer"] == "5" and not p["correct"] and p["aborted_calls"] == 1
    # each probe's prompt continues the main request's cached blocks: only the tail
    # (probe text and the partial block before it) is prefilled
    for row, pos in zip(probes.itertuples(), (64, 128, 192)):
        assert row.prompt_tokens == 96 + pos + 20
        assert row.cached_tokens >= 96 + pos - 16
    assert eng.used_blocks() == 0


def test_without_agreement_the_chain_runs_to_its_end_and_answers_its_final_answer():
    t = traj(["1", "2", "3", "4", "5", "6", "7", "8", "9"])
    reqs, progs, _ = run([t], make_policy("fcfs+dynasor-cot", certainty_window=2))
    assert reqs.iloc[0]["error"] == "" and reqs.iloc[0]["output_tokens"] == 640
    assert progs.iloc[0]["answer"] == "7" and progs.iloc[0]["correct"]
    # probes at 64..576 (< 640) were sent; any in flight at the end were aborted
    assert len(reqs) == 1 + 9


def test_hesitant_probes_never_complete_a_window():
    t = traj(["5", "5", "5", "5"], length=320, hesitant=[True, True, True, False])
    _, progs, _ = run([t], make_policy("fcfs+dynasor-cot", certainty_window=2))
    assert progs.iloc[0]["answer"] == "7"  # ran to the end: no two confident probes


def test_probe_interval_takes_every_other_probe():
    t = traj(["3", "5", "9", "5", "7", "7", "7", "7", "7"])
    reqs, progs, _ = run([t], make_policy("fcfs+dynasor-cot", certainty_window=2,
                                          probe_interval=128))
    # probes at 128 ("5") and 256 ("5") agree: stop at 256
    assert len(reqs) == 3 and progs.iloc[0]["answer"] == "5"
    assert reqs.iloc[0]["output_tokens"] >= 256


def test_budget_cuts_the_main_request_and_asks_one_probe():
    t = traj(["3", "5", "9", "6", "7", "7", "7", "7", "7"])
    reqs, progs, _ = run([t], make_policy("fcfs+budget", token_budget=300))
    assert reqs.iloc[0]["output_tokens"] == 300 and reqs.iloc[0]["error"] == ""
    assert len(reqs) == 2 and reqs.iloc[1]["prompt_tokens"] == 96 + 256 + 20
    assert progs.iloc[0]["answer"] == "6"
    with pytest.raises(InputError):
        make_policy("fcfs+budget")


def test_full_trajectory_without_a_cot_policy():
    t = traj(["5", "5", "5"], length=200)
    reqs, progs, _ = run([t], make_policy("fcfs"))
    assert len(reqs) == 1 and reqs.iloc[0]["output_tokens"] == 200
    assert progs.iloc[0]["answer"] == "7"


def test_cot_policies_refuse_sc_programs():
    from dynasim.workloads.call import Call
    from dynasim.workloads.program import ProgramSpec

    spec = ProgramSpec("q", "sc", (Call((("t", 8),), 10, "x", True),), 1)
    with pytest.raises(InputError):
        simulate_programs([spec], [0.0], make_profile("v1"),
                          make_policy("fcfs+dynasor-cot"))


def test_online_cot_decode_runs_equal_step_by_step():
    trajs = [traj([str(i % 3), "5", "5", "5", "7", "7", "7", "7", "7"], pid=f"p{i}",
                  length=400 + 40 * i) for i in range(8)]
    times = [0.03 * i for i in range(8)]
    pol = lambda: make_policy("sjf+dynasor-cot", certainty_window=3)  # noqa: E731
    a, pa, _ = run(trajs, pol(), times)
    b, pb, _ = run(trajs, pol(), times, max_decode_run=1)
    assert a["error"].tolist() == b["error"].tolist()
    assert a["output_tokens"].tolist() == b["output_tokens"].tolist()
    assert a["finish_time"].to_numpy() == pytest.approx(b["finish_time"].to_numpy(), rel=1e-9)
    assert pa["answer"].tolist() == pb["answer"].tolist()


def test_engine_watch_fires_at_the_exact_step():
    # prefill [0, 20] ms samples token 1; decode steps of 5 ms: token 10 at 65 ms
    seen = []
    env = simpy.Environment()

    def progress(req):
        seen.append((req.num_generated, env.now))
        req.watch = 30 if req.num_generated == 10 else 0

    eng = Engine(env, make_profile("v1"), FCFS(), on_progress=progress)
    r = Request(0, 0.0, 100, 100, watch=10)
    env.process(arrival_node(env, eng, [r]))
    env.run()
    assert [g for g, _ in seen] == [10, 30]
    assert seen[0][1] == pytest.approx(0.065) and seen[1][1] == pytest.approx(0.165)
    assert r.finish_time == pytest.approx(0.020 + 99 * 0.005)
    assert not math.isnan(r.first_token_time)
