"""Early-stopping self-consistency baselines: ESC and Adaptive-Consistency."""

from __future__ import annotations

from math import comb

import pytest

from dynasim.errors import InputError
from dynasim.experiments.batch import run_batch, run_program_offline
from dynasim.policies import INTRA, make_intra, make_policy
from dynasim.workloads.call import Call
from dynasim.workloads.program import Program, ProgramSpec, difficulty_of


def sc(answers: list[str | None], out: int = 10) -> ProgramSpec:
    """A hand-made self-consistency program; "x" is the correct answer."""
    correct = [a == "x" for a in answers]
    calls = tuple(Call((("t", 8),), out, a, c) for a, c in zip(answers, correct))
    return ProgramSpec("q", "sc", calls, difficulty_of(correct))


def waves(spec: ProgramSpec, intra) -> list[int]:
    """Sizes of the waves a program issues when every call finishes at once."""
    prog, sizes = Program(0, spec, intra), []
    wave = prog.start()
    while wave:
        sizes.append(len(wave))
        for call in wave:
            prog.on_call_done(call)
        wave = prog.on_wave_done(0.0)
    return sizes


# ------------------------------------------------------------------------------ ESC
def test_esc_stops_after_the_first_unanimous_window():
    esc = make_intra("esc", cap=20, detect_at=4)
    p = run_program_offline(sc(["x"] * 4 + ["y"] * 16), esc)
    assert p.knob == 4 and p.samples_used == 4 and p.result() == ("x", True)


def test_esc_samples_the_next_window_until_one_is_unanimous():
    # window 1 disagrees, window 2 disagrees, window 3 is unanimous -> 12 samples
    spec = sc(["x", "y", "x", "x", "y", "y", "y", "x"] + ["y"] * 4 + ["x"] * 8)
    esc = make_intra("esc", cap=20, detect_at=4)
    assert waves(spec, esc) == [4, 4, 4]
    p = run_program_offline(spec, esc)
    assert p.knob == 12 and p.result() == ("y", False)  # 7 y against 5 x


def test_esc_respects_the_cap_and_a_partial_last_window():
    spec = sc(["x", "y"] * 10)  # never unanimous
    assert waves(spec, make_intra("esc", cap=10, detect_at=4)) == [4, 4, 2]
    assert run_program_offline(spec, make_intra("esc", cap=10, detect_at=4)).knob == 10


def test_esc_missing_answers_never_make_a_window_unanimous():
    spec = sc([None] * 4 + ["x"] * 4 + ["y"] * 4)
    assert run_program_offline(spec, make_intra("esc", cap=12, detect_at=4)).knob == 8


def test_esc_uses_the_program_equivalence():
    calls = tuple(Call((("t", 8),), 10, a, True) for a in ["1/2", "0.5", "2/4"] + ["9"] * 3)
    from dynasim.certaindex import math_equal
    spec = ProgramSpec("q", "sc", calls, 1, equivalent=math_equal)
    assert run_program_offline(spec, make_intra("esc", cap=6, detect_at=3)).knob == 3


# ------------------------------------------------------------- Adaptive-Consistency
def posterior(a: int, b: int) -> float:
    """Hand computation: P(p > 1/2) for p ~ Beta(a+1, b+1), by the beta-binomial
    identity P(Beta(a+1, b+1) > 1/2) = P(Binomial(a+b+1, 1/2) <= a)."""
    n = a + b + 1
    return sum(comb(n, k) for k in range(a + 1)) / 2 ** n


def test_adaptive_consistency_stopping_rule_matches_the_beta_posterior():
    from scipy.stats import beta

    from dynasim.policies.intra_program import majority_posterior
    for a, b in [(1, 0), (2, 0), (3, 0), (4, 0), (5, 1), (6, 2), (7, 3), (10, 9)]:
        assert majority_posterior(a, b) == pytest.approx(posterior(a, b), abs=1e-12)
        assert majority_posterior(a, b) == pytest.approx(beta.sf(0.5, a + 1, b + 1))


def test_adaptive_consistency_stops_exactly_when_the_posterior_crosses_c():
    # unanimous x: P = 1 - 2^-(a+1) -> 0.75, 0.875, 0.9375, 0.96875 at a = 1..4
    assert posterior(3, 0) < 0.95 <= posterior(4, 0)
    p = run_program_offline(sc(["x"] * 20), make_intra("adaptive-consistency", cap=20))
    assert p.knob == 4
    # x y x x x x ...: (a, b) = (5, 1) -> 0.9375; (6, 1) -> 0.965 stops at 7 samples
    assert posterior(5, 1) < 0.95 <= posterior(6, 1)
    spec = sc(["x", "y"] + ["x"] * 18)
    assert run_program_offline(spec, make_intra("adaptive-consistency", cap=20)).knob == 7
    # a third answer does not count against the majority: only the two leading clusters
    spec = sc(["x", "y", "z"] + ["x"] * 17)
    assert run_program_offline(spec, make_intra("adaptive-consistency", cap=20)).knob == 8


def test_adaptive_consistency_samples_one_at_a_time_never_stopping_before_two():
    spec = sc(["x", "y"] * 3 + ["x"] * 14)
    sizes = waves(spec, make_intra("adaptive-consistency", cap=20))
    assert sizes[0] == 2 and set(sizes[1:]) == {1}
    # with a lax confidence a single sample would do (0.75 >= 0.6), but it needs two
    p = run_program_offline(sc(["x"] * 5), make_intra("adaptive-consistency", cap=5,
                                                        confidence=0.6))
    assert p.knob == 2


def test_adaptive_consistency_respects_the_cap():
    spec = sc(["x", "y"] * 10)
    p = run_program_offline(spec, make_intra("adaptive-consistency", cap=9))
    assert p.knob == 9 and p.samples_used == 9


def test_adaptive_consistency_refuses_a_confidence_outside_0_1():
    with pytest.raises(InputError) as e:
        make_intra("adaptive-consistency", confidence=1.5)
    assert e.value.field == "confidence"


# ---------------------------------------------------------------- both baselines
def test_registry_names():
    assert "esc" in INTRA and "adaptive-consistency" in INTRA
    pol = make_policy("sjf+esc", cap=10, detect_at=3)
    assert type(pol).__name__ == "SJF" and pol.intra.name == "esc"
    assert make_policy("adaptive-consistency").intra.name == "adaptive-consistency"
    assert type(make_policy("esc")).__name__ == "FCFS"


def test_sjf_sees_the_cap_until_a_sequential_policy_stops():
    spec = sc(["x", "y"] * 10)
    prog = Program(0, spec, make_intra("esc", cap=12, detect_at=4))
    wave = prog.start()
    for _ in range(2):
        for call in wave:
            prog.on_call_done(call)
        wave = prog.on_wave_done(0.0)
        assert prog.knob_allowed() == 12


def test_tree_search_workloads_are_refused(data_dir):
    from dynasim.workloads.catalog import load_workload

    spec = load_workload("game24-tot").programs[0]
    for name in ("esc", "adaptive-consistency"):
        with pytest.raises(InputError) as e:
            Program(0, spec, make_intra(name)).start()
        assert e.value.field == "policy" and "tot" in str(e.value)


@pytest.mark.parametrize("workload", ["date-sc", "game24-sc"])
def test_batch_on_a_real_workload_saves_tokens_against_even(data_dir, workload):
    from dynasim.workloads.catalog import load_workload

    progs = load_workload(workload).programs
    kw = {"cap": 40, "detect_at": 5}
    even = run_batch(progs, make_intra("even", **kw), seed=0)
    for name in ("esc", "adaptive-consistency"):
        got = run_batch(progs, make_intra(name, **kw), seed=0)
        assert got == run_batch(progs, make_intra(name, **kw), seed=0)  # deterministic
        assert got["output_tokens"] < even["output_tokens"]
