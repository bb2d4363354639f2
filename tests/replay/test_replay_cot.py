"""Long chain of thought in the replay harness: the main stream with its logged length,
probes at the logged positions prompted with the tokens generated so far, the main
stream closed when the probes agree. The stub paces tokens (so positions are
checkable); test_replay_vllm.py runs the same against the real server."""

from __future__ import annotations

from dynasim.cli import main
from replay.journal import read_records
from replay.testing.stub import StubServer
from tests.workloads.cot_fixture import write_cot_folder


def test_dynasor_cot_replay_probes_and_stops_the_chain(tmp_path):
    folder = write_cot_folder(tmp_path / "cot")
    out = tmp_path / "run"
    with StubServer(token_delay_ms=4) as url:
        rc = main(["replay", "--base-url", url, "--model", "stub", "--workload", str(folder),
                   "--policy", "fcfs+dynasor-cot", "--certainty-window", "2",
                   "--request-rate", "50", "--base-deadline", "30", "--output-dir", str(out),
                   "--no-progress"])
    assert rc == 0
    req, progs = read_records(out)
    progs = progs.set_index("question_id")
    # problem 1 (400 tokens): probes at 64, 128, 192 agree at 128/192 -> stop at 192
    p1 = progs.loc["org/Model-A:ds1:1#0"]
    assert p1["answer"] == "0.5" and p1["correct"] and p1["aborted_calls"] >= 1
    r1 = req[req["program_id"] == p1["program_id"]].sort_values("request_id")
    main_, probes = r1.iloc[0], r1.iloc[1:]
    assert main_["error"] == "aborted" and 192 <= main_["output_tokens"] < 400
    sent = probes[probes["error"] == ""]
    assert sorted(sent["prompt_tokens"])[:3] == [50 + 64 + 1, 50 + 128 + 1, 50 + 192 + 1]
    # problem 3 ends (100 tokens) before any agreement: its final answer
    p3 = progs.loc["org/Model-A:ds1:3#0"]
    assert p3["answer"] == "C"
