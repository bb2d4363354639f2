"""Per-replica load and its imbalance in the summary (dynasim.metrics, issue 19)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dynasim.data_record import COLUMNS, with_latencies
from dynasim.metrics import imbalance, replica_load, summarize


def records(replicas, prompt, output, errors=None) -> pd.DataFrame:
    n = len(replicas)
    df = pd.DataFrame({"request_id": np.arange(n), "arrival_time": 0.0,
                       "first_token_time": 1.0, "finish_time": 2.0,
                       "prompt_tokens": prompt, "output_tokens": output,
                       "num_preemptions": 0, "error": errors or [""] * n,
                       "program_id": -1, "cached_tokens": 0, "replica": replicas})
    return with_latencies(df)[COLUMNS]


def test_imbalance_is_max_over_mean():
    assert imbalance([5, 5, 5, 5]) == 1.0
    assert imbalance([4, 0, 0, 0]) == 4.0
    assert imbalance([3, 1]) == 1.5
    assert imbalance([0, 0]) == 0.0


def test_replica_load_counts_requests_and_served_tokens():
    rec = records([0, 0, 1, 2], prompt=[10, 20, 30, 40], output=[1, 2, 3, 0],
                  errors=["", "", "", "rejected"])
    out = replica_load(rec, num_replicas=4)
    assert out["num_replicas"] == 4
    assert out["replica_requests"] == [2, 1, 1, 0]       # a rejected request was routed
    assert out["replica_tokens"] == [33, 33, 0, 0]       # only served tokens count
    assert out["replica_request_imbalance"] == pytest.approx(2 / 1.0)
    assert out["replica_token_imbalance"] == pytest.approx(33 / 16.5)


def test_summary_carries_the_fleet_keys_and_infers_its_size():
    s = summarize(records([0, 1, 1], prompt=[5, 5, 5], output=[5, 5, 5]))
    assert s["num_replicas"] == 2 and s["replica_requests"] == [1, 2]
    assert s["replica_request_imbalance"] == pytest.approx(2 / 1.5)
    one = summarize(records([0, 0], prompt=[5, 5], output=[5, 5]))
    assert one["num_replicas"] == 1 and one["replica_request_imbalance"] == 1.0


def test_replica_outside_the_fleet_is_refused():
    with pytest.raises(ValueError, match="replica index"):
        replica_load(records([0, 3], prompt=[5, 5], output=[5, 5]), num_replicas=2)


def test_records_without_replica_column_get_replica_zero():
    """Replayed rows (one server) and tables written before the column existed."""
    df = records([0], prompt=[5], output=[5]).drop(columns="replica")
    assert list(with_latencies(df)["replica"]) == [0]


def test_records_frame_columns_from_requests():
    """Sorted by id; a rejected request has 0 output tokens; no program is -1."""
    from dynasim.data_record import records_frame
    from dynasim.request import Request

    a = Request(1, 0.5, 10, 4, program_id=7)
    a.first_token_time, a.finish_time, a.status, a.replica = 1.0, 2.5, "finished", 3
    a.num_cached_tokens, a.num_preemptions = 8, 2
    b = Request(0, 0.0, 99, 5)
    b.finish_time, b.status, b.error = 0.0, "rejected", "too long"
    df = records_frame([a, b])
    assert list(df.columns) == COLUMNS
    assert list(df["request_id"]) == [0, 1]
    assert list(df["output_tokens"]) == [0, 4] and list(df["program_id"]) == [-1, 7]
    assert list(df["replica"]) == [0, 3] and list(df["cached_tokens"]) == [0, 8]
    assert list(df["error"]) == ["too long", ""] and list(df["num_preemptions"]) == [0, 2]
    assert df["tpot"].iloc[1] == pytest.approx((2.0 - 0.5) / 3)
    assert np.isnan(df["ttft"].iloc[0])
    assert records_frame([]).empty
