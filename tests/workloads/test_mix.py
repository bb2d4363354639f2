"""Mixed workloads: several workloads at once, arrivals in proportions, deadlines and
attainment per workload."""

from __future__ import annotations

from collections import Counter

import pytest

from dynasim.errors import InputError
from dynasim.metrics import summarize_programs
from dynasim.policies import make_policy
from dynasim.simulation import online_programs, program_order, simulate_programs
from dynasim.workloads.catalog import load_workload
from dynasim.workloads.mix import parse_mix
from tests.helpers import make_profile


@pytest.fixture
def two_csvs(tmp_path):
    """Two per-sample CSV workloads: 'short' (10 questions of 4 x 10-token samples) and
    'long' (5 questions of 4 x 200-token samples)."""
    head = "question_id,sample_idx,extracted_answer,gold_answer,is_correct,output_tokens," \
           "prompt_tokens\n"
    paths = []
    for name, nq, out in (("short", 10, 10), ("long", 5, 200)):
        rows = [f"{name}{q},{i},a,a,1,{out},32" for q in range(nq) for i in range(4)]
        p = tmp_path / f"{name}.csv"
        p.write_text(head + "\n".join(rows) + "\n")
        paths.append(str(p))
    return paths


def test_parse_mix_normalises_weights_and_refuses_bad_parts():
    assert parse_mix("a:3,b") == [("a", 0.75), ("b", 0.25)]
    assert parse_mix("a, b") == [("a", 0.5), ("b", 0.5)]
    for bad in ("a,,b", "a:0,b", "a:x,b", "a:-1,b", "a,a", "a:inf,b"):
        with pytest.raises(InputError) as exc:
            parse_mix(bad)
        assert exc.value.field == "workload"


def test_mix_labels_programs_and_draws_in_proportion(two_csvs):
    short, long = two_csvs
    w = load_workload(f"{short}:3,{long}:1")
    assert len(w.programs) == 15 and [n for n, _ in w.mix] == [short, long]
    assert {s.workload for s in w.programs} == {short, long}
    order = program_order(w, 400, seed=1)
    counts = Counter(s.workload for s in order)
    assert 0.68 < counts[short] / 400 < 0.82
    assert program_order(w, 400, seed=1) == order  # deterministic
    assert program_order(w, 400, seed=2) != order
    # each part keeps its own seeded order: every question once before any repeats
    first = [s.question_id for s in order if s.workload == long][:5]
    assert sorted(first) == [f"long{q}" for q in range(5)]


def test_mix_sets_deadlines_per_workload_and_reports_attainment_per_workload(two_csvs):
    short, long = two_csvs
    w = load_workload(f"{short},{long}")
    prof = make_profile("v1", max_num_seqs=64)
    specs, times, deadlines, base = online_programs(w, prof, rate=2.0, seed=0,
                                                    num_programs=30, cap=4)
    assert set(base) == {short, long} and base[long] > 5 * base[short]
    for s, d in zip(specs, deadlines):
        assert d == pytest.approx(s.difficulty * base[s.workload])
    _, programs, _ = simulate_programs(specs, times, prof, make_policy("fcfs", cap=4),
                                       deadlines)
    assert set(programs["workload"]) == {short, long}
    s = summarize_programs(programs)
    by = s["slo_attainment_by_workload"]
    assert set(by) == {short, long}
    for name, value in by.items():
        assert value == pytest.approx(programs[programs.workload == name].slo_met.mean())


def test_a_mix_cannot_name_a_missing_workload(two_csvs):
    with pytest.raises(InputError):
        load_workload(f"{two_csvs[0]},no-such-workload")
