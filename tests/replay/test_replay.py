"""The replay harness against the fault-injecting stub (replay.testing.stub): what a real vLLM
cannot show on demand -- faults, interrupts, a server without priority scheduling --
plus prompts, client-side policies and compare. The live-vLLM tests are in
test_replay_vllm.py."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dynasim.cli import main
from dynasim.policies import make_policy
from dynasim.request import Request
from replay.dispatcher import Replay
from replay.journal import Journal, read_records
from replay.prompts import PromptBuilder, trace_segments
from replay.testing.stub import FAILING_FAULTS, FAULT_KINDS, StubServer, fault_for
from tests.helpers import interrupt_replay


def _trace_file(path: Path, n: int, rate: float = 50.0, prompt: int = 40,
                output: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / rate, n))
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"timestamp": int(t[i] * 1000), "input_length": prompt + i % 7,
                                "output_length": output + i % 5}) + "\n")
    return path


def test_prompt_builder_shares_prefixes_and_cuts_blocks():
    pb = PromptBuilder(range(10, 60), salt="s")
    a = pb.build([("template", 30), ("q1", 5)])
    b = pb.build([("template", 30), ("q2", 5)])
    assert len(a) == len(b) == 35 and a[:30] == b[:30] and a[30:] != b[30:]
    assert pb.build([("template", 12)]) == a[:12]  # a cut segment is a prefix
    assert PromptBuilder(range(10, 60), salt="t").build([("template", 30)]) != a[:30]
    assert trace_segments(7, 1100, [4, 5, 6]) == [("block:4", 512), ("block:5", 512),
                                                   ("block:6", 76)]
    assert trace_segments(7, 1100, [4]) == [("block:4", 512), ("request:7", 588)]
    assert trace_segments(7, 10, None) == [("request:7", 10)]


def test_faults_are_recorded_and_no_measurement_is_lost(tmp_path):
    """A few hundred requests with every fault kind: each faulted request is marked with
    its error, every other one is measured in full."""
    n, rate, seed, timeout = 300, 0.2, 3, 1.0
    reqs = [Request(i, i / 150.0, 20 + i % 11, 8 + i % 9) for i in range(n)]
    with StubServer(fault_rate=rate, seed=seed, token_delay_ms=2, stall_s=3,
                    slow_first_byte_s=0.3) as url:
        journal = Journal(tmp_path, {})
        rep = Replay(url, "stub", make_policy("fcfs"), journal,
                     PromptBuilder(range(3, 259)), timeout=timeout)
        t0 = time.perf_counter()
        summary = asyncio.run(rep.run(reqs))
        wall = time.perf_counter() - t0
    df, _ = read_records(tmp_path)
    assert sorted(df["request_id"]) == list(range(n))
    kinds = {i: fault_for(f"dynasim-{i}", seed, rate, FAULT_KINDS) for i in range(n)}
    injected = sum(k in FAILING_FAULTS for k in kinds.values())
    lost = 0
    for row in df.itertuples():
        kind = kinds[row.request_id]
        if kind in FAILING_FAULTS:
            assert row.error, (row.request_id, kind)
            expect = {"5xx": "HTTP 50", "stall": "timeout", "malformed": "malformed",
                      "reset": ""}[kind]
            assert expect in row.error, (kind, row.error)
        else:
            ok = (row.error == "" and row.output_tokens == row.asked_output_tokens
                  and row.usage_prompt_tokens == row.prompt_tokens
                  and 0 <= row.ttft <= row.e2e_latency
                  and len(row.itl) >= 0)
            lost += not ok
            if kind == "slow":
                assert row.ttft >= 0.3
    assert lost == 0
    assert summary["failed"] == injected and summary["completed"] == n - injected
    assert 30 <= injected <= 90  # about 20% x 4/5 of 300
    assert wall < 3 + timeout + 5  # stalls end at the timeout, not at stall_s
    print(f"\nfaults: {n} requests, {injected} failing faults injected "
          f"({sum(k == 'slow' for k in kinds.values())} slow first bytes), "
          f"{summary['failed']} failures recorded, {lost} measurements lost")


def test_ctrl_c_leaves_a_readable_partial_result(tmp_path):
    trace = _trace_file(tmp_path / "t.jsonl", 400, rate=40.0)
    out = tmp_path / "run"
    returncode, err = interrupt_replay(trace, out, signal.SIGINT)
    assert returncode == 130, err
    req = pd.read_parquet(out / "requests.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["partial"] is True
    logged, _ = read_records(out)
    assert len(req) == len(logged) >= 20
    done = req[req["error"] == ""]
    assert len(done) >= 20 and (done["output_tokens"] == done["asked_output_tokens"]).all()
    assert (req.loc[req["error"] != "", "error"].str.contains("cancelled|not sent")).all()


def test_server_without_priority_scheduling(tmp_path, capsys):
    trace = _trace_file(tmp_path / "t.jsonl", 20)
    with StubServer(scheduling_policy="fcfs") as url:
        rc = main(["replay", "--base-url", url, "--model", "stub", "--trace", str(trace),
                   "--policy", "sjf", "--output-dir", str(tmp_path / "o"), "--no-progress"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "does not honour" in err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["server_priority_scheduling"] is False
    df = pd.read_parquet(tmp_path / "o" / "requests.parquet")
    assert (df["priority"] == -1).all() and (df["error"] == "").all()


def test_lpm_is_refused_plainly(tmp_path, capsys):
    trace = _trace_file(tmp_path / "t.jsonl", 3)
    rc = main(["replay", "--base-url", "http://127.0.0.1:9", "--model", "m", "--trace",
               str(trace), "--policy", "lpm", "--output-dir", str(tmp_path / "o")])
    assert rc == 2
    assert "SGLang" in capsys.readouterr().err


def test_unreachable_server_is_a_clear_error(tmp_path, capsys):
    trace = _trace_file(tmp_path / "t.jsonl", 3)
    rc = main(["replay", "--base-url", "http://127.0.0.1:9", "--model", "m", "--trace",
               str(trace), "--output-dir", str(tmp_path / "o")])
    assert rc == 2
    assert "cannot reach" in capsys.readouterr().err


def _overlap(df: pd.DataFrame) -> int:
    ev = sorted([(t, 1) for t in df["send_time"]] + [(t, -1) for t in df["finish_time"]],
                key=lambda e: (e[0], e[1]))
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def test_gang_sends_programs_whole_under_max_concurrency(tmp_path, data_dir):
    """gang + --max-concurrency: a program's samples wait in the client queue and go out
    together; in-flight requests never exceed the limit; priorities reach the server."""
    out = tmp_path / "gang"
    with StubServer(token_delay_ms=3) as url:
        rc = main(["replay", "--base-url", url, "--model", "stub", "--workload",
                   "game24-sc", "--num-programs", "4", "--request-rate", "50", "--cap",
                   "4", "--detect-at", "4", "--policy", "gang", "--max-concurrency", "4", "--base-deadline",
                   "5", "--output-dir", str(out), "--no-progress"])
        import urllib.request
        with urllib.request.urlopen(url + "/stub/log") as resp:
            log = json.loads(resp.read())
    assert rc == 0
    req, progs = read_records(out)
    assert len(progs) == 4 and len(req) == 16 and (req["error"] == "").all()
    assert _overlap(req) <= 4
    for _, g in req.groupby("program_id"):
        assert g["send_time"].max() - g["send_time"].min() < 0.05  # sent as one gang
    sent = {e["request_id"]: e["priority"] for e in log if e["request_id"].startswith(
        "dynasim-") and "probe" not in e["request_id"]}
    for row in req.itertuples():
        assert sent[f"dynasim-{row.request_id}"] == row.priority >= 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_programs"] == 4 and 0 <= summary["slo_attainment"] <= 1


def test_compare_trace_sim_against_replay(tmp_path, capsys):
    trace = _trace_file(tmp_path / "t.jsonl", 40, rate=20.0)
    with StubServer(token_delay_ms=2, first_token_delay_ms=10) as url:
        assert main(["replay", "--base-url", url, "--model", "stub", "--trace", str(trace),
                     "--goodput", "e2el:500", "--output-dir", str(tmp_path / "real"),
                     "--no-progress"]) == 0
    assert main(["simulate", "--trace", str(trace), "--profile", "distserve-opt13b-a100",
                 "--output-dir", str(tmp_path / "sim"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "sim"), str(tmp_path / "real")]) == 0
    text = capsys.readouterr().out
    assert "E2E |sim-real|/real" in text and "SLO attainment (e2el:500ms)" in text
    result = json.loads((tmp_path / "real" / "compare.json").read_text())
    assert result["matched"] == result["compared"] == 40
    assert (tmp_path / "real" / "compare.html").exists()
    # the stub's E2E is ~10 ms + 2 ms/token: the A100 profile's is far from it
    assert result["e2e_error"]["median"] > 0.0


def test_cancel_program_aborts_its_requests_only(tmp_path):
    """cancel_program closes the streams of one program (vLLM aborts a request whose
    client disconnects) and drops its queued requests; other programs run on."""
    reqs = [Request(i, 0.0, 20, 100, program_id=1 if i < 4 else 2) for i in range(6)]

    async def run():
        rep = Replay(url, "stub", make_policy("gang"), Journal(tmp_path, {}),
                     PromptBuilder(range(3, 259)), max_concurrency=5)

        async def cancel_later():
            while not rep.t0:  # the run's clock starts after its set-up (gc.collect)
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.3)
            return rep.cancel_program(1)

        t0 = time.perf_counter()
        cancelled, _ = await asyncio.gather(cancel_later(), rep.run(reqs))
        return cancelled, time.perf_counter() - t0

    with StubServer(token_delay_ms=5) as url:
        cancelled, wall = asyncio.run(run())
    df, _ = read_records(tmp_path)
    assert cancelled == 4 and len(df) == 6
    p1, p2 = df[df["program_id"] == 1], df[df["program_id"] == 2]
    assert p1["error"].str.startswith("cancelled").all()
    assert (p1["output_tokens"] < 100).all()  # their streams were cut mid-way
    assert (p2["error"] == "").all() and (p2["output_tokens"] == 100).all()
    # the 6th request found the 5 seats taken and waited for the cancel to free one
    # (wall: a hang guard only; on 2 loaded cores the stub's pace stretches)
    assert p2["client_queue_time"].max() >= 0.25 and wall < 10


def test_replay_rejects_a_non_positive_base_deadline(tmp_path, capsys, data_dir):
    rc = main(["replay", "--base-url", "http://127.0.0.1:9", "--model", "m", "--workload",
               "game24-sc", "--request-rate", "1", "--base-deadline", "0", "--output-dir",
               str(tmp_path / "o")])
    assert rc == 2
    assert "--base-deadline must be > 0" in capsys.readouterr().err


def _closing_server(drop: int):
    """A raw HTTP server on 127.0.0.1: the first ``drop`` connections are closed as
    soon as a request arrives (no response byte, like uvicorn's keep-alive timer firing
    on a request); later ones answer one streamed token."""
    seen = []

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        seen.append(1)
        if len(seen) <= drop:
            writer.close()
            return
        chunk = json.dumps({"choices": [{"text": "x"}],
                            "usage": {"completion_tokens": 1, "prompt_tokens": 2}})
        body = f"data: {chunk}\n\ndata: [DONE]\n\n".encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Connection: close\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    return handle, seen


@pytest.mark.parametrize("drop, ok", [(2, True), (3, False)])
def test_send_again_after_a_disconnect_without_answer(drop, ok):
    """A request the server dropped unanswered is sent again on a fresh connection, at
    most DISCONNECT_RETRIES times; beyond that it is a recorded error."""
    from replay.client import DISCONNECT_RETRIES, Outcome, new_session, stream_completion

    assert DISCONNECT_RETRIES == 2

    async def run():
        handle, seen = _closing_server(drop)
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, new_session() as s:
            out = await stream_completion(s, f"http://127.0.0.1:{port}/v1/completions",
                                          {"prompt": [1, 2], "max_tokens": 1}, {}, 10.0,
                                          time.perf_counter, Outcome())
        return out, len(seen)

    out, sent = asyncio.run(run())
    assert sent == 3
    if ok:
        assert out.error == "" and out.output_tokens == 1
    else:
        assert out.error.startswith("ServerDisconnectedError")
