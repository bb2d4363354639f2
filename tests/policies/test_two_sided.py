"""Two-sided certaindex: stop certain *and* hopeless programs at the detect step."""

from __future__ import annotations

import pytest

from dynasim.errors import InputError
from dynasim.experiments.batch import run_batch, run_program_offline
from dynasim.policies import INTRA, make_intra, make_policy
from dynasim.workloads.call import Call
from dynasim.workloads.program import ProgramSpec, difficulty_of


def sc(answers: list[str], out: int = 10) -> ProgramSpec:
    """A hand-made self-consistency program; "x" is the correct answer."""
    correct = [a == "x" for a in answers]
    calls = tuple(Call((("t", 8),), out, a, c) for a, c in zip(answers, correct))
    return ProgramSpec("q", "sc", calls, difficulty_of(correct))


def two_sided(low: float = 0.2, high: float = 0.7):
    return make_intra("two-sided", cap=20, detect_at=5, threshold=high, low_threshold=low)


def test_certain_program_stops_at_the_detect_step():
    p = run_program_offline(sc(["x"] * 5 + ["y"] * 15), two_sided())
    assert p.knob == 5 and p.samples_used == 5 and p.result() == ("x", True)
    assert p.certaindex["entropy"] == 1.0


def test_hopeless_program_stops_at_the_detect_step():
    # five different answers: H̃ = 0 <= 0.2; the static rule would run it to the cap
    spec = sc(["a", "b", "c", "d", "e"] + ["x"] * 15)
    p = run_program_offline(spec, two_sided())
    assert p.knob == 5 and p.output_tokens_done == 50 and p.certaindex["entropy"] == 0.0
    assert run_program_offline(spec, make_intra("certaindex", cap=20, detect_at=5)).knob == 20


def test_program_in_between_runs_to_the_cap():
    # one pair agrees twice out of five: H̃ = 0.5 (the two thresholds bracket it)
    spec = sc(["x", "x", "y", "y", "z"] + ["x"] * 15)
    p = run_program_offline(spec, two_sided())
    assert 0.2 < p.certaindex["entropy"] < 0.7
    assert p.knob == 20 and p.samples_used == 20 and p.result() == ("x", True)


def test_low_threshold_is_the_floor_inclusive():
    spec = sc(["a", "a", "b", "c", "d"] + ["x"] * 15)  # H̃ ≈ 0.172 with n = 5
    assert run_program_offline(spec, two_sided(low=0.17)).knob == 20
    assert run_program_offline(spec, two_sided(low=0.18)).knob == 5


@pytest.mark.parametrize("kwargs", [{"threshold": 0.5, "low_threshold": 0.6},
                                    {"reward_threshold": 0.3, "low_threshold": 0.4}])
def test_low_above_high_is_refused_naming_the_field(kwargs):
    with pytest.raises(InputError) as exc:
        make_intra("two-sided", **kwargs)
    assert exc.value.field == "low_threshold"
    with pytest.raises(InputError) as exc:
        make_policy("sjf+two-sided", **kwargs)
    assert exc.value.field == "low_threshold"


def test_registry_names():
    assert "two-sided" in INTRA
    assert make_intra("two-sided").name == "two-sided"
    alone = make_policy("two-sided")  # alone: Dynasor's full system, like certaindex
    assert type(alone).__name__ == "SJF" and alone.intra.name == "two-sided"
    for name, inter in (("sjf+two-sided", "SJF"), ("gang+two-sided", "Gang"),
                        ("two-sided+lpm", "LPM")):
        pol = make_policy(name, low_threshold=0.1)
        assert type(pol).__name__ == inter
        assert pol.intra.low_thresholds == {"entropy": 0.1}


def test_tree_search_reward_floor_narrows_the_beam(data_dir):
    from dynasim.workloads.catalog import load_workload

    def reward(spec: ProgramSpec) -> float:  # R after step 0 at the full logged width
        cap = min(20, spec.tree.max_width)
        return spec.tree.run([cap] * spec.tree.num_steps).steps[0].reward_max

    spec = next(s for s in load_workload("game24-tot").programs if 0 < reward(s) < 1)
    r, cap = reward(spec), min(20, spec.tree.max_width)

    def width(low: float, high: float) -> int:
        return run_program_offline(spec, make_intra(
            "two-sided", cap=20, detect_at=1, reward_threshold=high,
            low_threshold=low)).knob

    assert width(low=0.0, high=1.0) == cap  # neither side: the logged width
    assert width(low=r, high=1.0) == 1  # at the floor: hopeless
    assert width(low=0.0, high=r) == 1  # at the threshold: certain


def test_batch_on_a_real_workload_saves_tokens_against_even(data_dir):
    from dynasim.workloads.catalog import load_workload

    progs = load_workload("game24-direct-sc").programs
    kw = {"cap": 100, "detect_at": 5}
    even = run_batch(progs, make_intra("even", **kw), seed=0)
    cert = run_batch(progs, make_intra("certaindex", **kw), seed=0)
    two = run_batch(progs, make_intra("two-sided", low_threshold=0.2, **kw), seed=0)
    assert two == run_batch(progs, make_intra("two-sided", low_threshold=0.2, **kw), 0)
    assert two["output_tokens"] < cert["output_tokens"] < even["output_tokens"]
    assert two["stopped"] > cert["stopped"]


def test_sweep_config_refuses_low_above_high_naming_the_file(write):
    from dynasim.experiments.sweep_config import expand, load_config

    text = ("workloads: [game24-direct-sc]\nprofiles: [distserve-opt13b-a100]\n"
            "policies: [sjf+two-sided]\nrequest_rates: [1]\nlow_threshold: {}\n")
    bad = write("bad.yaml", text.format(0.9))  # above the default threshold 0.7
    with pytest.raises(InputError) as exc:
        load_config(bad, {})
    assert exc.value.field == "low_threshold" and str(bad) in str(exc.value.source)
    cell = expand(load_config(write("ok.yaml", text.format(0.2)), {}))[0]
    assert cell["low_threshold"] == 0.2
