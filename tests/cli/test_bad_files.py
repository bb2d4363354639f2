"""Binary, non-UTF-8 and out-of-range input to every file reader: one line naming file,
line and field, exit status 2, never a traceback (issue 15)."""

from __future__ import annotations

import json

import pytest

from dynasim.cli import main
from dynasim.errors import InputError
from dynasim.experiments.sweep_config import load_config
from dynasim.profiles import load_profile
from dynasim.trace import read_trace
from dynasim.workloads import tot
from dynasim.workloads.catalog import read_samples

GOOD = b'{"timestamp": 0, "input_length": 5, "output_length": 3}\n'
BAD_BYTES = b"\xff\xfe\x00\x01binary"
AZURE = b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
SAMPLES = b"question_id,sample_idx,extracted_answer,gold_answer,is_correct,output_tokens\n"


def _at_line(exc: InputError, path, line: int) -> None:
    assert exc.source == str(path) and exc.line == line, str(exc)
    assert "UTF-8" in exc.message


def test_trace_jsonl_non_utf8(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(GOOD + GOOD + BAD_BYTES + b"\n")
    with pytest.raises(InputError) as exc:
        read_trace(str(path))
    _at_line(exc.value, path, 3)


def test_trace_jsonl_gzip_named_jsonl(tmp_path):
    import gzip

    path = tmp_path / "t.jsonl"
    path.write_bytes(gzip.compress(GOOD * 50))
    with pytest.raises(InputError) as exc:
        read_trace(str(path))
    assert exc.value.source == str(path) and exc.value.line == 1


def test_trace_csv_non_utf8(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(AZURE + b"2023-11-16 18:15:47.0," + BAD_BYTES + b",3\n")
    with pytest.raises(InputError) as exc:
        read_trace(str(path))
    _at_line(exc.value, path, 3)


@pytest.mark.parametrize("big", ["100000000000000000000000", "1e23"])
def test_trace_huge_length(tmp_path, big):
    path = tmp_path / "t.jsonl"
    path.write_bytes(GOOD + f'{{"timestamp": 1, "input_length": {big}, '
                            f'"output_length": 3}}\n'.encode())
    with pytest.raises(InputError) as exc:
        read_trace(str(path))
    assert exc.value.line == 2 and exc.value.field == "input_length"


def test_azure_huge_length(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(AZURE + b"2023-11-16 18:15:47.0,100000000000000000000000,3\n")
    with pytest.raises(InputError) as exc:
        read_trace(str(path))
    assert exc.value.line == 3 and exc.value.field == "ContextTokens"


def test_negative_timestamp_in_the_files_unit(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"timestamp": -5, "input_length": 5, "output_length": 3}\n')
    with pytest.raises(InputError) as exc:
        read_trace(str(path))
    assert "-5 ms" in exc.value.message and "0.005" not in exc.value.message


def test_backwards_timestamp_in_the_files_unit(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(GOOD.replace(b"0,", b"1000,", 1) + GOOD.replace(b"0,", b"500,", 1))
    with pytest.raises(InputError) as exc:
        read_trace(str(path))
    assert exc.value.line == 2 and "500 ms" in exc.value.message


def test_trailing_blank_lines_are_accepted(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(GOOD + GOOD + b"\n  \n")
    assert len(read_trace(str(path))) == 2


def test_blank_line_inside_is_still_refused(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(GOOD + b"\n" + GOOD)
    with pytest.raises(InputError) as exc:
        read_trace(str(path))
    assert exc.value.line == 2


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_sweep_config_non_utf8(tmp_path, suffix):
    path = tmp_path / f"s{suffix}"
    path.write_bytes(b"workloads: [a]\n" + BAD_BYTES + b"\n")
    with pytest.raises(InputError) as exc:
        load_config(path, {})
    _at_line(exc.value, path, 2)


def test_profile_json_non_utf8(tmp_path):
    path = tmp_path / "p.json"
    path.write_bytes(b'{\n "name": "x",\n' + BAD_BYTES + b"\n}\n")
    with pytest.raises(InputError) as exc:
        load_profile(str(path))
    _at_line(exc.value, path, 3)


def test_workload_csv_non_utf8(tmp_path):
    path = tmp_path / "w.csv"
    path.write_bytes(SAMPLES + b"q1,0,24,24,1,10\nq1,1," + BAD_BYTES + b",24,0,12\n")
    with pytest.raises(InputError) as exc:
        read_samples(path)
    _at_line(exc.value, path, 3)


def test_tot_log_non_utf8(tmp_path):
    path = tmp_path / "log.json"
    path.write_bytes(b'[\n{"idx": 1,\n"x": "' + BAD_BYTES + b'"}]\n')
    with pytest.raises(InputError) as exc:
        tot._parse(path, 0.5)
    _at_line(exc.value, path, 3)


def test_zero_token_samples_count_as_one_token(tmp_path):
    """An empty completion still generated one token (EOS): accepted, counted as 1, and
    said in the workload notes."""
    path = tmp_path / "w.csv"
    path.write_bytes(SAMPLES + b"q1,0,24,24,1,10\nq1,1,,24,0,0\nq2,0,3,24,0,7\n")
    w = read_samples(path)
    calls = {p.question_id: p.samples for p in w.programs}
    assert [c.output_tokens for c in calls["q1"]] == [10, 1]
    assert "1 sample" in w.notes and "0 output tokens" in w.notes


def test_negative_tokens_still_refused(tmp_path):
    path = tmp_path / "w.csv"
    path.write_bytes(SAMPLES + b"q1,0,24,24,1,-1\n")
    with pytest.raises(InputError) as exc:
        read_samples(path)
    assert exc.value.line == 2 and exc.value.field == "output_tokens"


def test_cli_binary_trace_is_exit_2(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    path.write_bytes(BAD_BYTES)
    assert main(["simulate", "--trace", str(path), "--profile", "distserve-opt13b-a100",
                 "--output-dir", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"{path}:1: " in err[0]


def test_json_round_trip_unchanged(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"timestamp": 2.5, "input_length": 5, "output_length": 3})
                    + "\n")
    assert read_trace(str(path)).frame["arrival_time"].iloc[0] == 0.0025
