"""The ``dynasim`` command line end to end, on a slice of a real trace."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from dynasim.cli import main
from dynasim.data_record import COLUMNS
from dynasim.trace import read_mooncake, read_trace

PROFILE = "distserve-opt13b-a100"
SIM = ["simulate", "--trace", "azure-conv-2023", "--num-prompts", "300",
       "--profile", PROFILE, "--no-progress"]

VLLM_KEYS = ["completed", "failed", "duration", "request_throughput", "output_throughput",
             "total_token_throughput"] + [
    f"{stat}_{metric}_ms" for metric in ("ttft", "tpot", "e2el")
    for stat in ("mean", "median", "p90", "p99")]


def _run(argv) -> None:
    assert main([str(a) for a in argv]) == 0


def _outputs(out):
    return (pd.read_parquet(out / "requests.parquet"),
            json.loads((out / "summary.json").read_text()))


def test_simulate_writes_records_and_vllm_summary(data_dir, tmp_path):
    out = tmp_path / "run"
    _run(SIM + ["--output-dir", out])
    records, summary = _outputs(out)
    assert list(records.columns) == COLUMNS
    assert len(records) == 300
    assert list(records["request_id"]) == list(range(300))
    trace = read_trace("azure-conv-2023").head(300).frame
    np.testing.assert_allclose(records["arrival_time"], trace["arrival_time"])  # kept
    np.testing.assert_array_equal(records["prompt_tokens"], trace["prompt_tokens"])
    for key in VLLM_KEYS:
        assert key in summary, key
        assert isinstance(summary[key], (int, float)) and np.isfinite(summary[key]), key
    assert summary["completed"] + summary["failed"] == 300
    assert summary["completed"] > 0 and summary["duration"] > 0
    assert summary["completed"] == int((records["error"] == "").sum())
    assert summary["request_throughput"] == pytest.approx(
        summary["completed"] / summary["duration"])
    assert summary["duration"] == pytest.approx(records["finish_time"].max())
    assert "request_goodput" not in summary
    for metric in ("ttft", "tpot", "e2el"):
        assert (summary[f"median_{metric}_ms"] <= summary[f"p90_{metric}_ms"]
                <= summary[f"p99_{metric}_ms"])
    ok = records[records["error"] == ""]
    assert summary["mean_e2el_ms"] == pytest.approx(ok["e2e_latency"].mean() * 1e3)


def test_simulate_goodput(data_dir, tmp_path):
    out = tmp_path / "run"
    _run(SIM + ["--output-dir", out, "--goodput", "ttft:1000", "e2el:20000"])
    records, summary = _outputs(out)
    assert "request_goodput" in summary
    assert 0 <= summary["request_goodput"] <= summary["request_throughput"]
    ok = records[records["error"] == ""]
    good = ((ok["ttft"] <= 1.0) & (ok["e2e_latency"] <= 20.0)).sum()
    assert summary["request_goodput"] == pytest.approx(good / summary["duration"])


def test_simulate_retimed_is_seeded(data_dir, tmp_path):
    retime = ["--request-rate", "2", "--seed", "1"]
    _run(SIM + ["--output-dir", tmp_path / "a"] + retime)
    _run(SIM + ["--output-dir", tmp_path / "b"] + retime)
    _run(SIM + ["--output-dir", tmp_path / "c", "--request-rate", "2", "--seed", "2"])
    a, summary = _outputs(tmp_path / "a")
    b, _ = _outputs(tmp_path / "b")
    c, _ = _outputs(tmp_path / "c")
    trace = read_trace("azure-conv-2023").head(300).frame
    assert not np.allclose(a["arrival_time"], trace["arrival_time"])
    assert a["arrival_time"].iloc[-1] == pytest.approx(300 / 2.0)
    np.testing.assert_array_equal(a["prompt_tokens"], trace["prompt_tokens"])
    pd.testing.assert_frame_equal(a, b)
    assert not np.array_equal(a["arrival_time"], c["arrival_time"])
    assert summary["request_rate"] == 2.0 and summary["seed"] == 1


def test_trace_generate_then_simulate(data_dir, tmp_path):
    gen = tmp_path / "gen.jsonl"
    _run(["trace", "generate", "--lengths-from", "azure-conv-2023", "--request-rate", "4",
          "--num-prompts", "200", "--seed", "3", "--output", gen])
    tr = read_mooncake(gen)
    assert len(tr) == 200
    assert tr.frame["arrival_time"].iloc[-1] == pytest.approx(200 / 4.0, rel=1e-9)
    src = read_trace("azure-conv-2023").frame
    pairs = set(zip(src["prompt_tokens"], src["output_tokens"]))
    assert set(zip(tr.frame["prompt_tokens"], tr.frame["output_tokens"])) <= pairs
    out = tmp_path / "run"
    _run(["simulate", "--trace", gen, "--profile", PROFILE, "--no-progress",
          "--output-dir", out])
    records, summary = _outputs(out)
    assert len(records) == 200
    np.testing.assert_allclose(records["arrival_time"], tr.frame["arrival_time"])
    np.testing.assert_array_equal(records["prompt_tokens"], tr.frame["prompt_tokens"])
    assert summary["completed"] + summary["failed"] == 200


def test_profiles_lists_shipped(capsys):
    _run(["profiles"])
    out = capsys.readouterr().out
    assert any(line.split()[:1] == [PROFILE] for line in out.splitlines())


def test_profiles_build_equals_shipped(data_dir, capsys, tmp_path):
    shipped = json.loads((resources.files("dynasim") / "profiles" / f"{PROFILE}.json")
                         .read_text())
    _run(["profiles", "--build", PROFILE])
    assert json.loads(capsys.readouterr().out) == shipped
    _run(["profiles", "--build", PROFILE, "--output", tmp_path / "p.json"])
    assert json.loads((tmp_path / "p.json").read_text()) == shipped
