"""Trace readers and writer, and named datasets resolved through DYNASIM_DATA_DIR."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from dynasim import datasets
from dynasim.errors import InputError
from dynasim.trace import read_azure, read_mooncake, read_trace, write_mooncake

MOONCAKE_LINES = [
    {"timestamp": 0, "input_length": 600, "output_length": 12, "hash_ids": [0, 1]},
    {"timestamp": 1500, "input_length": 30, "output_length": 1, "hash_ids": [0, 2],
     "session": "s1"},
    {"timestamp": 1500, "input_length": 1025, "output_length": 200, "hash_ids": [3, 4, 5],
     "session": "s2"},
    {"timestamp": 3250.5, "input_length": 7, "output_length": 9, "hash_ids": [6],
     "session": "s1"},
]
# every line has every key (as in the published Mooncake traces)
UNIFORM_LINES = [{**d, "session": d.get("session", "s0")} for d in MOONCAKE_LINES]


def _jsonl(lines) -> str:
    return "".join(json.dumps(d) + "\n" for d in lines)


def test_mooncake_reader_units_ids_and_extra_keys(write):
    tr = read_mooncake(write("t.jsonl", _jsonl(UNIFORM_LINES)))
    f = tr.frame
    assert len(tr) == 4
    assert f.index.name == "request_id"
    assert list(f.index) == [0, 1, 2, 3]
    np.testing.assert_allclose(f["arrival_time"], [0.0, 1.5, 1.5, 3.2505], rtol=0,
                               atol=1e-12)
    assert list(f["prompt_tokens"]) == [600, 30, 1025, 7]
    assert list(f["output_tokens"]) == [12, 1, 200, 9]
    assert [list(x) for x in f["hash_ids"]] == [[0, 1], [0, 2], [3, 4, 5], [6]]
    assert list(f["session"]) == ["s0", "s1", "s2", "s1"]


def test_mooncake_round_trip(write, tmp_path):
    src = write("t.jsonl", _jsonl(UNIFORM_LINES))
    out = tmp_path / "back.jsonl"
    tr = read_mooncake(src)
    write_mooncake(tr, out)
    # same objects, key for key (1500 == 1500.0)
    back_lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert back_lines == UNIFORM_LINES
    pd.testing.assert_frame_equal(read_mooncake(out).frame, tr.frame)


def test_mooncake_round_trip_key_on_some_lines_only(write, tmp_path):
    """A key absent from some lines (``session`` on line 1, ``hash_ids`` on line 2)
    must stay absent when written back, not become NaN."""
    lines = [dict(d) for d in MOONCAKE_LINES]
    del lines[1]["hash_ids"]
    src = write("t.jsonl", _jsonl(lines))
    out = tmp_path / "back.jsonl"
    write_mooncake(read_mooncake(src), out)
    assert [json.loads(x) for x in out.read_text().splitlines()] == lines
    assert len(read_mooncake(out)) == 4


def test_azure_reader_relative_seconds(write):
    tr = read_azure(write("a.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                   "2023-11-16 18:15:46.6805900,374,44\n"
                                   "2023-11-16 18:15:50.9951690,396,109\n"
                                   "2023-11-16 18:16:46.6805900,879,1\n"))
    f = tr.frame
    assert f.index.name == "request_id" and list(f.index) == [0, 1, 2]
    np.testing.assert_allclose(f["arrival_time"], [0.0, 4.314579, 60.0], rtol=0,
                               atol=1e-9)
    assert list(f["prompt_tokens"]) == [374, 396, 879]
    assert list(f["output_tokens"]) == [44, 109, 1]


def test_read_trace_by_suffix(write):
    assert len(read_trace(str(write("x.jsonl", _jsonl(UNIFORM_LINES))))) == 4
    with pytest.raises(InputError, match="unknown trace format"):
        read_trace(str(write("x.txt", "hello\n")))


@pytest.mark.parametrize("name, rows", [("azure-conv-2023", 19366),
                                        ("azure-code-2023", 8819),
                                        ("mooncake-conversation", 12031)])
def test_real_traces_by_name(data_dir, name, rows):
    tr = read_trace(name)
    f = tr.frame
    assert tr.source == name
    assert len(tr) == rows
    assert list(f.index) == list(range(rows))
    t = f["arrival_time"].to_numpy()
    assert t[0] == 0.0 and np.all(np.diff(t) >= 0)
    assert 3000 < t[-1] < 3700  # each is a one-hour trace, in seconds (not ms)
    assert (f["prompt_tokens"] >= 1).all() and (f["output_tokens"] >= 1).all()
    if name.startswith("mooncake"):
        assert all(isinstance(x, list) and x for x in f["hash_ids"].head(100))


def test_dataset_resolved_from_mirror(data_dir, tmp_path, monkeypatch):
    entry = datasets.REGISTRY["azure-code-2023"]
    mirror = tmp_path / "mirror"
    (mirror / entry.mirror).parent.mkdir(parents=True)
    shutil.copyfile(data_dir / entry.mirror, mirror / entry.mirror)
    monkeypatch.setenv("DYNASIM_DATA_DIR", str(mirror))
    assert datasets.fetch("azure-code-2023") == mirror / entry.mirror
    assert len(read_trace("azure-code-2023")) == 8819


def test_corrupted_mirror_copy_is_an_error(write, tmp_path, monkeypatch):
    entry = datasets.REGISTRY["azure-code-2023"]
    bad = write(f"mirror/{entry.mirror}", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                          "2023-11-16 18:15:46.6805900,374,44\n")
    monkeypatch.setenv("DYNASIM_DATA_DIR", str(tmp_path / "mirror"))
    monkeypatch.setenv("DYNASIM_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(InputError) as exc:
        datasets.fetch("azure-code-2023")
    assert exc.value.source == str(bad)
    assert str(bad) in str(exc.value) and "sha256" in str(exc.value)
    with pytest.raises(InputError, match="sha256"):
        read_trace("azure-code-2023")
    assert not (tmp_path / "cache").exists()  # no silent fallback to a download


def test_unknown_dataset_name():
    with pytest.raises(InputError) as exc:
        datasets.fetch("no-such-dataset")
    assert exc.value.source == "no-such-dataset"
    assert "azure-conv-2023" in str(exc.value)  # lists the known names
    with pytest.raises(InputError, match="not a dataset name"):
        read_trace("no-such-dataset")
    with pytest.raises(InputError, match="not a request trace"):
        read_trace("distserve-max-num-tokens")


# ------------------------------------------------- columnar JSONL reading (issue 19)
COLUMNAR_CASES = {
    "uniform": _jsonl(UNIFORM_LINES),
    "key on some lines": _jsonl(MOONCAKE_LINES),
    "hash_ids on some lines": _jsonl([{k: v for k, v in d.items()
                                       if k != "hash_ids" or i % 2} for i, d in
                                      enumerate(UNIFORM_LINES)]),
    "float lengths, int and bool keys": (
        '{"timestamp": 0.5, "input_length": 5.0, "output_length": 3, "turn": 1}\n'
        '{"timestamp": 2, "input_length": 7, "output_length": 4.0, "ok": true}\n'
        '{"timestamp": 2, "input_length": 1, "output_length": 1, "turn": 2, "w": 0.5}\n'),
    "crlf and trailing blanks": '{"timestamp": 1, "input_length": 5, "output_length": 3}'
                                '\r\n{"timestamp": 1, "input_length": 2, "output_length": 1}'
                                '\r\n\n  \n',
}


@pytest.mark.parametrize("case", list(COLUMNAR_CASES))
def test_columnar_reader_equals_line_reader(write, case):
    from dynasim.trace import _read_mooncake_columns, _read_mooncake_lines

    text = COLUMNAR_CASES[case]
    fast = _read_mooncake_columns(text, "t.jsonl")
    assert fast is not None, "a good file must take the columnar path"
    pd.testing.assert_frame_equal(fast.frame, _read_mooncake_lines(text, "t.jsonl").frame)
    pd.testing.assert_frame_equal(read_mooncake(write("t.jsonl", text)).frame, fast.frame)


def test_columnar_reader_on_real_mooncake_trace(data_dir):
    from dynasim.trace import _read_mooncake_columns, _read_mooncake_lines

    text = (data_dir / datasets.REGISTRY["mooncake-conversation"].mirror).read_text()
    fast = _read_mooncake_columns(text, "m.jsonl")
    assert fast is not None and len(fast) == 12031
    pd.testing.assert_frame_equal(fast.frame, _read_mooncake_lines(text, "m.jsonl").frame)


GOOD_LINE = '{"timestamp": 0, "input_length": 5, "output_length": 3}\n'
BAD_CASES = {
    "NaN length": '{"timestamp": 1, "input_length": NaN, "output_length": 3}\n',
    "bool timestamp": '{"timestamp": true, "input_length": 5, "output_length": 3}\n',
    "string length": '{"timestamp": 1, "input_length": "5", "output_length": 3}\n',
    "zero length": '{"timestamp": 1, "input_length": 5, "output_length": 0}\n',
    "fractional length": '{"timestamp": 1, "input_length": 5.5, "output_length": 3}\n',
    "huge length": '{"timestamp": 1, "input_length": 1e23, "output_length": 3}\n',
    "null field": '{"timestamp": 1, "input_length": null, "output_length": 3}\n',
    "missing field": '{"timestamp": 1, "output_length": 3}\n',
    "null hash_ids": '{"timestamp": 1, "input_length": 5, "output_length": 3, '
                     '"hash_ids": null}\n',
    "float hash_ids": '{"timestamp": 1, "input_length": 5, "output_length": 3, '
                      '"hash_ids": [1.5]}\n',
    "two objects": '{"timestamp": 1, "input_length": 5, "output_length": 3} '
                   '{"timestamp": 2, "input_length": 5, "output_length": 3}\n',
    "not an object": '[1, 2]\n',
    "blank inside": '\n' + GOOD_LINE,
    "backwards": '{"timestamp": -1, "input_length": 5, "output_length": 3}\n',
    "bad hash_ids before a backwards timestamp": (
        '{"timestamp": 5, "input_length": 5, "output_length": 3, "hash_ids": [true]}\n'
        '{"timestamp": 1, "input_length": 5, "output_length": 3}\n'),
    "key named like a column": '{"timestamp": 1, "input_length": 5, "output_length": 3, '
                               '"prompt_tokens": "x"}\n',
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_row_found_after_columnar_check(write, case):
    """The same one-line error (file, line, field) as the line-by-line reader."""
    from dynasim.trace import _read_mooncake_lines

    text = GOOD_LINE * 3 + BAD_CASES[case] + GOOD_LINE.replace("0,", "9,", 1)
    path = write("t.jsonl", text)
    try:
        want = _read_mooncake_lines(text, str(path))
    except InputError as exc:
        want = exc
    if not isinstance(want, InputError):  # accepted by both, the same table
        pd.testing.assert_frame_equal(read_mooncake(path).frame, want.frame)
        return
    with pytest.raises(InputError) as got:
        read_mooncake(path)
    assert str(got.value) == str(want)
    assert got.value.line in (4, 5) and got.value.source == str(path)


def test_nested_extra_keys_kept_as_the_line_reader_keeps_them(write):
    text = '{"timestamp": 0, "input_length": 5, "output_length": 3, "meta": {"a": [1]}}\n'
    assert read_mooncake(write("t.jsonl", text)).frame["meta"].iloc[0] == {"a": [1]}


def test_fast_writer_writes_what_json_dumps_writes(tmp_path):
    """A frame of the three base columns is written without json.dumps per line; the
    text must be the very text the general path writes (json.dumps of each object)."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"arrival_time": np.cumsum(rng.exponential(0.37, 500)),
                          "prompt_tokens": rng.integers(1, 5000, 500),
                          "output_tokens": rng.integers(1, 900, 500)})
    frame.loc[3, "arrival_time"] = frame.loc[2, "arrival_time"]  # a tie
    frame.index.name = "request_id"
    from dynasim.trace import Trace

    out = tmp_path / "fast.jsonl"
    write_mooncake(Trace("x", frame), out)
    want = "".join(json.dumps({"timestamp": round(t * 1000.0, 3), "input_length": int(p),
                               "output_length": int(o)}) + "\n"
                   for t, p, o in frame.itertuples(index=False))
    assert out.read_text() == want
    back = read_mooncake(out).frame
    np.testing.assert_allclose(back["arrival_time"], frame["arrival_time"], atol=1e-6)
