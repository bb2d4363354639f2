"""Eager dispatch: every sample at once, the unneeded ones aborted after the detect step."""

from __future__ import annotations

import pytest

from dynasim.errors import InputError
from dynasim.policies import make_intra, make_policy
from dynasim.simulation import simulate_programs
from dynasim.workloads.call import Call
from dynasim.workloads.program import Program, ProgramSpec, difficulty_of
from tests.helpers import make_profile


def sc(answers: list[str], out: int | list[int] = 10, qid: str = "q") -> ProgramSpec:
    """A hand-made self-consistency program; "x" is the correct answer."""
    outs = out if isinstance(out, list) else [out] * len(answers)
    correct = [a == "x" for a in answers]
    calls = tuple(Call((("t", 8),), o, a, c) for a, o, c in zip(answers, outs, correct))
    return ProgramSpec(qid, "sc", calls, difficulty_of(correct))


def eager(name: str = "certaindex", **kw):
    return make_intra(name, cap=10, detect_at=5, dispatch="eager", **kw)


def test_eager_issues_the_cap_and_cancels_the_rest_of_a_certain_program():
    prog = Program(0, sc(["x"] * 10), eager())
    wave = prog.start()
    assert len(wave) == 10 and prog.knob == 10 and prog.knob_allowed() == 10
    for i in (3, 1, 4, 0):
        prog.on_call_done(wave[i])
        assert prog.take_cancelled() == []
    prog.on_call_done(wave[7])  # the fifth to finish: the detect step
    cancelled = prog.take_cancelled()
    assert [next(i for i, w in enumerate(wave) if w is c) for c in cancelled] == [2, 5, 6, 8, 9]
    assert prog.take_cancelled() == []  # handed out once
    assert prog.knob == 5 and prog.knob_allowed() == 5
    for c in cancelled:
        prog.on_call_aborted(c)
    assert prog.on_wave_done(1.0) == [] and prog.finish_time == 1.0
    assert prog.samples_used == 5 and prog.result() == ("x", True)
    assert len(prog.aborted) == 5


def test_eager_keeps_every_sample_of_an_uncertain_program():
    prog = Program(0, sc(["a", "b", "c", "d", "e", "x", "x", "x", "x", "x"]), eager())
    wave = prog.start()
    for c in wave[:5]:
        prog.on_call_done(c)
    assert prog.take_cancelled() == [] and prog.knob == 10
    for c in wave[5:]:
        prog.on_call_done(c)
    assert prog.on_wave_done(1.0) == [] and prog.samples_used == 10


def test_eager_refused_for_one_wave_at_a_time_policies_and_unknown_dispatch():
    for name in ("esc", "adaptive-consistency"):
        with pytest.raises(InputError) as exc:
            make_intra(name, dispatch="eager")
        assert exc.value.field == "dispatch"
    with pytest.raises(InputError) as exc:
        make_policy("sjf+certaindex", dispatch="lazy")
    assert exc.value.field == "dispatch"


def run(specs, dispatch, times=None):
    policy = make_policy("sjf+certaindex", cap=10, detect_at=5, dispatch=dispatch)
    prof = make_profile("v1", kv_capacity_tokens=8192, max_num_seqs=64)
    return simulate_programs(specs, times or [0.0] * len(specs), prof, policy)


def test_simulated_eager_aborts_requests_and_frees_the_engine():
    # certain program: the 5 samples finishing first (the short ones) agree, the 5
    # long ones are aborted mid-decode and hold no block at the end
    spec = sc(["x"] * 10, out=[20, 20, 20, 20, 20, 300, 300, 300, 300, 300])
    reqs, progs, eng = run([spec], "eager")
    aborted = reqs[reqs["error"] == "aborted"]
    assert len(aborted) == 5 and eng.num_aborted == 5 and eng.used_blocks() == 0
    assert (aborted["output_tokens"] > 0).all() and (aborted["output_tokens"] < 300).all()
    assert progs["aborted_calls"].tolist() == [5] and progs["samples_used"].tolist() == [5]
    # the aborted samples leave right after the fifth finished (next step boundary)
    fifth = reqs[reqs["error"] == ""]["finish_time"].max()
    assert aborted["finish_time"].max() == pytest.approx(fifth, abs=0.02)


def test_simulated_eager_removes_the_second_wave_of_an_uncertain_program():
    spec = sc(["a", "b", "c", "d", "e", "x", "x", "x", "x", "x"], out=50)
    _, waves, _ = run([spec], "waves")
    _, eager_, _ = run([spec], "eager")
    assert waves["samples_used"].tolist() == eager_["samples_used"].tolist() == [10]
    # two serial waves of 50 tokens against one wave of 10 concurrent samples
    assert eager_["latency"].iloc[0] < 0.7 * waves["latency"].iloc[0]
    assert eager_["answer"].tolist() == waves["answer"].tolist() == ["x"]


def test_simulated_eager_is_deterministic():
    specs = [sc(["x"] * 10, out=list(range(10, 110, 10)), qid=f"q{i}") for i in range(6)]
    times = [0.05 * i for i in range(6)]
    a, pa, _ = run(specs, "eager", times)
    b, pb, _ = run(specs, "eager", times)
    assert a.equals(b) and pa.equals(pb)


def test_offline_batch_under_eager_counts_only_the_samples_kept():
    from dynasim.experiments.batch import run_program_offline

    spec = sc(["x"] * 10)
    waves = run_program_offline(spec, make_intra("certaindex", cap=10, detect_at=5))
    eager_ = run_program_offline(spec, eager())
    assert eager_.samples_used == waves.samples_used == 5
    assert eager_.output_tokens_done == waves.output_tokens_done == 50


def test_dispatch_in_the_policy_name():
    p = make_policy("sjf+two-sided@eager", cap=10, detect_at=5)
    assert p.intra.dispatch == "eager" and p.label == "sjf+two-sided@eager"
    assert make_policy("sjf+two-sided@eager", dispatch="eager").intra.dispatch == "eager"
    assert make_policy("lpm+certaindex").label == "lpm+certaindex"
    with pytest.raises(InputError) as exc:
        make_policy("sjf+certaindex@soon")
    assert exc.value.field == "dispatch"
    with pytest.raises(InputError):
        make_policy("sjf+certaindex@waves", dispatch="eager")


def test_eager_refuses_tree_search():
    from dynasim.workloads.tot import TreeSpec  # noqa: F401  (a ToT spec needs no tree here)

    spec = ProgramSpec("t", "tot", (), 2, tree=object())
    with pytest.raises(InputError) as exc:
        Program(0, spec, eager()).start()
    assert exc.value.field == "dispatch"
