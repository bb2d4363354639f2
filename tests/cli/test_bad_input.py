"""Bad input through the CLI: exit status 2 and one line naming file, line and field."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from dynasim.cli import main

PROFILE = "distserve-opt13b-a100"
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith("dynasim: error: ")
    return lines[0]


def _simulate(trace, tmp_path, *extra, profile=PROFILE) -> int:
    return main(["simulate", "--trace", str(trace), "--profile", str(profile),
                 "--output-dir", str(tmp_path / "out"), "--no-progress", *extra])


def _fails(capsys, tmp_path, trace, *extra, profile=PROFILE) -> str:
    assert _simulate(trace, tmp_path, *extra, profile=profile) == 2
    assert not (tmp_path / "out" / "summary.json").exists()
    return _error_line(capsys)


def test_mooncake_missing_field(write, tmp_path, capsys):
    path = write("t.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 3}\n'
                            '{"timestamp": 10, "input_length": 5, "output_length": 3}\n'
                            '{"timestamp": 20, "input_length": 5}\n')
    msg = _fails(capsys, tmp_path, path)
    assert f"{path}:3: field 'output_length': " in msg


def test_mooncake_negative_length(write, tmp_path, capsys):
    path = write("t.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 3}\n'
                            '{"timestamp": 10, "input_length": -4, "output_length": 3}\n')
    msg = _fails(capsys, tmp_path, path)
    assert f"{path}:2: field 'input_length': " in msg and "-4" in msg


def test_mooncake_nan_length(write, tmp_path, capsys):
    path = write("t.jsonl", '{"timestamp": 0, "input_length": NaN, "output_length": 3}\n')
    msg = _fails(capsys, tmp_path, path)
    assert f"{path}:1: field 'input_length': " in msg and "nan" in msg.lower()


def test_mooncake_timestamp_goes_backwards(write, tmp_path, capsys):
    path = write("t.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 3}\n'
                            '{"timestamp": 1000, "input_length": 5, "output_length": 3}\n'
                            '{"timestamp": 500, "input_length": 5, "output_length": 3}\n'
                            '{"timestamp": 2000, "input_length": 5, "output_length": 3}\n')
    msg = _fails(capsys, tmp_path, path)
    assert f"{path}:3: field 'timestamp': " in msg and "backwards" in msg


def test_empty_file(write, tmp_path, capsys):
    path = write("t.jsonl", "")
    msg = _fails(capsys, tmp_path, path)
    assert str(path) in msg and "empty" in msg


def test_azure_missing_column(write, tmp_path, capsys):
    path = write("a.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.68,374\n")
    msg = _fails(capsys, tmp_path, path)
    assert f"{path}:1: field 'GeneratedTokens': " in msg


def test_azure_non_numeric_tokens(write, tmp_path, capsys):
    path = write("a.csv", HEADER + "2023-11-16 18:15:46.68,374,44\n"
                                   "2023-11-16 18:15:47.00,396,many\n")
    msg = _fails(capsys, tmp_path, path)
    assert f"{path}:3: field 'GeneratedTokens': " in msg and "'many'" in msg


def test_unknown_profile_name(write, tmp_path, capsys):
    path = write("t.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 3}\n')
    msg = _fails(capsys, tmp_path, path, profile="no-such-profile")
    assert "no-such-profile" in msg and "unknown profile" in msg
    assert PROFILE in msg  # lists the shipped ones


def test_unknown_trace_name(tmp_path, capsys):
    msg = _fails(capsys, tmp_path, "no-such-trace")
    assert "dynasim: error: no-such-trace: " in msg and "azure-conv-2023" in msg


@pytest.mark.parametrize("value, shown", [("ttft:-5", "'-5'"), ("ttft:abc", "'abc'"),
                                          ("latency:100", "'latency:100'"),
                                          ("ttft", "'ttft'")])
def test_bad_goodput(write, tmp_path, capsys, value, shown):
    path = write("t.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 3}\n')
    msg = _fails(capsys, tmp_path, path, "--goodput", "e2el:1000", value)
    assert msg.startswith("dynasim: error: field 'goodput': ") and shown in msg


def test_profile_schema_error(write, tmp_path, capsys):
    shipped = json.loads((resources.files("dynasim") / "profiles" / f"{PROFILE}.json")
                         .read_text())
    shipped["kv_capacity_tokens"] = -5
    prof = write("bad-profile.json", json.dumps(shipped, indent=2))
    trace = write("t.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 3}\n')
    msg = _fails(capsys, tmp_path, trace, profile=prof)
    assert f"{prof}: field 'kv_capacity_tokens': " in msg
