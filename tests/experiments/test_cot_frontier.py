"""The Dynasor-CoT batch frontier (dynasim/experiments/cot_frontier.py): equal-accuracy
savings on a hand curve, the frontier of a tiny workload, the grading check, the figure."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dynasim.experiments import cot_frontier as cf
from dynasim.workloads.cot import read_cot_folder
from tests.workloads.cot_fixture import write_cot_folder


def test_tokens_for_accuracy_interpolates_on_the_monotone_curve():
    curve = pd.DataFrame({"tokens_mean": [100, 200, 300], "accuracy": [0.2, 0.5, 0.4]})
    assert cf.tokens_for_accuracy(curve, 0.35) == pytest.approx(150)
    assert cf.tokens_for_accuracy(curve, 0.5) == pytest.approx(200)   # not 300: monotone
    assert cf.tokens_for_accuracy(curve, 0.1) == pytest.approx(50)    # from (0, 0)
    assert math.isnan(cf.tokens_for_accuracy(curve, 0.6))             # above the curve


def test_frontier_of_a_tiny_workload(tmp_path):
    w = read_cot_folder(write_cot_folder(tmp_path / "cot"))
    t = cf.frontier(w, probe_intervals=[64, 128], windows=[2], budgets=[64, 128, 256, 512])
    full = t[t.policy == "full"].iloc[0]
    assert full.tokens_mean == pytest.approx((400 + 500 + 100) / 3)
    assert full.accuracy == pytest.approx(1.0)
    d = t[(t.policy == "dynasor-cot") & (t.probe_interval == 64)].iloc[0]
    # problem 1 stops at 192 ("0.5", right), problem 2 at 320 ("7", wrong: the hesitant
    # probe at 192 broke the first run of "7"), problem 3 never (100 tokens, "C")
    assert d.tokens_mean == pytest.approx((192 + 320 + 100) / 3)
    assert d.accuracy == pytest.approx(2 / 3)
    assert d.probe_tokens_mean == pytest.approx(((5 + 6 + 4) + (3 + 3 + 32 + 3 + 3) + 2) / 3)
    b = t[t.policy == "budget"].set_index("budget")
    # B = 128: problem 1 answers its probe at 128 (1/2, right), problem 2 the blank
    # probe (wrong), problem 3 ended at 100 ("C", right)
    assert b.loc[128].accuracy == pytest.approx(2 / 3)
    assert b.loc[128].tokens_mean == pytest.approx((128 + 128 + 100) / 3)
    need = cf.tokens_for_accuracy(t[t.policy == "budget"], d.accuracy)
    assert d.saving_at_equal_accuracy == pytest.approx(1 - d.tokens_mean / need)
    assert set(t.columns) >= {"model", "dataset", "policy", "probe_interval",
                              "certainty_window", "budget", "tokens_mean",
                              "probe_tokens_mean", "accuracy", "saving_at_equal_accuracy"}


def test_grading_check_counts_disagreements(tmp_path):
    rows = [("1", 0, "\\frac{1}{2}", 100, "0.5", True, [(64, "1", True, 2)]),
            ("2", 0, "7", 100, "7", False, [(64, "7", True, 2)]),      # logged wrongly
            ("3", 0, "50", 100, "50\\%", True, [(64, "7", True, 2)])]
    w = read_cot_folder(write_cot_folder(tmp_path / "cot", rows))
    d = cf.grading_disagreement(w).iloc[0]
    assert (d.trajectories, d.disagree) == (3, 1) and d.rate == pytest.approx(1 / 3)
    assert "'7' vs '7' (logged False)" in d.examples


def test_report_and_figure(tmp_path):
    w = read_cot_folder(write_cot_folder(tmp_path / "cot"))
    t = cf.frontier(w, probe_intervals=[64], windows=[2, 3], budgets=[128, 256, 512])
    text = cf.format_report(t, cf.grading_disagreement(w))
    assert "Model-A on ds1: 3 trajectories" in text
    assert "DeepSeek-R1-Distill-Qwen-7B    math500   -29%  (not run here)" in text
    figs = cf.frontier_figures(t)
    fig = figs["Model-A-ds1"]
    assert [tr.name for tr in fig.data] == ["budget (truncate at B)", "dynasor-cot T=64",
                                            "full trajectory"]
