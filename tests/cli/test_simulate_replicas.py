"""``dynasim simulate --replicas N [--replica-profile P ...] --router R`` (issue 19)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dynasim.cli import main

PROFILE = "distserve-opt13b-a100"
LINE = '{{"timestamp": {t}, "input_length": {p}, "output_length": {o}}}\n'


@pytest.fixture
def trace(write):
    """120 requests, 20 ms apart: far more than one OPT-13B replica keeps up with."""
    return write("t.jsonl", "".join(LINE.format(t=20 * i, p=200 + 7 * i, o=50 + i % 30)
                                    for i in range(120)))


def _simulate(trace, out, *flags) -> int:
    return main(["simulate", "--trace", str(trace), "--profile", PROFILE, "--no-progress",
                 "--output-dir", str(out), *flags])


def test_fleet_records_summary_and_printout(trace, tmp_path, capsys):
    out = tmp_path / "four"
    assert _simulate(trace, out, "--replicas", "4", "--router", "round-robin") == 0
    records = pd.read_parquet(out / "requests.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert list(records["replica"]) == [i % 4 for i in range(120)]
    assert summary["num_replicas"] == 4 and summary["router"] == "round-robin"
    assert summary["replica_requests"] == [30] * 4
    assert summary["replica_profiles"] == [PROFILE] * 4
    printed = capsys.readouterr().out
    assert "Replicas (round-robin)" in printed and "Request imbalance" in printed


def test_four_replicas_beat_one(trace, tmp_path):
    for n in ("1", "4"):
        assert _simulate(trace, tmp_path / n, "--replicas", n) == 0
    one, four = (json.loads((tmp_path / n / "summary.json").read_text()) for n in "14")
    assert one["num_replicas"] == 1 and "router" not in one
    assert four["request_throughput"] > 2.5 * one["request_throughput"]
    assert four["median_ttft_ms"] < one["median_ttft_ms"]


def test_router_knobs_reach_the_router(trace, tmp_path):
    """Knobs are passed to the router and named in the summary; a load cap of 0 extra
    requests keeps prefix-affinity's fleet even."""
    out = tmp_path / "knob"
    assert _simulate(trace, out, "--replicas", "2", "--router", "prefix-affinity",
                     "--router-knob", "balance_abs_threshold=0",
                     "balance_rel_threshold=1") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["router"] == "prefix-affinity"
    assert summary["router_knobs"] == {"balance_abs_threshold": 0, "balance_rel_threshold": 1}
    assert summary["replica_request_imbalance"] < 1.1


def test_heterogeneous_fleet_cycles_profiles(trace, tmp_path):
    out = tmp_path / "mixed"
    other = "vidur-llama3-8b-a100"
    assert _simulate(trace, out, "--replicas", "3", "--replica-profile", PROFILE, other) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["replica_profiles"] == [PROFILE, other, PROFILE]
    assert summary["profile"] == f"{PROFILE},{other}"


@pytest.mark.parametrize("flags, field", [
    (["--replicas", "0"], "replicas"),
    (["--router", "random"], "router"),
    (["--replicas", "1", "--replica-profile", PROFILE, PROFILE], "replica_profile"),
    (["--replicas", "2", "--replica-profile", "no-such-profile"], None),
    (["--router", "prefix-affinity", "--router-knob", "cache_threshold"], "router_knob"),
    (["--router", "prefix-affinity", "--router-knob", "cache_threshold=x"], "router_knob"),
    (["--router", "round-robin", "--router-knob", "cache_threshold=0.5"], "cache_threshold"),
    (["--router", "prefix-affinity", "--router-knob", "cache_threshold=2"],
     "cache_threshold"),
])
def test_bad_fleet_flags_are_one_line_errors(trace, tmp_path, capsys, flags, field):
    assert _simulate(trace, tmp_path / "bad", *flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    if field:
        assert f"'{field}'" in err[0]
    assert not (tmp_path / "bad" / "requests.parquet").exists()


def test_workload_on_replicas_with_program_affinity(tmp_path, data_dir):
    """Programs on a fleet: every call routed, each program's calls on one replica."""
    import json

    import pandas as pd

    out = tmp_path / "w"
    assert main(["simulate", "--workload", "game24-sc", "--profile", PROFILE,
                 "--request-rate", "4", "--num-programs", "40", "--replicas", "2",
                 "--router", "program-affinity", "--output-dir", str(out),
                 "--no-progress"]) == 0
    req = pd.read_parquet(out / "requests.parquet")
    assert set(req["replica"]) == {0, 1}
    assert (req.groupby("program_id")["replica"].nunique() == 1).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_programs"] == 40 and summary["num_replicas"] == 2


def test_max_concurrency_client_measures_from_the_due_time(trace, tmp_path, capsys):
    """``--max-concurrency N`` (vLLM bench's and dynasim replay's flag): at most N in
    flight, due requests sent in order as slots free, latencies from the due time (as
    replay records them), so the client's queue shows in TTFT."""
    free, capped = tmp_path / "free", tmp_path / "capped"
    assert _simulate(trace, free) == 0
    assert _simulate(trace, capped, "--max-concurrency", "2") == 0
    a = pd.read_parquet(free / "requests.parquet")
    b = pd.read_parquet(capped / "requests.parquet")
    assert (b["arrival_time"] == a["arrival_time"]).all()  # the due times
    summary = json.loads((capped / "summary.json").read_text())
    assert summary["max_concurrency"] == 2
    assert b["ttft"].median() > a["ttft"].median()
    starts, ends = b["finish_time"] - b["e2e_latency"], b["finish_time"]
    sends = b["first_token_time"].sort_values()  # at most 2 requests hold a slot
    assert max(((starts <= t) & (ends > t) & (b["first_token_time"] <= t)).sum()
               for t in sends) <= 2
    for flags in (["--policy", "sjf"], ["--replicas", "2"], ["--max-concurrency", "0"]):
        extra = flags if flags[0] == "--max-concurrency" else [*flags, "--max-concurrency", "2"]
        assert _simulate(trace, tmp_path / "bad", *extra) == 2
        assert "max_concurrency" in capsys.readouterr().err
