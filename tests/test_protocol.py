"""The deadline protocol (issue 18): a base deadline K x the isolated p90, the paper's
absolute base, and SLO attainment counted over the steady state only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dynasim.cli import main
from dynasim.data_record import PROGRAM_COLUMNS
from dynasim.errors import InputError
from dynasim.metrics import summarize_programs
from dynasim.policies import make_policy
from dynasim.profiles import load_profile
from dynasim.simulation import deadline_protocol, online_programs, simulate_programs
from dynasim.workloads.catalog import load_workload


@pytest.fixture(scope="module")
def setup(data_dir):
    prof = load_profile("vidur-llama3-8b-a100").with_overrides(enable_prefix_caching=True)
    return load_workload("game24-sc"), prof


def test_multiple_scales_the_derived_base_deadline_exactly(setup):
    w, prof = setup
    _, _, d1, b1 = online_programs(w, prof, 2.0, num_programs=10)
    _, _, d8, b8 = online_programs(w, prof, 2.0, num_programs=10, base_multiple=8.0)
    assert b8 == 8.0 * b1 and b1 > 0
    assert d8 == pytest.approx([8.0 * d for d in d1], rel=1e-12)  # every deadline scales
    assert deadline_protocol(None, 8.0) == "isolated-p90 x8"
    assert deadline_protocol(None, None) == "isolated-p90 x1"
    assert deadline_protocol(240.0, None) == "absolute 240 s"


def test_absolute_and_multiple_together_are_refused(setup):
    w, prof = setup
    with pytest.raises(InputError) as exc:
        online_programs(w, prof, 2.0, num_programs=10, base=240.0, base_multiple=8.0)
    assert exc.value.field == "base_deadline_multiple"


@pytest.mark.parametrize("extra, field", [
    (["--base-deadline", "240", "--base-deadline-multiple", "8"], "base_deadline_multiple"),
    (["--base-deadline-multiple", "0"], "base_deadline_multiple"),
    (["--warmup-programs", "-1"], "warmup_programs"),
    (["--warmup-programs", "5", "--cooldown-programs", "5"], "warmup_programs"),
])
def test_bad_protocol_flags_are_one_line_errors(data_dir, tmp_path, capsys, extra, field):
    assert main(["simulate", "--workload", "game24-sc", "--profile", "vidur-llama3-8b-a100",
                 "--request-rate", "2", "--num-programs", "10", "--no-progress",
                 "--output-dir", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert f"field '{field}'" in err and len(err.splitlines()) == 1


def _hand_made(arrivals: list[float], met: list[bool]) -> pd.DataFrame:
    n = len(arrivals)
    df = pd.DataFrame({c: [0] * n for c in PROGRAM_COLUMNS})
    df["program_id"] = range(n)
    df["arrival_time"] = arrivals
    df["latency"] = 1.0
    df["finish_time"] = df["arrival_time"] + 1.0
    df["slo_met"] = met
    df["correct"] = True
    df["fairness"] = np.nan
    return df


def test_steady_state_counts_only_programs_inside_the_window():
    # arrival order (by time): ids 3, 0, 4, 1, 5, 2; warm-up 2 skips 3 and 0,
    # cool-down 1 skips 2
    df = _hand_made([1.0, 3.0, 5.0, 0.0, 2.0, 4.0],
                    [True, False, False, False, True, True])
    s = summarize_programs(df, warmup=2, cooldown=1)
    # counted: ids 4 (met), 1 (missed), 5 (met)
    assert s["slo_attainment_programs_counted"] == 3
    assert s["slo_attainment"] == pytest.approx(2 / 3)
    assert s["num_programs"] == 6  # the other keys still count every program
    with pytest.raises(InputError) as exc:
        summarize_programs(df, warmup=4, cooldown=2)
    assert exc.value.field == "warmup_programs"


def test_defaults_count_every_program(setup):
    w, prof = setup
    specs, times, deadlines, _ = online_programs(w, prof, 6.0, num_programs=12)
    _, progs, _ = simulate_programs(specs, times, prof, make_policy("lpm"), deadlines)
    s = summarize_programs(progs)
    assert s == summarize_programs(progs, warmup=0, cooldown=0)
    assert s["slo_attainment"] == float(progs["slo_met"].mean())
    assert s["slo_attainment_programs_counted"] == s["num_programs"] == 12


def test_replay_refuses_a_window_it_would_not_apply(data_dir, tmp_path, capsys):
    from dynasim.cli import main

    rc = main(["replay", "--base-url", "http://127.0.0.1:9", "--model", "m", "--workload",
               "game24-sc", "--request-rate", "1", "--base-deadline", "5",
               "--warmup-programs", "3", "--output-dir", str(tmp_path / "r"),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "warmup_programs" in err and "Traceback" not in err


def test_ablation_applies_the_protocol(data_dir):
    from dynasim.experiments.ablation import run_ablation
    from dynasim.profiles import load_profile
    from dynasim.workloads import load_workload

    w = load_workload("game24-sc")
    prof = load_profile("vidur-llama3-8b-a100").with_overrides(enable_prefix_caching=True)
    intra = {"cap": 5, "detect_at": 5, "threshold": None, "reward_threshold": None,
             "gamma": 1.0, "max_tokens": 0}
    one = run_ablation(w, prof, 2.0, intra, num_programs=12, policies=("lpm",))
    three = run_ablation(w, prof, 2.0, intra, num_programs=12, policies=("lpm",),
                         base_multiple=3.0, warmup=2, cooldown=2)
    assert three.base_deadline_s[0] == pytest.approx(3 * one.base_deadline_s[0])
