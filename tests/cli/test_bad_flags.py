"""Flag values that used to crash (traceback) or be accepted silently: each ends in one
line naming the flag, exit status 2 (issue 15)."""

from __future__ import annotations

import pytest

from dynasim.cli import main

WORKLOAD = ["--workload", "game24-sc", "--profile", "vidur-llama3-8b-a100",
            "--num-programs", "3", "--no-progress"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("dynasim: error: "), err
    return err[0]


@pytest.mark.parametrize("extra, field", [
    (["--cap", "0"], "cap"),
    (["--detect-at", "0"], "detect_at"),
    (["--cap", "4", "--detect-at", "5"], "detect_at"),
    (["--threshold", "5"], "threshold"),
    (["--threshold", "-1"], "threshold"),
    (["--threshold", "nan"], "threshold"),
    (["--reward-threshold", "1.5"], "reward_threshold"),
    (["--sjf-aging", "-5"], "sjf_aging"),
])
def test_simulate_program_flags(data_dir, tmp_path, capsys, extra, field):
    argv = ["simulate", *WORKLOAD, "--policy", "sjf+certaindex", "--request-rate", "1",
            "--output-dir", str(tmp_path / "o"), *extra]
    assert main(argv) == 2
    assert f"field '{field}'" in _one_error_line(capsys)
    assert not (tmp_path / "o" / "summary.json").exists()


@pytest.mark.parametrize("rate", ["0", "-1", "inf"])
def test_simulate_request_rate_must_be_positive(data_dir, tmp_path, capsys, rate):
    assert main(["simulate", *WORKLOAD, "--request-rate", rate,
                 "--output-dir", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys)
    assert "field 'request_rate'" in line and "> 0" in line and "required" not in line


def test_simulate_request_rate_missing_says_required(data_dir, tmp_path, capsys):
    assert main(["simulate", *WORKLOAD, "--output-dir", str(tmp_path / "o")]) == 2
    assert "required" in _one_error_line(capsys)


@pytest.mark.parametrize("extra, field", [
    (["--cap", "0"], "cap"), (["--detect-at", "0"], "detect_at"),
    (["--threshold", "5"], "threshold")])
def test_sweep_program_flags(data_dir, tmp_path, capsys, extra, field):
    argv = ["sweep", "--workload", "game24-sc", "--profile", "vidur-llama3-8b-a100",
            "--policy", "lpm", "--request-rate", "1", "--num-programs", "3",
            "--no-progress", "--output-dir", str(tmp_path / "s"), *extra]
    assert main(argv) == 2
    assert f"field '{field}'" in _one_error_line(capsys)


@pytest.mark.parametrize("extra, field", [
    (["--detect-at", "0"], "detect_at"), (["--threshold", "-1"], "threshold")])
def test_batch_program_flags(data_dir, tmp_path, capsys, extra, field):
    argv = ["batch", "--workload", "game24-sc", "--policy", "even,certaindex", "--caps",
            "5", "--seeds", "1", "--output", str(tmp_path / "b.csv"), *extra]
    assert main(argv) == 2
    assert f"field '{field}'" in _one_error_line(capsys)


@pytest.mark.parametrize("extra, field", [
    (["--calibration-fraction", "0"], "calibration_fraction"),
    (["--calibration-fraction", "1.5"], "calibration_fraction"),
    (["--calibration-fraction", "1"], "calibration_fraction"),
    (["--step", "0"], "step"), (["--step", "-0.1"], "step"), (["--step", "2"], "step"),
    (["--cap", "0"], "cap"), (["--seeds", "0"], "seeds"),
])
def test_calibrate_thresholds_flags(data_dir, capsys, extra, field):
    assert main(["calibrate-thresholds", "--workload", "game24-sc", *extra]) == 2
    assert f"field '{field}'" in _one_error_line(capsys)
