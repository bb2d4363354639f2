"""Failures of a live run are neither lost nor silent (issue 15): requests longer than the
server's context, exceptions that end a run, SIGTERM, a run where most requests failed,
a bad or unused ``--dynasor`` object, and the preemption count a replay cannot measure.
All against the fault stub (replay.testing.stub), which injects what vLLM cannot show on
demand."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
from pathlib import Path

import pandas as pd
import pytest

from dynasim.cli import main
from dynasim.policies import make_policy
from dynasim.request import Request
from replay.dispatcher import Replay
from replay.journal import Journal, read_records
from replay.prompts import PromptBuilder
from replay.testing.stub import StubServer
from tests.helpers import interrupt_replay


def _write_trace(path: Path, lengths: list[tuple[int, int]], gap_ms: int = 50) -> Path:
    with open(path, "w") as f:
        for i, (prompt, output) in enumerate(lengths):
            f.write(json.dumps({"timestamp": i * gap_ms, "input_length": prompt,
                                "output_length": output}) + "\n")
    return path


def _replay(url: str, trace: Path, out: Path, *extra: str) -> int:
    return main(["replay", "--base-url", url, "--model", "stub", "--trace", str(trace),
                 "--output-dir", str(out), "--no-progress", *extra])


@pytest.mark.parametrize("tokens", [3_000_000, 2_000_000_000])
def test_oversized_request_is_rejected_before_its_prompt_is_built(tmp_path, capsys, tokens):
    """prompt + output > the server's max_model_len (/v1/models): failed with the
    simulator's reason, never built nor sent; the other requests are measured."""
    trace = _write_trace(tmp_path / "t.jsonl", [(20, 8), (tokens, 8), (30, 8)])
    out = tmp_path / "o"
    stub = StubServer(max_model_len=4096)
    with stub as url:
        rc = _replay(url, trace, out)
        sent = [e["request_id"] for e in stub.request_log()]
    assert rc == 0, capsys.readouterr().err
    assert "dynasim-1" not in sent  # the oversized prompt never went out
    df = pd.read_parquet(out / "requests.parquet")
    assert list(df["request_id"]) == [0, 1, 2]
    bad = df.set_index("request_id").loc[1]
    assert bad["error"] == (f"prompt + output = {tokens + 8} tokens exceeds "
                            "max_model_len 4096")
    assert bad["http_status"] == 0
    assert (df.loc[df["request_id"] != 1, "error"] == "").all()


def test_an_exception_that_ends_the_run_loses_no_finished_row(tmp_path):
    """Whatever exception ends a run, what finished is in requests.parquet, what was in
    flight is recorded with its error, and summary.json agrees with the log."""
    reqs = [Request(i, 0.05 * i, 20, 8) for i in range(6)]
    with StubServer(token_delay_ms=5) as url:  # ~40 ms a request: 0 done before 4
        journal = Journal(tmp_path, {})
        rep = Replay(url, "stub", make_policy("fcfs"), journal, PromptBuilder(range(3, 259)))
        arrive = rep._arrive

        def boom(req: Request, scheduled: float) -> None:
            if req.request_id == 4:
                raise MemoryError("injected")
            arrive(req, scheduled)

        rep._arrive = boom
        with pytest.raises(MemoryError):
            asyncio.run(rep.run(reqs))
    df = pd.read_parquet(tmp_path / "requests.parquet")
    logged, _ = read_records(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert sorted(df["request_id"]) == sorted(logged["request_id"]) == [0, 1, 2, 3]
    assert df.loc[df["request_id"] == 0, "error"].item() == ""
    assert summary["completed"] + summary["failed"] == 4
    assert summary["interrupted"] is True and summary["partial"] is True


def test_an_empty_journal_writes_a_summary(tmp_path):
    """A run that ends before any request finished still writes its tables."""
    summary = Journal(tmp_path, {}).write(final=False, extra={"interrupted": True})
    assert summary["errors"] == {} and summary["completed"] == summary["failed"] == 0
    assert len(pd.read_parquet(tmp_path / "requests.parquet")) == 0


def test_a_failing_send_is_recorded_and_the_run_goes_on(tmp_path):
    """An exception while one request is being sent (its prompt, say) fails that request
    with the reason; the run does not hang and the others are measured."""
    reqs = [Request(i, 0.01 * i, 20, 4) for i in range(4)]
    with StubServer() as url:
        journal = Journal(tmp_path, {})
        rep = Replay(url, "stub", make_policy("fcfs"), journal, PromptBuilder(range(3, 259)))
        prompt = rep._prompt

        def bad_prompt(req: Request) -> list[int]:
            if req.request_id == 2:
                raise MemoryError("injected")
            return prompt(req)

        rep._prompt = bad_prompt
        summary = asyncio.run(asyncio.wait_for(rep.run(reqs), 30))
    df = pd.read_parquet(tmp_path / "requests.parquet").set_index("request_id")
    assert summary["completed"] == 3 and summary["failed"] == 1
    assert df.loc[2, "error"] == "client error: MemoryError: injected"


def test_sigterm_leaves_a_readable_partial_result(tmp_path):
    lengths = [(20 + i % 7, 16) for i in range(400)]
    trace = _write_trace(tmp_path / "t.jsonl", lengths, gap_ms=25)
    out = tmp_path / "run"
    returncode, err = interrupt_replay(trace, out, signal.SIGTERM)
    assert returncode == 128 + signal.SIGTERM, err
    assert b"interrupted" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["partial"] is True
    logged, _ = read_records(out)
    assert len(pd.read_parquet(out / "requests.parquet")) == len(logged)
    assert summary["completed"] + summary["failed"] == len(logged) >= 20


def test_preemptions_are_not_printed_as_zero_when_unmeasured(tmp_path, capsys):
    """The stub exports no /metrics: the replay cannot know the server's preemptions."""
    trace = _write_trace(tmp_path / "t.jsonl", [(20, 8)] * 3)
    with StubServer() as url:
        assert _replay(url, trace, tmp_path / "o") == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "Preemptions" in x)
    assert line.split()[-1] == "n/a"
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["num_preemptions"] is None


# 4 of 6 requests fail: longer than the stub's context (4096 tokens)
_MOSTLY_FAILED = [(20, 8), (5000, 8), (5000, 8), (20, 8), (5000, 8), (5000, 8)]


def test_a_mostly_failed_run_prints_its_errors_and_exits_non_zero(tmp_path, capsys):
    trace = _write_trace(tmp_path / "t.jsonl", _MOSTLY_FAILED, gap_ms=10)
    with StubServer(max_model_len=4096) as url:
        rc = _replay(url, trace, tmp_path / "o")
    cap = capsys.readouterr()
    assert rc == 2
    assert "4 of 6 requests failed" in cap.err and "max_failed_fraction" in cap.err
    assert len(cap.err.strip().splitlines()) == 1, cap.err  # one line
    counts = {x.split(None, 1)[1]: int(x.split()[0]) for x in cap.out.splitlines()
              if x.startswith("  ") and x.split()[0].isdigit()}
    assert counts == {"prompt + output = 5008 tokens exceeds max_model_len 4096": 4}, cap.out
    assert len(pd.read_parquet(tmp_path / "o" / "requests.parquet")) == 6  # nothing lost


def test_failures_under_the_allowed_fraction_are_listed_and_exit_zero(tmp_path, capsys):
    trace = _write_trace(tmp_path / "t.jsonl", _MOSTLY_FAILED, gap_ms=10)
    with StubServer(max_model_len=4096) as url:
        rc = _replay(url, trace, tmp_path / "o", "--max-failed-fraction", "0.7")
    assert rc == 0
    assert "exceeds max_model_len" in capsys.readouterr().out


def test_a_bad_dynasor_object_is_refused_before_any_request(tmp_path, capsys):
    trace = _write_trace(tmp_path / "t.jsonl", [(20, 8)])
    rc = _replay("http://127.0.0.1:9", trace, tmp_path / "o", "--dynasor",
                 '{"probe_interval": 0}')
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "field 'dynasor.probe_interval'" in err and ">= 1" in err
    assert not (tmp_path / "o").exists()


def test_dynasor_against_a_plain_server_is_said_once(tmp_path, capsys):
    trace = _write_trace(tmp_path / "t.jsonl", [(20, 8)] * 4, gap_ms=10)
    with StubServer() as url:
        assert _replay(url, trace, tmp_path / "o", "--dynasor", "{}") == 0
    err = capsys.readouterr().err
    assert err.count("no dynasor report") == 1, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["dynasor_reported"] is False


def test_the_start_up_heap_is_frozen_while_dispatching(tmp_path):
    """Issue 15: a gen-2 collection over the start-up heap (pandas, pyarrow, prompts)
    stalled dispatch by ~100 ms; the run freezes it after set-up and unfreezes after."""
    frozen: list[int] = []
    reqs = [Request(i, 0.01 * i, 20, 4) for i in range(3)]
    with StubServer() as url:
        rep = Replay(url, "stub", make_policy("fcfs"), Journal(tmp_path, {}),
                     PromptBuilder(range(3, 259)),
                     progress=lambda *_: frozen.append(gc.get_freeze_count()))
        asyncio.run(rep.run(reqs))
    assert len(frozen) == 3 and min(frozen) > 10_000
    assert gc.get_freeze_count() == 0
