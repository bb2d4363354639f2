"""``dynasim compare`` refuses unrelated runs, warns about partial ones, reports bad
files in one line, and replaces its own output cleanly; ``dynasim replay`` refuses to
write over another run unless ``--overwrite`` (issue 15 items 8 and 9).

The run folders are written here: a simulated run as ``dynasim simulate`` writes it
(``requests.parquet``, ``summary.json``) and a replayed one as :class:`Journal` does
(``requests.jsonl`` with the replay columns, ``summary.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from dynasim.cli import main
from dynasim.data_record import COLUMNS, with_latencies
from replay.journal import DYNASOR_DEFAULTS, EXTRA
from replay.testing.stub import StubServer

N = 6
META = {"trace": "t.jsonl", "seed": 0}


@pytest.fixture(autouse=True)
def _no_png(monkeypatch):
    """HTML figures only (no Chromium start per compare): fast, and the same anywhere."""
    from dynasim.experiments import plots

    monkeypatch.setattr(plots, "_browser", lambda: None)


def _rows(n: int = N, **change) -> list[dict]:
    """Request rows 0..n-1: prompt 40+i, output 10+i, E2E 0.5 s (+ per-id changes:
    ``change={i: {column: value}}`` through keyword ``c<i>``)."""
    rows = []
    for i in range(n):
        r = {"request_id": i, "arrival_time": 0.1 * i, "first_token_time": 0.1 * i + 0.05,
             "finish_time": 0.1 * i + 0.5, "prompt_tokens": 40 + i,
             "output_tokens": 10 + i, "num_preemptions": 0, "error": "",
             "program_id": -1, "cached_tokens": 0}
        r.update(change.get(f"c{i}", {}))
        rows.append(r)
    return rows


def sim_run(d: Path, rows: list[dict], **meta) -> Path:
    """A simulated run folder (parquet, like ``dynasim simulate``)."""
    d.mkdir(parents=True, exist_ok=True)
    with_latencies(pd.DataFrame(rows))[COLUMNS].to_parquet(d / "requests.parquet",
                                                            index=False)
    (d / "summary.json").write_text(json.dumps(dict(META, **meta)))
    return d


def real_run(d: Path, rows: list[dict], **meta) -> Path:
    """A replayed run folder (JSONL journal with the replay columns, like Journal)."""
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "requests.jsonl", "w") as f:
        for r in rows:
            extra = {c: 0.0 for c in EXTRA if c not in DYNASOR_DEFAULTS}
            extra.update(itl=[], priority=-1, http_status=200, usage_prompt_tokens=-1,
                         asked_output_tokens=r["output_tokens"])
            if r["error"]:
                extra["http_status"] = 500
            f.write(json.dumps({**extra, **r}) + "\n")
    (d / "summary.json").write_text(json.dumps({**META, "partial": False, **meta}))
    return d


def compare(tmp_path, capsys, sim: Path, real: Path) -> tuple[int, list[str], str]:
    capsys.readouterr()
    rc = main(["compare", str(sim), str(real)])
    out = capsys.readouterr()
    return rc, out.err.splitlines(), out.out


def test_matching_runs_are_compared(tmp_path, capsys):
    rc, err, out = compare(tmp_path, capsys, sim_run(tmp_path / "s", _rows()),
                           real_run(tmp_path / "r", _rows()))
    assert rc == 0 and err == [] and "6 requests compared" in out


@pytest.mark.parametrize("field, sim_meta, real_meta", [
    ("trace", {"trace": "azure-conv-2023"}, {"trace": "t.jsonl"}),
    ("seed", {"seed": 1}, {"seed": 0}),
    ("workload", {"trace": None, "workload": "game24-sc"}, {}),
    ("request_rate", {"request_rate": 1.5}, {"request_rate": "trace"}),
    ("program_rate", {"program_rate": 2.0}, {"program_rate": 4.0}),
    ("burstiness", {"burstiness": 1.0}, {"burstiness": 0.5}),
])
def test_runs_of_different_inputs_are_refused(tmp_path, capsys, field, sim_meta,
                                              real_meta):
    sim = sim_run(tmp_path / "s", _rows(), **sim_meta)
    real = real_run(tmp_path / "r", _rows(), **real_meta)
    rc, err, _ = compare(tmp_path, capsys, sim, real)
    assert rc == 2 and len(err) == 1 and f"field '{field}'" in err[0], err
    assert not (real / "compare.json").exists()


def test_same_trace_named_by_another_path_is_accepted(tmp_path, capsys):
    sim = sim_run(tmp_path / "s", _rows(), trace="/data/traces/t.jsonl")
    rc, err, _ = compare(tmp_path, capsys, sim, real_run(tmp_path / "r", _rows()))
    assert rc == 0 and err == []


@pytest.mark.parametrize("field, change", [
    ("prompt_tokens", {"c3": {"prompt_tokens": 99}}),
    ("output_tokens", {"c4": {"output_tokens": 99}}),
])
def test_token_count_mismatch_is_refused_naming_the_request(tmp_path, capsys, field,
                                                             change):
    sim = sim_run(tmp_path / "s", _rows(**change))
    rc, err, _ = compare(tmp_path, capsys, sim, real_run(tmp_path / "r", _rows()))
    assert rc == 2 and len(err) == 1, err
    req = change.popitem()[0][1:]
    assert f"field '{field}'" in err[0] and f"request {req}" in err[0] and "99" in err[0]


def test_cut_and_failed_replay_requests_are_not_mismatches(tmp_path, capsys):
    """A request a Dynasor proxy stopped early (fewer output tokens than asked) and one
    that failed (0 output tokens) still belong to the same trace."""
    rows = _rows()
    real = real_run(tmp_path / "r", rows)
    lines = [json.loads(x) for x in (real / "requests.jsonl").read_text().splitlines()]
    lines[1]["output_tokens"] = 3  # stopped early; asked_output_tokens is still 11
    lines[2].update(output_tokens=0, error="HTTP 500", first_token_time=None)
    (real / "requests.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    rc, err, out = compare(tmp_path, capsys, sim_run(tmp_path / "s", rows), real)
    assert rc == 0 and err == [] and "5 requests compared" in out


@pytest.mark.parametrize("partial", ["interrupted", "partial", "fewer"])
def test_partial_replay_is_warned_about(tmp_path, capsys, partial):
    meta = {"interrupted": True} if partial == "interrupted" else \
        {"partial": True} if partial == "partial" else {}
    real = real_run(tmp_path / "r", _rows(4), **meta)
    rc, err, _ = compare(tmp_path, capsys, sim_run(tmp_path / "s", _rows()), real)
    assert rc == 0 and len(err) == 1, err
    assert "warning" in err[0] and "2 requests" in err[0] and str(real) in err[0]
    if partial != "fewer":
        assert partial in err[0]
    assert json.loads((real / "compare.json").read_text())["warnings"] == [
        err[0].removeprefix("dynasim: warning: ")]


def test_fewer_simulated_requests_are_warned_about(tmp_path, capsys):
    rc, err, _ = compare(tmp_path, capsys, sim_run(tmp_path / "s", _rows(5)),
                         real_run(tmp_path / "r", _rows()))
    assert rc == 0 and len(err) == 1 and "1 request " in err[0] and "s" in err[0]


@pytest.mark.parametrize("name, content", [
    ("requests.jsonl", b"\x00\xff\xfe binary \x89PNG"),
    ("requests.jsonl", '{"request_id": 0}\n'.encode("latin-1") + b"caf\xe9\n"),
    ("summary.json", b"\xff\xfe\x00\x01"),
    ("summary.json", b"[1, 2"),
    ("requests.parquet", b"PAR1 not really parquet"),
])
def test_unreadable_files_end_in_one_line(tmp_path, capsys, name, content):
    sim = sim_run(tmp_path / "s", _rows())
    real = real_run(tmp_path / "r", _rows())
    bad = (sim if name == "requests.parquet" else real) / name
    bad.write_bytes(content)
    rc, err, _ = compare(tmp_path, capsys, sim, real)
    assert rc == 2 and len(err) == 1 and str(bad) in err[0], err


def test_a_bad_line_inside_the_journal_is_not_skipped(tmp_path, capsys):
    """Only a cut last line (a crash mid-write) may be dropped; a bad line inside the
    journal would silently lose the measurements after it."""
    real = real_run(tmp_path / "r", _rows())
    lines = (real / "requests.jsonl").read_text().splitlines()
    lines[2] = lines[2][:20]
    (real / "requests.jsonl").write_text("\n".join(lines) + "\n")
    rc, err, _ = compare(tmp_path, capsys, sim_run(tmp_path / "s", _rows()), real)
    assert rc == 2 and len(err) == 1 and f"{real / 'requests.jsonl'}:3" in err[0], err
    (real / "requests.jsonl").write_text("\n".join(lines[:2] + lines[3:] + [lines[2]]))
    rc, err, _ = compare(tmp_path, capsys, sim_run(tmp_path / "s", _rows()), real)
    assert rc == 0 and len(err) == 1 and "1 request " in err[0]  # cut last: a warning


def test_a_second_compare_replaces_its_own_files(tmp_path, capsys):
    sim = sim_run(tmp_path / "s", _rows())
    real = real_run(tmp_path / "r", _rows())
    assert compare(tmp_path, capsys, sim, real)[0] == 0
    (real / "compare.png").write_text("stale figure of the first compare")
    sim_run(tmp_path / "s", _rows(**{"c0": {"finish_time": 9.0}}))
    assert compare(tmp_path, capsys, sim, real)[0] == 0
    result = json.loads((real / "compare.json").read_text())
    assert result["e2e_error"]["n"] == N and result["e2e_error"]["p99"] > 1
    # no PNG this time (no Chromium): the first compare's PNG must not stay behind
    assert sorted(p.name for p in real.iterdir()) == [
        "compare.html", "compare.json", "requests.jsonl", "summary.json"]


def test_compare_output_may_not_replace_a_run_file(tmp_path, capsys):
    sim = sim_run(tmp_path / "s", _rows())
    real = real_run(tmp_path / "r", _rows())
    before = (real / "summary.json").read_text()
    capsys.readouterr()
    assert main(["compare", str(sim), str(real), "--output",
                 str(real / "summary.html")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "field 'output'" in err[0]
    assert (real / "summary.json").read_text() == before


def _trace(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"timestamp": 20 * i, "input_length": 20 + i,
                                        "output_length": 4}) + "\n" for i in range(n)))
    return path


def test_replay_into_a_used_folder_needs_overwrite(tmp_path, capsys):
    """The reported loss: a 3-request replay over a 6-request run replaced its rows and
    left the old compare.* behind. Now it is refused; --overwrite replaces the whole run."""
    out = real_run(tmp_path / "r", _rows())
    sim_run(tmp_path / "s", _rows())
    assert compare(tmp_path, capsys, tmp_path / "s", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    trace = _trace(tmp_path / "t.jsonl", 3)
    with StubServer(token_delay_ms=1) as url:
        argv = ["replay", "--base-url", url, "--model", "stub", "--trace", str(trace),
                "--output-dir", str(out), "--no-progress"]
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and "--overwrite" in err[0] and "field 'output_dir'" in err[0]
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched
        assert main([*argv, "--overwrite"]) == 0
    assert not list(out.glob("compare.*"))
    assert len((out / "requests.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize("content", [b"\xff\xfe\x00 binary", b"\x89PNG\r\n\x1a\n"])
def test_plot_of_a_binary_compare_json_is_one_line(tmp_path, capsys, content):
    """``compare.json`` is read back by ``dynasim plot --kind sim-vs-real``."""
    (tmp_path / "compare.json").write_bytes(content)
    capsys.readouterr()
    assert main(["plot", str(tmp_path), "--kind", "sim-vs-real", "--output",
                 str(tmp_path / "fig")]) == 2
    # (blank lines: plot's transient progress bar, not part of the message)
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and str(tmp_path / "compare.json") in err[0], err


def test_compare_figure_shares_the_style_and_empty_panels_say_why():
    from replay.compare import compare_figure

    empty = pd.DataFrame({c: pd.Series(dtype=float) for c in (
        "ttft_real", "ttft_sim", "e2e_latency_real", "e2e_latency_sim")})
    fig = compare_figure(empty, {"compared": 0})
    notes = [a.text for a in fig.layout.annotations]
    assert any("no matched request" in n for n in notes)
    assert any("no request finished on both sides" in n for n in notes)
    assert fig.layout.template.layout.paper_bgcolor is not None  # plotly_white applied
    assert "Simulated vs replayed" in fig.layout.title.text
    full = pd.DataFrame({"ttft_real": [0.1, 0.2], "ttft_sim": [0.11, 0.2],
                         "e2e_latency_real": [1.0, 2.0], "e2e_latency_sim": [1.1, 1.9]})
    fig = compare_figure(full, {"compared": 2})
    assert not [a for a in fig.layout.annotations if "no " in a.text]
    assert fig.data[0].y[-1] == 100  # CDF in percent of requests, as the plot CDFs


def test_a_simulated_run_written_before_replicas_is_read_as_one_replica(tmp_path, capsys):
    s = sim_run(tmp_path / "s", _rows())
    df = pd.read_parquet(s / "requests.parquet").drop(columns=["replica"])
    df.to_parquet(s / "requests.parquet", index=False)  # an older run: no replica column
    rc, err, out = compare(tmp_path, capsys, s, real_run(tmp_path / "r", _rows()))
    assert rc == 0 and err == [] and "6 requests compared" in out
