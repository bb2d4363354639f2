"""Calibration from recorded runs (dynasim.profiles.fit_runs): each stage on data whose
answer is known, and the whole fit recovering a profile from runs it simulated."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dynasim.policies import make_policy
from dynasim.profiles import fit_runs
from dynasim.profiles.fit import StepRow
from dynasim.profiles.fit_runs import (
    chunk_step_rows,
    fit_decode,
    fit_from_runs,
    profile_for,
)
from dynasim.profiles.run_windows import window_errors, windows
from dynasim.profiles.step_time import TokensStepTime
from dynasim.runs.common import RecordedRun, make_trace
from dynasim.simulation import simulate

ENGINE = {"model": "m", "gpu": "g", "tensor_parallel_size": 1, "num_gpu_blocks": 4000,
          "block_size": 16, "max_num_seqs": 64, "max_num_batched_tokens": 2048,
          "max_model_len": 8192, "enable_prefix_caching": False}
TRUE = {"step_ms": 8.0, "dense_floor_ms": 0.0, "dense_ms_per_token": 0.03,
        "prefill_attention_ms_per_pair": 2e-6, "decode_attention_ms_per_token": 2e-4,
        "seq_ms": 0.05}


def test_fit_decode_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(200):
        n = int(rng.integers(1, 60))
        ctx = float(n * rng.integers(200, 3000))
        rows.append(StepRow((), n, ctx, 8.0 + 2e-4 * ctx + 0.05 * n))
    got = fit_decode(rows)
    assert got["step_ms"] == pytest.approx(8.0, rel=1e-6)
    assert got["decode_attention_ms_per_token"] == pytest.approx(2e-4, rel=1e-6)
    assert got["seq_ms"] == pytest.approx(0.05, rel=1e-6)


def _run(name: str, trace, measured, chunks=None) -> RecordedRun:
    return RecordedRun(name, "test", trace, measured, dict(ENGINE), {}, chunks)


def test_chunk_steps_have_the_composition_of_the_moment():
    # request 0 decodes tokens at 1.0, 1.1, 1.2, 1.3; request 1's first token (after a
    # 500-token prompt) closes the step 1.1 -> 1.2, and it decodes to 2.0
    trace = make_trace("t", np.array([0.0, 1.05]), np.array([100, 500]),
                       np.array([4, 5]))
    measured = pd.DataFrame({"request_id": [0, 1], "first_token_time": [1.0, 1.2],
                             "finish_time": [1.3, 2.0], "prompt_tokens": [100, 500],
                             "output_tokens": [4, 5], "error": ["", ""]})
    chunks = pd.DataFrame({"request_id": [0] * 6, "chunk_index": range(6),
                           "time": [1.0, 1.0, 1.1, 1.2, 1.3, 1.3]})  # role, 4 tokens, end
    rows = chunk_step_rows(_run("t", trace, measured, chunks))
    assert [round(r.ms, 6) for r in rows] == [100.0, 100.0, 100.0]
    assert [r.prefill for r in rows] == [(), ((500, 0),), ()]
    assert [r.num_decode for r in rows] == [1, 1, 2]


def test_windows_cover_both_halves_and_skip_the_warm_up():
    n = 1000
    trace = make_trace("w", np.arange(n) * 0.5, np.full(n, 10), np.full(n, 5))
    measured = pd.DataFrame({"request_id": np.arange(n), "arrival_time": np.arange(n) * 0.5,
                             "first_token_time": np.arange(n) * 0.5 + 0.1,
                             "finish_time": np.arange(n) * 0.5 + 1.0,
                             "error": [""] * n})
    wins = windows(_run("w", trace, measured), max_requests=100, k=2, warmup_s=20.0)
    assert [len(w.trace) for w in wins] == [100, 100]
    assert wins[1].real["arrival_time"].iloc[0] == 0.0
    assert wins[0].scored.all() and wins[1].scored.sum() == 60  # 40 in the first 20 s
    assert len(windows(_run("w", trace, measured), None)) == 1


def _synthetic(name: str, rate: float, n: int, seed: int) -> RecordedRun:
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1 / rate, n))
    trace = make_trace(name, arrival, rng.integers(100, 1500, n), rng.integers(20, 200, n))
    prof = profile_for(ENGINE, "truth", TRUE, 15.0)
    sim, _ = simulate(trace, prof, make_policy("fcfs"))
    return _run(name, trace, sim)


def test_fit_recovers_a_profile_from_runs_it_simulated(monkeypatch):
    runs = {n: _synthetic(n, r, 400, s) for n, r, s in
            (("lo", 2.0, 1), ("hi", 6.0, 2), ("mid", 4.0, 3))}
    monkeypatch.setattr(fit_runs, "load_run", runs.__getitem__)
    prof, report = fit_from_runs(["lo", "hi"], ["mid"], "fitted", max_evals=100)
    held = next(r for r in report["runs"] if r["run"] == "mid")
    assert not held["fitted"] and held["median_e2e_error"] < 0.03, held
    assert held["median_ttft_error"] < 0.10, held
    assert prof.provenance["fitted_on"] == ["lo", "hi"]
    assert prof.max_num_seqs == 64 and prof.kv_capacity_tokens == 64000


def test_runs_of_different_servers_are_refused(monkeypatch):
    a = _synthetic("a", 2.0, 50, 1)
    b = _synthetic("b", 2.0, 50, 2)
    b.engine = {**b.engine, "num_gpu_blocks": 10}
    monkeypatch.setattr(fit_runs, "load_run", {"a": a, "b": b}.__getitem__)
    with pytest.raises(ValueError, match="num_gpu_blocks"):
        fit_from_runs(["a", "b"], [], "x", max_evals=2)


def test_a_window_from_mid_run_is_scored_against_its_own_requests():
    n = 1000
    trace = make_trace("w", np.arange(n) * 0.5, np.full(n, 10), np.full(n, 5))
    prof = profile_for(ENGINE, "p", TRUE, 15.0)
    sim, _ = simulate(trace, prof, make_policy("fcfs"))
    run = _run("w", trace, sim)
    for w in windows(run, max_requests=100, k=2, warmup_s=0.0):
        e = window_errors(prof, [w])
        assert e["scored"] == 100 and e["median_e2e_error"] < 1e-9, e


def test_calibrate_from_runs_writes_a_profile(data_dir, tmp_path, capsys):
    from dynasim.cli import main
    from dynasim.profiles import load_profile

    out = tmp_path / "p.json"
    assert main(["calibrate", "--from-runs", "llmservingsim-rtxpro6000-qwen3-32b",
                 "--max-evals", "8", "--name", "mine", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "llmservingsim-rtxpro6000-qwen3-32b" in printed and "fitted" in printed
    p = load_profile(str(out))
    assert p.name == "mine" and p.max_num_seqs == 128 and p.tensor_parallel_size == 2
    assert p.provenance["fitted_on"] == ["llmservingsim-rtxpro6000-qwen3-32b"]


@pytest.mark.parametrize("argv, message", [
    (["calibrate", "--output", "x.json"], "base_url"),
    (["calibrate", "--from-runs", "nope", "--output", "x.json"], "unknown recorded run"),
])
def test_calibrate_bad_input_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    from dynasim.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("engine, on", [
    ({}, set()),  # no version: nothing known
    ({"vllm_version": "0.2.7"}, {"client_timeouts"}),
    ({"vllm_version": "0.15.1"}, {"client_timeouts", "async_scheduling"}),
    ({"vllm_version": "0.19.0"}, {"client_timeouts", "async_scheduling", "admit_full_prompt"}),
    ({"vllm_version": "0.23.0rc1"}, {"client_timeouts", "async_scheduling",
                                     "admit_full_prompt"}),
    # a recorded config overrides the version's default
    ({"vllm_version": "0.19.0", "async_scheduling": False,
      "scheduler_reserve_full_isl": False}, {"client_timeouts"}),
])
def test_switches_follow_the_vllm_version_and_the_recorded_config(engine, on):
    from dynasim.profiles.run_switches import switches_for

    got = switches_for(engine)
    assert {k for k, v in got.items() if v} == on
    prof = profile_for({**ENGINE, **engine}, "p", TRUE, 15.0, switches=got)
    assert {k for k in got if getattr(prof, k)} == on
    assert not any(getattr(profile_for({**ENGINE, **engine}, "p", TRUE, 15.0), k)
                   for k in got)  # profile_for alone: all off


def test_async_step_fit_recovers_max_of_gpu_and_cpu():
    # steps made by the async rule: max(dense*T + attn*ctx, step + seq*S); small
    # batches are CPU bound, large ones GPU bound, so both sides are seen
    rng = np.random.default_rng(1)
    true = {**TRUE, "step_ms": 12.0, "seq_ms": 0.02}
    rows = []
    for _ in range(300):
        n = int(rng.integers(1, 200))
        ctx = float(n * rng.integers(200, 3000))
        pre = ((int(rng.integers(100, 1500)), 0),) if rng.random() < 0.3 else ()
        t, pairs, c, s = TokensStepTime.features(pre, n, ctx)
        gpu = (true["dense_ms_per_token"] * t + true["prefill_attention_ms_per_pair"] * pairs
               + true["decode_attention_ms_per_token"] * c)
        rows.append(StepRow(pre, n, ctx, max(gpu, true["step_ms"] + true["seq_ms"] * s)))
    start = {**true, "step_ms": 6.0, "dense_ms_per_token": 0.01,
             "decode_attention_ms_per_token": 1e-4, "seq_ms": 0.1}
    got = fit_runs.fit_async_steps(rows, start)
    for k in ("step_ms", "dense_ms_per_token", "decode_attention_ms_per_token"):
        assert got[k] == pytest.approx(true[k], rel=0.02), k
    # the sync (additive) form cannot match these steps as well
    lin = fit_decode([r for r in rows if not r.prefill])
    assert abs(lin["step_ms"] - 12.0) > 0.5
