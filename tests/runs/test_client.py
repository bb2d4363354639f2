"""The recording client's in-flight cap (dynasim.runs.client): a closed loop that sends
a due request only while fewer than N are in flight, against hand-checkable cases, the
open-loop simulator, and the saturated residency run it was found on."""

from __future__ import annotations

import numpy as np
import pytest

from dynasim.policies import make_policy
from dynasim.runs import load_run
from dynasim.runs.client import CAP, SCHEDULE, client_cap, simulate_capped
from dynasim.simulation import simulate
from tests.helpers import make_profile, make_trace


def _capped_trace(n: int, cap: float, rate: float = 20.0):
    trace = make_trace(n, seed=3, rate=rate)
    trace.frame[SCHEDULE] = trace.frame["arrival_time"]
    trace.frame[CAP] = cap
    return trace


def _in_flight_max(rec) -> int:
    """Most requests between send and finish at any send instant."""
    a, f = rec["arrival_time"].to_numpy(), rec["finish_time"].to_numpy()
    return int(max(((a <= t) & (f > t)).sum() for t in a))


def test_a_cap_that_never_binds_is_the_open_loop_simulation():
    trace = _capped_trace(300, cap=10_000)
    prof = make_profile()
    capped = simulate_capped(trace, prof, make_policy("fcfs"), client_cap(trace))
    open_loop, _ = simulate(trace, prof, make_policy("fcfs"))
    cols = ["request_id", "arrival_time", "first_token_time", "finish_time"]
    np.testing.assert_allclose(capped.sort_values("request_id")[cols].to_numpy(),
                               open_loop.sort_values("request_id")[cols].to_numpy())


def test_cap_one_sends_each_request_when_the_previous_one_ends():
    trace = _capped_trace(40, cap=1, rate=200.0)  # due far faster than served
    rec = simulate_capped(trace, make_profile(), make_policy("fcfs"), 1)
    rec = rec.sort_values("request_id").reset_index(drop=True)
    sched = trace.frame[SCHEDULE].to_numpy()
    expect = np.maximum(sched[1:], rec["finish_time"].to_numpy()[:-1])
    np.testing.assert_allclose(rec["arrival_time"].to_numpy()[1:], expect)
    assert (rec["arrival_time"].to_numpy()[1:] > sched[1:]).mean() > 0.9  # it binds


def test_in_flight_never_exceeds_the_cap_and_reaches_it_under_overload():
    trace = _capped_trace(400, cap=8, rate=200.0)
    rec = simulate_capped(trace, make_profile(), make_policy("fcfs"), 8)
    assert _in_flight_max(rec) == 8
    assert (rec["ttft"] > 0).all() and len(rec) == 400


def test_no_cap_column_or_a_nan_cap_means_no_closed_loop():
    assert client_cap(make_trace(5)) is None
    assert client_cap(_capped_trace(5, cap=float("nan"))) is None
    assert client_cap(_capped_trace(5, cap=0)) is None
    with pytest.raises(ValueError, match="cap"):
        simulate_capped(_capped_trace(5, cap=1), make_profile(), make_policy("fcfs"), 0)


def test_residency_runs_carry_the_drivers_schedule_and_cap(data_dir):
    run = load_run("residency-w7-agg12")
    f = run.trace.frame
    assert client_cap(run.trace) == 256
    # the send never precedes the schedule (µs rounding aside) and lags it by minutes
    lag = f["arrival_time"] - f[SCHEDULE]
    assert lag.min() > -0.01 and lag.max() > 200
    # the recording itself holds exactly 256 requests in flight at its peak
    assert _in_flight_max(run.measured) == 256
    # below saturation the cap never binds: send = schedule
    low = load_run("residency-rate8").trace.frame
    assert (low["arrival_time"] - low[SCHEDULE]).abs().max() < 0.01


def test_due_mode_measures_from_the_schedule_and_changes_nothing_else():
    """``measure_from="due"`` (``dynasim simulate --max-concurrency``): the engine runs
    the same (same finishes), records count from the due time, not the send."""
    trace = _capped_trace(120, cap=3, rate=200.0)
    prof = make_profile()
    send = simulate_capped(trace, prof, make_policy("fcfs"), 3)
    due = simulate_capped(trace, prof, make_policy("fcfs"), 3, measure_from="due")
    np.testing.assert_array_equal(due["finish_time"], send["finish_time"])
    np.testing.assert_allclose(due["arrival_time"], trace.frame["arrival_time"].sort_index())
    assert (due["arrival_time"] <= send["arrival_time"]).all()
    assert (due["arrival_time"] < send["arrival_time"]).sum() > 50  # a queue formed
    with pytest.raises(ValueError, match="measure_from"):
        simulate_capped(trace, prof, make_policy("fcfs"), 3, measure_from="arrival")
