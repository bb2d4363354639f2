"""``dynasim benchmark --scale``: the Azure-like trace and the read/simulate timings."""

from __future__ import annotations

import numpy as np
import pytest

from dynasim.cli import main
from dynasim.experiments.benchmark import azure_like, run_scale_benchmark
from dynasim.trace import read_trace


def test_azure_like_is_deterministic_repeats_lengths_and_keeps_the_rate(data_dir):
    src = read_trace("azure-conv-2023").frame
    n = 2 * len(src) + 5
    a, b = azure_like(n, 3.0), azure_like(n, 3.0)
    assert a.frame.equals(b.frame) and len(a) == n
    idx = np.arange(n) % len(src)
    np.testing.assert_array_equal(a.frame["prompt_tokens"], src["prompt_tokens"].to_numpy()[idx])
    np.testing.assert_array_equal(a.frame["output_tokens"], src["output_tokens"].to_numpy()[idx])
    t = a.frame["arrival_time"].to_numpy()
    assert t[0] == 0 and np.all(np.diff(t) >= 0)
    assert t[-1] == pytest.approx(n / 3.0)
    # the recorded burst pattern, scaled: the gaps of the first pass are proportional
    rec = np.diff(src["arrival_time"].to_numpy())
    got = np.diff(t[:len(src)])
    np.testing.assert_allclose(got / got.sum(), rec / rec.sum(), rtol=1e-9, atol=1e-15)


def test_scale_benchmark_rows(data_dir, capsys):
    rows = run_scale_benchmark(num_requests=1500, replicas=(1, 2), rate_per_replica=1.8)
    assert [r["replicas"] for r in rows] == [1, 2]
    assert [r["requests"] for r in rows] == [1500, 3000]
    for r in rows:
        assert r["read_s"] > 0 and r["simulate_s"] > 0 and r["simulate_cpu_s"] > 0
        assert r["total_s"] == pytest.approx(r["read_s"] + r["simulate_s"])
        assert 0 < r["served"] <= r["requests"]
    # twice the requests at twice the rate on twice the replicas: twice the throughput
    assert rows[1]["throughput"] == pytest.approx(2 * rows[0]["throughput"], rel=0.1)
    out = capsys.readouterr().out
    assert "1 replica(s) x 1500 requests" in out and "router least-outstanding" in out


def test_scale_benchmark_cli_and_bad_flags(data_dir, capsys):
    assert main(["benchmark", "--scale", "--num-requests", "500", "--replicas", "1",
                 "--cprofile", "5"]) == 0
    out = capsys.readouterr().out
    assert "read" in out and "simulate" in out and "tottime" in out
    assert main(["benchmark", "--scale", "--replicas", "0"]) == 2
    assert "'replicas'" in capsys.readouterr().err
    assert main(["benchmark", "--scale", "--num-requests", "0"]) == 2
    assert main(["benchmark", "--scale", "--router", "random", "--num-requests", "10"]) == 2


def test_programs_benchmark_rows_and_cli(data_dir, capsys):
    from dynasim.experiments.benchmark import run_programs_benchmark

    rows = run_programs_benchmark(("game24-sc", "cot-r1-llama8b-math500"), num_programs=6,
                                  rate=2.0)
    assert [r["programs"] for r in rows] == [6, 6]
    assert [r["policy"] for r in rows] == ["sjf+certaindex", "sjf+dynasor-cot"]
    r = rows[0]
    assert r["requests"] >= 6 and r["wall_s"] > 0 and r["cpu_s"] > 0
    assert r["requests_per_wall_s"] == pytest.approx(r["requests"] / r["wall_s"])
    assert r["peak_kb_per_request"] >= 0
    assert main(["benchmark", "--programs", "--workloads", "game24-tot",
                 "--num-programs", "2"]) == 0
    out = capsys.readouterr().out
    assert "game24-tot, 2 programs" in out and "requests per wall s" in out
    assert "KB per request" in out
    assert main(["benchmark", "--programs", "--num-programs", "0"]) == 2
    assert main(["benchmark", "--programs", "--program-rate", "0"]) == 2
