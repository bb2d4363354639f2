"""``--output-dir`` reuse: a folder holding another run is refused unless ``--overwrite``,
which removes exactly that run's files (issue 15 item 8); a file or an unwritable path is
refused with one line."""

from __future__ import annotations

import pytest

from dynasim.cli import main
from dynasim.cli.common import prepare_output_dir
from dynasim.data_record import RUN_FILES
from dynasim.errors import InputError

TRACE = '{"timestamp": 0, "input_length": 5, "output_length": 3}\n'


def test_empty_or_missing_folder_is_accepted(tmp_path):
    assert prepare_output_dir(tmp_path / "new" / "deep", False, "simulate").is_dir()
    assert prepare_output_dir(tmp_path, False, "simulate") == tmp_path


def test_unrelated_files_do_not_block(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    prepare_output_dir(tmp_path, False, "simulate")
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("name", [*RUN_FILES, "compare.json", "compare.html"])
def test_folder_with_a_run_is_refused(tmp_path, name):
    (tmp_path / name).write_text("old")
    with pytest.raises(InputError) as exc:
        prepare_output_dir(tmp_path, False, "replay")
    assert exc.value.field == "output_dir" and exc.value.source == str(tmp_path)
    assert name in exc.value.message and "--overwrite" in exc.value.message
    assert (tmp_path / name).read_text() == "old"  # nothing removed


def test_overwrite_removes_exactly_the_run_files(tmp_path):
    for name in ("requests.jsonl", "summary.json", "compare.html", "notes.txt"):
        (tmp_path / name).write_text("old")
    prepare_output_dir(tmp_path, True, "simulate")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_existing_file_is_refused(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(InputError, match="file") as exc:
        prepare_output_dir(f, True, "simulate")
    assert exc.value.field == "output_dir"
    assert f.read_text() == "x"


def test_unwritable_path_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError) as exc:
        prepare_output_dir(tmp_path / "f" / "sub", False, "simulate")
    assert exc.value.field == "output_dir"


def _simulate(tmp_path, out, *extra) -> int:
    trace = tmp_path / "t.jsonl"
    trace.write_text(TRACE)
    return main(["simulate", "--trace", str(trace), "--profile", "distserve-opt13b-a100",
                 "--output-dir", str(out), "--no-progress", *extra])


def test_simulate_into_a_replay_folder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "requests.jsonl").write_text("{}\n")  # a replay's journal
    assert _simulate(tmp_path, out) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "field 'output_dir'" in err[0] and "requests.jsonl" in err[0]
    assert not (out / "summary.json").exists()
    assert _simulate(tmp_path, out, "--overwrite") == 0
    assert not (out / "requests.jsonl").exists()  # compare now reads this run's parquet
    assert (out / "requests.parquet").exists() and (out / "summary.json").exists()


@pytest.mark.parametrize("kind", ["file", "under-file"])
def test_simulate_output_dir_is_a_file(tmp_path, capsys, kind):
    f = tmp_path / "f"
    f.write_text("x")
    out = f if kind == "file" else f / "sub"
    assert _simulate(tmp_path, out) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "field 'output_dir'" in err[0]
