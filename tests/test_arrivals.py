"""Arrival processes as in ``vllm bench serve`` (vLLM 0.11 ``get_request``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dynasim.arrivals import arrival_times, generate, retime
from dynasim.errors import InputError
from dynasim.trace import Trace

N = 20000


def _gaps(t: np.ndarray) -> np.ndarray:
    return np.diff(np.concatenate([[0.0], t]))  # the first request waits one gap too


def _cv(x: np.ndarray) -> float:
    return float(np.std(x) / np.mean(x))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("burstiness", [1.0, 0.25, 4.0])
def test_last_arrival_is_exactly_n_over_rate(seed, burstiness):
    rate = 5.0
    t = arrival_times(N, rate, burstiness, seed)
    assert t.shape == (N,)
    assert np.all(np.diff(t) >= 0) and t[0] > 0
    assert t[-1] == N / rate


def test_poisson_rate_and_cv():
    rate = 5.0
    g = _gaps(arrival_times(N, rate, 1.0, seed=7))
    assert np.mean(g) == pytest.approx(1.0 / rate, rel=1e-9)
    assert abs(_cv(g) - 1.0) <= 0.03


@pytest.mark.parametrize("burstiness, cv, tol", [(0.25, 2.0, 0.1), (4.0, 0.5, 0.03)])
def test_gamma_burstiness_cv(burstiness, cv, tol):
    g = _gaps(arrival_times(N, 3.0, burstiness, seed=11))
    assert np.mean(g) == pytest.approx(1.0 / 3.0, rel=1e-9)
    assert abs(_cv(g) - cv) <= tol


def test_seeded():
    a = arrival_times(1000, 2.0, 1.0, seed=3)
    np.testing.assert_array_equal(a, arrival_times(1000, 2.0, 1.0, seed=3))
    assert not np.array_equal(a, arrival_times(1000, 2.0, 1.0, seed=4))


def test_infinite_rate_sends_everything_at_zero():
    t = arrival_times(50, math.inf)
    assert t.shape == (50,) and np.all(t == 0.0)


@pytest.mark.parametrize("kwargs", [dict(n=0, request_rate=1.0),
                                    dict(n=10, request_rate=0.0),
                                    dict(n=10, request_rate=float("nan")),
                                    dict(n=10, request_rate=1.0, burstiness=0.0),
                                    dict(n=10, request_rate=1.0, burstiness=math.inf)])
def test_bad_arguments(kwargs):
    with pytest.raises(InputError):
        arrival_times(**kwargs)


def _source() -> Trace:
    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame({"arrival_time": np.sort(rng.uniform(0, 100, n)),
                          "prompt_tokens": rng.integers(1, 4000, n),
                          "output_tokens": rng.integers(1, 1000, n)})
    frame.index.name = "request_id"
    return Trace("src", frame)


def test_generate_draws_pairs_from_source_and_is_seeded():
    src = _source()
    pairs = set(zip(src.frame["prompt_tokens"], src.frame["output_tokens"]))
    tr = generate(src, 3000, request_rate=4.0, burstiness=1.0, seed=5)
    f = tr.frame
    assert len(tr) == 3000 and list(f.index) == list(range(3000))
    assert f.index.name == "request_id"
    assert set(zip(f["prompt_tokens"], f["output_tokens"])) <= pairs
    # drawn with replacement across the whole source, not just its head
    assert len(set(zip(f["prompt_tokens"], f["output_tokens"]))) > 150
    np.testing.assert_array_equal(f["arrival_time"], arrival_times(3000, 4.0, 1.0, 5))
    pd.testing.assert_frame_equal(f, generate(src, 3000, 4.0, 1.0, seed=5).frame)
    other = generate(src, 3000, 4.0, 1.0, seed=6).frame
    assert not np.array_equal(f["prompt_tokens"], other["prompt_tokens"])
    assert not np.array_equal(f["arrival_time"], other["arrival_time"])


def test_retime_keeps_ids_and_lengths():
    src = _source()
    src.frame.index = src.frame.index + 1000  # ids that are not 0..n-1 must survive
    src.frame.index.name = "request_id"
    tr = retime(src, 2.0, 1.0, seed=1)
    assert list(tr.frame.index) == list(src.frame.index)
    assert tr.frame.index.name == "request_id"
    np.testing.assert_array_equal(tr.frame["prompt_tokens"], src.frame["prompt_tokens"])
    np.testing.assert_array_equal(tr.frame["output_tokens"], src.frame["output_tokens"])
    np.testing.assert_array_equal(tr.frame["arrival_time"], arrival_times(200, 2.0, 1.0, 1))
    assert not np.array_equal(tr.frame["arrival_time"], src.frame["arrival_time"])
