"""Certaindex, programs, intra-program policies, batch mode, calibration, workloads."""

from __future__ import annotations

import math

import pytest

from dynasim.certaindex import (
    clusters,
    entropy_certaindex,
    exact_match,
    is_certain,
    majority_vote,
    math_equal,
    reward_certaindex,
)
from dynasim.errors import InputError
from dynasim.experiments.batch import run_batch, run_program_offline, token_accuracy
from dynasim.experiments.calibration import calibrate_threshold, fit_curve, split
from dynasim.policies import make_policy
from dynasim.policies.intra_program import BaselineEven, BaselineLength, CurveFit, StaticThreshold
from dynasim.simulation import deadlines_for, simulate_programs
from dynasim.workloads.call import Call
from dynasim.workloads.catalog import load_workload, read_samples
from dynasim.workloads.program import Program, ProgramSpec, difficulty_of
from tests.policies.test_schedulers import unit_profile


# ------------------------------------------------------------ certaindex
def test_entropy_certaindex_hand_values():
    assert entropy_certaindex(["4", "4", "4", "4"]) == 1.0
    assert entropy_certaindex(["1", "2", "3", "4"]) == 0.0
    # {3, 1} of 4: H = -(3/4 ln 3/4 + 1/4 ln 1/4) = 0.5623; (ln 4 - H) / ln 4 = 0.5944
    assert entropy_certaindex(["a", "a", "b", "a"]) == pytest.approx(0.594361, abs=1e-6)
    # {2, 2}: H = ln 2, H̃ = 1/2
    assert entropy_certaindex(["a", "b", "a", "b"]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        entropy_certaindex(["a"])  # n = 1 is undefined


def test_missing_answers_never_agree():
    assert entropy_certaindex(["None", "None", "", None]) == 0.0
    assert entropy_certaindex(["7", "7", "None"]) == pytest.approx(
        (math.log(3) - -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))) / math.log(3))
    assert majority_vote(["None", "None", "5"], [False, False, True]) == ("5", True)
    assert majority_vote(["None", ""], [False, False]) == (None, False)


def test_math_equivalence_by_value_never_executes():
    assert math_equal("0.5", "1/2") and math_equal("(3 - 2) / 2", "0.5")
    assert math_equal("(4 * 6) = 24", "24")
    assert not math_equal("2", "3")
    assert not math_equal("__import__('os').system('true')", "0")
    assert not math_equal("2**99999999", "0")
    assert len(clusters(["1/2", "0.5", "2"], math_equal)) == 2
    assert len(clusters(["1/2", "0.5", "2"], exact_match)) == 3


def test_reward_certaindex_and_combination():
    assert reward_certaindex([0.2, 0.6]) == pytest.approx(0.4)
    assert reward_certaindex([0.2, 0.6], "max") == 0.6
    with pytest.raises(ValueError):
        reward_certaindex([1.2])
    assert is_certain({"entropy": 0.99, "reward": 0.5}, {"entropy": 0.99, "reward": 0.4})
    assert not is_certain({"entropy": 0.99, "reward": 0.3}, {"entropy": 0.9, "reward": 0.4})


def test_majority_vote_ties_go_to_first_seen():
    assert majority_vote(["b", "a", "a", "b"], [False, True, True, False]) == ("b", False)


# --------------------------------------------------------------- programs
def sc(answers, correct=None, out=10):
    correct = correct or [a == "x" for a in answers]
    calls = tuple(Call((("t", 8),), out, a, c) for a, c in zip(answers, correct))
    return ProgramSpec("q", "sc", calls, difficulty_of(list(correct)))


def test_static_threshold_stops_certain_programs_at_detect_step():
    sure = sc(["x"] * 5 + ["y"] * 15)
    unsure = sc(["x", "y", "z", "w", "v"] + ["x"] * 15)
    intra = StaticThreshold(cap=20, detect_at=5, thresholds={"entropy": 0.7})
    p = run_program_offline(sure, intra)
    assert p.knob == 5 and p.samples_used == 5 and p.result() == ("x", True)
    assert p.certaindex["entropy"] == 1.0
    q = run_program_offline(unsure, intra)
    assert q.knob == 20 and q.output_tokens_done == 200 and q.result()[0] == "x"


def test_even_and_length_and_curve():
    spec = sc(["x", "y", "x", "y", "x"] + ["x"] * 15, out=10)
    assert run_program_offline(spec, BaselineEven(20)).samples_used == 20
    assert run_program_offline(spec, BaselineLength(20, 5, max_tokens=50)).knob == 5
    assert run_program_offline(spec, BaselineLength(20, 5, max_tokens=49)).knob == 20
    c = CurveFit(20, 5, gamma=1.0)
    assert c.budget(1.0) == 5 and c.budget(0.0) == 20 and c.budget(0.5) == 13


def test_program_waves_follow_the_knob():
    spec = sc(["x", "y", "z", "w", "v"] + ["x"] * 15)
    p = Program(0, spec, StaticThreshold(20, 5))
    assert len(p.start()) == 5
    assert len(p.on_wave_done(1.0)) == 15
    assert p.on_wave_done(2.0) == [] and p.finish_time == 2.0


def test_knob_allowed_sc_follows_the_stages():
    # SJF's remaining-knob estimate (App. D.3): the cap until the detect step decided
    sure = Program(0, sc(["x"] * 5 + ["y"] * 15), StaticThreshold(20, 5))
    unsure = Program(1, sc(["x", "y", "z", "w", "v"] + ["x"] * 15), StaticThreshold(20, 5))
    for p in (sure, unsure):
        assert p.knob_allowed() == 20  # before the first wave
        wave = p.start()
        assert len(wave) == 5 and p.knob_allowed() == 20  # not decided yet
        for c in wave:
            p.on_call_done(c)
    assert sure.on_wave_done(1.0) == [] and sure.knob_allowed() == 5  # stopped at 5
    assert len(unsure.on_wave_done(1.0)) == 15 and unsure.knob_allowed() == 20
    short = Program(2, sc(["x"] * 8), BaselineEven(20))  # fewer samples than the cap
    assert short.knob_allowed() == 8
    short.start()
    assert short.knob_allowed() == 8


@pytest.mark.parametrize("intra", [BaselineEven(20), StaticThreshold(
    20, 1, {"reward": 0.0})])
def test_knob_allowed_tot_counts_issued_plus_one_propose_per_branch_left(data_dir, intra):
    spec = load_workload("game24-tot").programs[0]
    steps, cap = spec.tree.num_steps, min(20, spec.tree.max_width)
    p = Program(0, spec, intra)
    assert p.knob_allowed() == cap * steps  # before the first wave: the logged width
    wave, k = p.start(), 0  # propose wave of step 0
    assert p.knob_allowed() == len(wave) + cap * (steps - 1)
    while wave:
        for c in wave:
            p.on_call_done(c)
        wave = p.on_wave_done(1.0)
        k += 1
        steps_done = (k + 2) // 2  # propose waves issued so far
        width = p.knob
        assert p.knob_allowed() == len(p.issued) + width * max(0, steps - steps_done)
        assert p.knob_allowed() >= len(p.issued)
    assert p.knob_allowed() == len(p.issued) == p.samples_used  # exact at the end
    if intra.name == "certaindex":
        assert p.knob == 1  # R >= 0 always passes: width 1 after the detect step


def test_difficulty():
    assert difficulty_of([True, True]) == 1
    assert difficulty_of([True, False]) == 2
    assert difficulty_of([False]) == 3


# ------------------------------------------------------------------ batch
def test_batch_is_deterministic_and_certaindex_saves_on_easy_programs():
    progs = [sc(["x"] * 20), sc(["x", "y"] * 10), sc(["y"] * 20)]
    a = run_batch(progs, StaticThreshold(20, 5), seed=3)
    assert a == run_batch(progs, StaticThreshold(20, 5), seed=3)
    even = run_batch(progs, BaselineEven(20), seed=3)
    assert a["output_tokens"] < even["output_tokens"]
    table = token_accuracy(progs, {"even": BaselineEven}, [5, 10], seeds=2)
    assert list(table.cap) == [5, 10] and (table.output_tokens_mean > 0).all()


def test_calibration_keeps_accuracy_within_tolerance_on_held_out(data_dir):
    w = load_workload("date-sc")
    grid = [i / 10 for i in range(11)]
    res = calibrate_threshold(w.programs, lambda t: StaticThreshold(
        40, 5, {"entropy": t}), grid, cap=40, tolerance=0.01, seeds=3)
    h = res["held_out"]
    calib = {p.question_id for p in split(w.programs, 0.5, 0)[0]}
    assert len(calib) == res["calibration"]["programs"]
    assert h["accuracy"] >= h["accuracy_cap"] - 0.01
    assert h["output_tokens"] < 0.5 * h["output_tokens_cap"]


def test_fit_curve_is_the_least_squares_gamma(data_dir):
    # the known answer: the γ minimising the squared error over the same (certaindex
    # at the detect step, samples needed) pairs, found here by a fine grid search
    import numpy as np

    from dynasim.experiments.calibration import needed_samples
    from dynasim.workloads.program import program_rng, shuffled

    # (game24-sc's answers make the optimum the upper bound, γ = 20: date-sc's do not)
    w = load_workload("date-sc")
    progs = w.programs[:60]
    c = fit_curve(progs, cap=20, detect_at=5, seeds=2)
    hs, ns = [], []
    for s in range(2):
        for spec in progs:
            sp = shuffled(spec, program_rng(s, spec.question_id))
            hs.append(entropy_certaindex([x.answer for x in sp.samples[:5]], sp.equivalent))
            ns.append(needed_samples(sp, 20, 5))
    h, n = np.array(hs), np.array(ns, float)
    grid = np.linspace(0.05, 20.0, 40_000)
    loss = [np.sum((5 + 15 * (1 - h) ** g - n) ** 2) for g in grid]
    best = grid[int(np.argmin(loss))]
    assert 0.05 < best < 20.0  # an interior optimum: the bounds do not decide it
    assert c.gamma == pytest.approx(best, abs=2 * (grid[1] - grid[0]))
    budgets = [c.budget(h / 10) for h in range(11)]
    assert budgets == sorted(budgets, reverse=True) and budgets[0] == 20
    assert budgets[-1] == 5


# -------------------------------------------------------------- workloads
def test_named_workloads(data_dir):
    g = load_workload("game24-sc")
    assert len(g.programs) == 100 and all(len(p.samples) == 100 for p in g.programs)
    assert g.programs[0].samples[0].prompt_tokens == 437
    d = load_workload("date-sc")
    assert len(d.programs) == 359 and len(d.programs[0].samples) == 40
    assert 1000 < d.programs[0].samples[0].prompt_tokens < 2000
    assert sorted({p.difficulty for p in d.programs}) == [1, 2, 3]
    t = load_workload("game24-tot")
    assert len(t.programs) == 100 and t.programs[0].algorithm == "tot"


def test_workload_csv_errors_name_file_line_field(write):
    path = write("w.csv", "question_id,sample_idx,extracted_answer,gold_answer,is_correct,"
                          "output_tokens\n1,0,5,5,1,10\n1,1,5,5,maybe,10\n")
    with pytest.raises(InputError) as e:
        read_samples(path)
    assert e.value.line == 3 and e.value.field == "is_correct"
    path = write("x.csv", "question_id,sample_idx,extracted_answer,gold_answer,is_correct,"
                          "output_tokens\n1,0,5,5,1,-1\n")  # 0 is EOS only: kept
    with pytest.raises(InputError) as e:
        read_samples(path)
    assert e.value.line == 2 and e.value.field == "output_tokens"
    path = write("y.csv", "question_id,sample_idx,extracted_answer,gold_answer\n")
    with pytest.raises(InputError) as e:
        read_samples(path)
    assert e.value.field == "is_correct"
    with pytest.raises(InputError):
        load_workload("no-such-workload")


def test_workload_csv_builds_sc_programs(write):
    path = write("w.csv", "question_id,sample_idx,extracted_answer,gold_answer,is_correct,"
                          "output_tokens,prompt_tokens\n7,1,b,a,0,12,30\n7,0,a,a,1,10,30\n")
    w = read_samples(path)
    (p,) = w.programs
    assert [c.answer for c in p.samples] == ["a", "b"] and p.difficulty == 2
    assert p.samples[0].prompt_tokens == 30 and not w.notes


# ----------------------------------------------------- online simulation
@pytest.mark.parametrize("name", ["fcfs", "lpm", "gang", "sjf", "gang+certaindex",
                                  "sjf+certaindex", "lpm+certaindex"])
def test_online_programs_all_accounted_and_cache_consistent(name):
    specs = [sc(["x"] * 20, out=5), sc(["x", "y"] * 10, out=7), sc(["y"] * 20, out=3),
             sc(["x"] * 6, out=2)] * 3
    prof = unit_profile(max_num_seqs=16, kv=2048, prefix=True)
    times = [0.001 * i for i in range(len(specs))]
    pol = make_policy(name, cap=10, detect_at=4)
    req, progs, eng = simulate_programs(specs, times, prof, pol,
                                        deadlines_for(specs, 1.0, 0.05))
    assert len(progs) == len(specs) and (progs.finish_time >= progs.arrival_time).all()
    assert len(req) == progs.samples_used.sum() and (req.error == "").all()
    assert (req.ttft <= req.e2e_latency).all()
    assert eng.free_blocks + eng.cache.num_evictable == eng.total_blocks
    again = simulate_programs(specs, times, prof, make_policy(name, cap=10, detect_at=4),
                              deadlines_for(specs, 1.0, 0.05))[1]
    assert again.equals(progs)  # same seed, same result
    if "certaindex" in name:
        assert progs.samples_used.min() == 4 and progs.samples_used.max() == 10
    else:
        assert (progs.samples_used == [10, 10, 10, 6] * 3).all()
    # a wave is the requests a program sent at one time; 16 seats, 1 ms apart
    waves = req.groupby(["program_id", "arrival_time"]).first_token_time.nunique()
    if name.startswith(("gang", "sjf")):
        assert (waves == 1).all()  # gang admission: every wave starts in one step
    else:
        assert (waves > 1).any()  # request by request: a wave is split over seats
    start = req.groupby("program_id").first_token_time.min()
    if name == "sjf":
        # program 3 may use 6 samples, programs 1 and 2 ten: shortest job first, so it
        # starts beside program 0 (10 + 6 seats) while the 10-seat program 1 waits
        assert start[3] < start[1] < start[2]
    elif name == "gang":
        assert start[1] < start[2] <= start[3]  # App-FIFO: program 1 blocks 3


@pytest.mark.parametrize("name", ["fcfs", "sjf"])
def test_rejected_calls_do_not_vote_or_count(name):
    # 3 samples answer "y" but ask 500 output tokens: rejected (max_model_len 100, the
    # server's HTTP 400), so they produce no answer and no tokens; the 2 "x" samples
    # (10 tokens each) are the program's only votes.
    calls = tuple(Call((("t", 8),), 500, "y", False) for _ in range(3)) + tuple(
        Call((("t", 8),), 10, "x", True) for _ in range(2))
    spec = ProgramSpec("q", "sc", calls, 2)
    prof = unit_profile(max_num_seqs=16).model_copy(update={"max_model_len": 100})
    req, progs, _ = simulate_programs([spec], [0.0], prof, make_policy(name, cap=5))
    assert (req.error != "").sum() == 3
    p = progs.iloc[0]
    assert (p.answer, p.correct, p.samples_used, p.output_tokens) == ("x", True, 2, 20)
    assert "max_model_len" in p.error


def test_rejected_calls_stay_out_of_certaindex():
    # detect at 4 samples: two rejected "y" and two answered "x"; certaindex over the
    # answers (x, x) is 1.0, so the threshold stops the program at the detect step
    calls = tuple(Call((("t", 8),), 500, "y", False) for _ in range(2)) + tuple(
        Call((("t", 8),), 10, "x", True) for _ in range(6))
    spec = ProgramSpec("q", "sc", calls, 2)
    prof = unit_profile(max_num_seqs=16).model_copy(update={"max_model_len": 100})
    _, progs, _ = simulate_programs([spec], [0.0], prof,
                                    make_policy("certaindex", cap=8, detect_at=4))
    p = progs.iloc[0]
    assert p.certaindex == 1.0 and p.knob == 4 and p.samples_used == 2


# -------------------------------------------------------------------- CLI
def test_cli_workload_batch_calibrate_ablation(data_dir, tmp_path, capsys):
    import json

    import pandas as pd

    from dynasim.cli import main

    out = tmp_path / "sim"
    assert main(["simulate", "--workload", "game24-direct-sc", "--request-rate", "2",
                 "--profile", "distserve-opt13b-a100", "--scheduling", "v1",
                 "--policy", "gang+certaindex", "--num-programs", "30", "--no-progress",
                 "--output-dir", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    progs = pd.read_parquet(out / "programs.parquet")
    assert s["num_programs"] == 30 == len(progs) and s["policy"] == "gang+certaindex"
    assert 0 <= s["slo_attainment"] <= 1 and s["prefix_cache_hit_rate"] > 0.5
    assert s["slo_attainment"] == pytest.approx(progs.slo_met.mean())
    assert main(["batch", "--workload", "date-sc", "--caps", "5,10", "--seeds", "2",
                 "--output", str(tmp_path / "b.csv")]) == 0
    b = pd.read_csv(tmp_path / "b.csv")
    assert set(b.policy) == {"even", "certaindex", "length", "curve"} and len(b) == 8
    assert "fewer output tokens" in capsys.readouterr().out
    assert main(["calibrate-thresholds", "--workload", "date-sc", "--seeds", "1",
                 "--step", "0.25", "--output", str(tmp_path / "c.json")]) == 0
    assert "threshold" in json.loads((tmp_path / "c.json").read_text())
    assert main(["ablation", "--workload", "game24-direct-sc", "--request-rate", "1",
                 "--scheduling", "v1", "--num-programs", "20",
                 "--output", str(tmp_path / "a.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "a.csv")) == 5


def test_cli_workload_errors(capsys):
    from dynasim.cli import main

    assert main(["simulate", "--profile", "distserve-opt13b-a100", "--output-dir", "x"]) == 2
    assert "exactly one of --trace and --workload" in capsys.readouterr().err
    assert main(["simulate", "--workload", "nope.csv", "--request-rate", "1", "--profile",
                 "distserve-opt13b-a100", "--output-dir", "x"]) == 2
    assert "nope.csv" in capsys.readouterr().err
    assert main(["simulate", "--workload", "game24-sc", "--profile",
                 "distserve-opt13b-a100", "--output-dir", "x"]) == 2
    assert "request-rate" in capsys.readouterr().err


# ------------------------------------------------------- two-sided certaindex
def test_calibrate_pair_picks_the_cheapest_pair_within_tolerance(data_dir):
    from dynasim.experiments.calibration import calibrate_pair
    from dynasim.policies import make_intra

    w = load_workload("game24-direct-sc")
    grid = [0.0, 0.2, 0.5, 0.7, 1.0]
    res = calibrate_pair(w.programs, lambda hi, lo: make_intra(
        "two-sided", cap=100, detect_at=5, threshold=hi, low_threshold=lo), grid,
        cap=100, tolerance=0.01, seeds=2)
    curve = res["curve"]
    assert len(curve) == 15 and all(r["low_threshold"] <= r["threshold"] for r in curve)
    c = res["calibration"]
    ok = [r for r in curve if r["accuracy"] >= c["accuracy_cap"] - 0.01 - 1e-12]
    best = min(ok, key=lambda r: r["output_tokens"])
    assert (res["threshold"], res["low_threshold"]) == (best["threshold"],
                                                        best["low_threshold"])
    assert c["output_tokens"] == best["output_tokens"] < c["output_tokens_cap"]
    h = res["held_out"]
    assert h["programs"] + c["programs"] == len(w.programs) and h["output_tokens"] > 0


def test_cli_two_sided_batch_and_calibration(data_dir, tmp_path, capsys):
    import json

    import pandas as pd

    from dynasim.cli import main

    assert main(["batch", "--workload", "game24-direct-sc", "--policy",
                 "even,certaindex,two-sided", "--caps", "100", "--detect-at", "5",
                 "--low-threshold", "0.2", "--seeds", "2",
                 "--output", str(tmp_path / "b.csv")]) == 0
    b = pd.read_csv(tmp_path / "b.csv").set_index("policy")
    assert b.output_tokens_mean["two-sided"] < b.output_tokens_mean["even"]
    assert "two-sided:" in capsys.readouterr().out
    assert main(["calibrate-thresholds", "--workload", "game24-direct-sc", "--policy",
                 "two-sided", "--cap", "100", "--seeds", "1", "--step", "0.5",
                 "--output", str(tmp_path / "c.json")]) == 0
    res = json.loads((tmp_path / "c.json").read_text())
    assert res["policy"] == "two-sided" and res["low_threshold"] <= res["threshold"]
    assert "low threshold" in capsys.readouterr().out
    assert main(["batch", "--workload", "game24-direct-sc", "--policy", "two-sided",
                 "--threshold", "0.3", "--low-threshold", "0.5", "--caps", "10",
                 "--output", str(tmp_path / "bad.csv")]) == 2
    assert "field 'low_threshold'" in capsys.readouterr().err
