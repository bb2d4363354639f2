"""Recorded vLLM runs: each reader against its real files (cross-checked with a second
file of the same source) and against bad input (one line naming file, line, field)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dynasim.errors import InputError
from dynasim.runs import RUNS, blis, export_run, llmservingsim, load_run, residency

RESIDENCY_HEADER = ("request_id,server_input_tokens,output_tokens,send_time_us,"
                    "first_chunk_time_us,last_chunk_time_us,status\n")


def test_every_run_reads_with_one_record_per_request(data_dir):
    for name in RUNS:
        run = load_run(name)
        assert len(run.trace) == len(run.measured) > 0
        f = run.trace.frame
        assert f["arrival_time"].iloc[0] == 0 and f["arrival_time"].is_monotonic_increasing
        assert (f["prompt_tokens"] >= 1).all() and (f["output_tokens"] >= 1).all()
        ok = run.measured["error"] == ""
        assert (run.measured.loc[ok, "ttft"] > 0).all()
        assert (run.measured.loc[ok, "e2e_latency"] >= run.measured.loc[ok, "ttft"]).all()


def test_residency_latencies_equal_its_requests_csv(data_dir):
    run = load_run("residency-rate2")
    folder = data_dir / "residency_vllm_h100_qwen3_14b/results/sweep_rate/agg_2rps/vanilla"
    other = pd.read_csv(folder / "requests.csv")
    # requests.csv numbers requests by their row in trace.csv (not quite send order)
    rows = pd.read_csv(folder / "trace.csv")["request_id"]
    row_of = pd.Series(range(len(rows)), index=rows.to_numpy())
    mine = run.measured.assign(
        row=row_of.loc[run.trace.frame["source_request_id"].astype(int)].to_numpy())
    merged = mine.merge(other, left_on="row", right_on="request_idx")
    assert len(merged) == len(other) == 1212
    np.testing.assert_allclose(merged["ttft"] * 1e3, merged["ttft_ms"], atol=0.01)
    np.testing.assert_allclose(merged["e2e_latency"] * 1e3, merged["e2e_ms"], atol=0.01)
    # the prompt as the server counted it, not the 1024 the client asked for
    assert (run.trace.frame["prompt_tokens"] < 1024).mean() > 0.9


def test_residency_chunks_are_on_the_trace_clock(data_dir):
    run = load_run("residency-rate2")
    c = run.chunks
    assert c.groupby("request_id").size().eq(130).all()
    first = c[c["chunk_index"] == 0].set_index("request_id")["time"]
    np.testing.assert_allclose(first.to_numpy(),
                               run.measured["first_token_time"].to_numpy()[first.index],
                               atol=1e-6)


def test_saturated_residency_run_arrives_at_the_send_time(data_dir):
    run = load_run("residency-w7-agg12")
    # the driver lagged its schedule by minutes: the trace is the send order
    assert run.trace.frame["arrival_time"].max() > 800
    assert run.measured["ttft"].median() > 10


def _residency(write, rows: str):
    return write("trace.csv", RESIDENCY_HEADER + rows)


@pytest.mark.parametrize("rows, line, field", [
    ("0,10,5,100,200,300,ok\n1,x,5,100,200,300,ok\n", 3, "server_input_tokens"),
    ("0,10,5,100,200,150,ok\n", 2, "last_chunk_time_us"),
    ("0,10,5,300,200,400,ok\n", 2, "first_chunk_time_us"),
    ("0,10,0,100,200,300,ok\n", 2, "output_tokens"),
    ("0,10,5,100,,,error\n1,10,5,100,x,300,ok\n", 3, "first_chunk_time_us"),
])
def test_residency_bad_rows_name_line_and_field(write, rows, line, field):
    with pytest.raises(InputError) as exc:
        residency.read_trace_csv(str(_residency(write, rows)))
    assert (exc.value.line, exc.value.field) == (line, field)


def test_residency_missing_column(write):
    path = write("trace.csv", "request_id,output_tokens\n0,5\n")
    with pytest.raises(InputError, match="server_input_tokens"):
        residency.read_trace_csv(str(path))


def test_residency_failed_request_has_an_error_and_no_latency(write):
    path = write("trace.csv", RESIDENCY_HEADER.strip() + ",error_message\n"
                 "0,10,5,100,200,300,ok,\n1,10,5,150,,,error,timeout\n")
    run = residency.read_trace_csv(str(path))
    assert list(run.measured["error"]) == ["", "client: timeout"]
    assert np.isnan(run.measured["e2e_latency"].iloc[1])


def _blis(write, requests, truth, config=None):
    cfg = config or {"tensor_parallelism": 1, "max_num_seqs": 8,
                     "max_num_batched_tokens": 64, "kv_blocks_total_gpu": 100,
                     "block_size": 16}
    a = write("run.json", json.dumps({"config": cfg, "requests": requests}))
    b = write("run_gt.json", json.dumps(truth))
    return str(a), str(b)


def _req(i, t, p, o, err=False):
    return {"index": i, "arrival_time_us": t, "input_tokens": p, "output_tokens": o,
            "has_error": err}


def test_blis_timeouts_and_undercounted_streams_are_imputed(write):
    reqs = [_req(0, 0, 100, 50), _req(1, 10, 120, 50), _req(2, 20, 0, 0, True),
            _req(3, 30, 110, 3)]
    truth = [{"index": 0, "has_error": False, "ttft_s": 0.1, "e2e_s": 1.1},
             {"index": 1, "has_error": False, "ttft_s": 0.1, "e2e_s": 1.2},
             {"index": 2, "has_error": True, "ttft_s": None, "e2e_s": 300.4},
             # 3 tokens counted, yet as long as the 50-token requests: undercounted
             {"index": 3, "has_error": False, "ttft_s": 0.1, "e2e_s": 1.1}]
    run = blis.read_files(*_blis(write, reqs, truth))
    f = run.trace.frame
    assert list(f["imputed"]) == [False, False, True, True]
    assert list(f["output_tokens"]) == [50, 50, 50, 50]
    assert f["prompt_tokens"].iloc[2] == 110
    assert f["client_timeout_s"].iloc[0] == 300
    assert run.measured["error"].iloc[2].startswith("client timeout")
    assert run.measured["e2e_latency"].iloc[2] == pytest.approx(300.4)


@pytest.mark.parametrize("bad, field", [
    ({"arrival_time_us": "x"}, "requests[1].arrival_time_us"),
    ({"has_error": 1}, "requests[1].has_error"),
    ({"arrival_time_us": -5}, "requests[1].arrival_time_us"),
])
def test_blis_bad_request_names_its_field(write, bad, field):
    reqs = [_req(0, 0, 100, 50), {**_req(1, 10, 100, 50), **bad}]
    truth = [{"index": i, "has_error": False, "ttft_s": 0.1, "e2e_s": 1.0} for i in (0, 1)]
    with pytest.raises(InputError) as exc:
        blis.read_files(*_blis(write, reqs, truth))
    assert exc.value.field == field


def test_blis_ground_truth_of_other_requests_is_refused(write):
    reqs = [_req(0, 0, 100, 50)]
    truth = [{"index": 7, "has_error": False, "ttft_s": 0.1, "e2e_s": 1.0}]
    with pytest.raises(InputError, match="other requests"):
        blis.read_files(*_blis(write, reqs, truth))


def test_llmservingsim_latencies_match_its_own_summary(data_dir):
    run = load_run("llmservingsim-rtx4090-llama3.1-8b")
    text = (data_dir / "llmservingsim_vllm019_runs/bench/examples/RTX4090/Llama-3.1-8B/"
            "validation/summary.txt").read_text()
    vllm = {" ".join(x.split()[:2]): float(x.split()[2]) for x in text.splitlines()
            if x.startswith(("TTFT Mean", "Latency Mean"))}
    assert run.measured["ttft"].mean() * 1e3 == pytest.approx(vllm["TTFT Mean"], abs=0.1)
    assert run.measured["e2e_latency"].mean() * 1e3 == pytest.approx(vllm["Latency Mean"],
                                                                     abs=0.1)
    assert run.published["e2e_mean"] == pytest.approx(0.005)
    assert run.engine["num_gpu_blocks"] == 2588 and not run.engine["num_gpu_blocks_estimated"]


def test_llmservingsim_bad_line(write):
    path = write("r.jsonl", '{"input_toks": 5, "output_toks": 2, "queued_ts": 1.0, '
                 '"first_token_ts": 2.0, "last_token_ts": 3.0}\n{"input_toks": 5}\n')
    with pytest.raises(InputError) as exc:
        llmservingsim.read_requests(str(path))
    assert (exc.value.line, exc.value.field) == (2, "output_toks")


def test_llmservingsim_summary_without_rows(write):
    with pytest.raises(InputError, match="no 'METRIC"):
        llmservingsim.read_summary(str(write("s.txt", "nothing here\n")))


def test_unknown_run_is_one_line():
    with pytest.raises(InputError, match="unknown recorded run"):
        load_run("recorded:nope")


def test_export_writes_a_trace_and_a_run_folder(data_dir, tmp_path):
    from dynasim.trace import read_trace

    trace_path, folder = export_run("llmservingsim-rtxpro6000-qwen3-32b", tmp_path / "x")
    back = read_trace(str(trace_path))
    run = load_run("llmservingsim-rtxpro6000-qwen3-32b")
    assert list(back.frame["prompt_tokens"]) == list(run.trace.frame["prompt_tokens"])
    assert pd.read_parquet(folder / "requests.parquet")["ttft"].equals(run.measured["ttft"])


def test_blis_ignore_eos_output_len_replaces_the_client_counts(write):
    reqs = [_req(0, 0, 100, 247), _req(1, 10, 120, 12)]  # 12: an undercounted stream
    truth = [{"index": i, "has_error": False, "ttft_s": 0.1, "e2e_s": 2.0} for i in (0, 1)]
    run = blis.read_files(*_blis(write, reqs, truth), output_len=247)
    f = run.trace.frame
    assert list(f["output_tokens"]) == [247, 247]
    assert list(f["counted_output_tokens"]) == [247, 12]
    assert not f["imputed"].any()


@pytest.mark.parametrize("profile, expected", [
    ({"server": {"ignore_eos": True}, "data": {"shared_prefix": {"output_len": 248}}}, 248),
    ({"server": {"ignore_eos": False}, "data": {"shared_prefix": {"output_len": 248}}},
     None),
])
def test_blis_profile_output_len(write, profile, expected):
    assert blis.read_profile(str(write("profile.yaml", json.dumps(profile)))) == expected


def test_blis_profile_without_output_len_is_refused(write):
    path = write("profile.yaml", json.dumps({"server": {"ignore_eos": True}, "data": {}}))
    with pytest.raises(InputError) as exc:
        blis.read_profile(str(path))
    assert exc.value.field == "data.shared_prefix.output_len"


def test_blis_real_run_generates_its_output_len(data_dir):
    run = load_run("blis-llama2-7b-codegen")
    f = run.trace.frame
    assert (f["output_tokens"] == 247).all()
    # the client's counts fall short for many requests whose decode took as long
    m = run.measured
    short = (f["counted_output_tokens"] < 50).to_numpy() & (m["error"] == "").to_numpy()
    full = (f["counted_output_tokens"] >= 247).to_numpy()
    decode = (m["e2e_latency"] - m["ttft"]).to_numpy()
    assert short.sum() > 500
    assert np.median(decode[short]) == pytest.approx(np.median(decode[full]), rel=0.05)
