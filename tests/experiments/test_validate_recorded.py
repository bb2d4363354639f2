"""The one fidelity table: recorded vLLM runs simulated with their shipped profiles."""

from __future__ import annotations

import pytest

from dynasim.cli import main
from dynasim.errors import InputError
from dynasim.experiments.validate import fidelity_table, run_profile
from dynasim.profiles.builders import RUN_PROFILES
from dynasim.runs import RUNS


def test_every_recorded_run_has_a_profile_that_fits_or_holds_it():
    covered = {r for fit, held in RUN_PROFILES.values() for r in (*fit, *held)}
    assert covered == set(RUNS)
    assert run_profile("residency-rate4") == ("vllm023-qwen3-14b-h100", False)
    assert run_profile("residency-rate2") == ("vllm023-qwen3-14b-h100", True)


def test_held_out_residency_rate_meets_the_issue_targets(data_dir):
    (row,) = fidelity_table(["residency-rate4"])
    assert not row["fitted"] and row["requests"] == 2363
    # issue 16's targets for the same server at another rate
    assert row["median_e2e_error"] <= 0.05, row
    assert row["median_ttft_error"] <= 0.15, row


def test_llmservingsim_row_carries_their_own_error(data_dir):
    (row,) = fidelity_table(["llmservingsim-rtx4090-llama3.1-8b"])
    assert row["fitted"] and row["published"]["e2e_mean"] == pytest.approx(0.005)
    assert row["mean_e2e_error"] <= 0.05, row


def test_unknown_run_is_refused():
    with pytest.raises(InputError, match="unknown run"):
        fidelity_table(["nope"])


def test_cli_prints_the_table_for_selected_runs(data_dir, capsys):
    assert main(["validate", "--runs", "llmservingsim-rtx4090-llama3.1-8b",
                 "distserve-vllm-100-1"]) == 0
    out = capsys.readouterr().out
    assert "vllm019-llama3.1-8b-rtx4090" in out and "E2E mean +0.5%" in out
    assert "100-1" in out and "mean E2E" in out


def test_cli_lists_runs(capsys):
    assert main(["validate", "--list-runs"]) == 0
    out = capsys.readouterr().out
    assert "residency-w7-agg12  (vllm023-qwen3-14b-h100, held out)" in out


def test_saturated_residency_run_meets_the_targets_only_in_a_closed_loop(data_dir,
                                                                         monkeypatch):
    # the driver (blis observe) holds 256 requests in flight: simulated as that closed
    # loop (dynasim.runs.client), the held-out saturated run meets issue 16's targets
    (row,) = fidelity_table(["residency-w7-agg12"])
    assert not row["fitted"]
    assert row["median_e2e_error"] <= 0.05, row
    assert row["median_ttft_error"] <= 0.15, row
    # replayed open loop on the recorded sends, the simulated server drains the backlog
    # the real one kept (TTFT off by most of itself)
    from dynasim.profiles import run_windows

    monkeypatch.setattr(run_windows, "client_cap", lambda trace: None)
    (open_loop,) = fidelity_table(["residency-w7-agg12"])
    assert open_loop["median_e2e_error"] > 0.2 and open_loop["median_ttft_error"] > 0.5
