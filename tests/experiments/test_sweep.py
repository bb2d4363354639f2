"""``dynasim sweep``: config files, the tidy table, resume after a kill, Dask."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from dynasim.cli import main
from dynasim.errors import InputError
from dynasim.experiments.sweep import run_sweep
from dynasim.experiments.sweep_config import expand, load_config

BASE = {"workloads": ["game24-sc"], "profiles": ["vidur-llama3-8b-a100"],
        "policies": ["lpm", "sjf+certaindex"], "request_rates": [2.0, 6.0],
        "num_programs": 20}
METRICS = ["slo_attainment", "accuracy", "mean_program_latency_s",
           "total_program_output_tokens", "mean_ttft_ms", "base_deadline_s"]


def _journal_ids(out: Path) -> list[str]:
    return [json.loads(line)["cell_id"]
            for line in (out / "cells.jsonl").read_text().splitlines()]


def test_yaml_and_toml_configs_agree(write):
    y = write("s.yaml", "workloads: game24-sc\nprofiles: [vidur-llama3-8b-a100]\n"
                        "policies: [lpm, gang]\nrequest_rates: [1, 2]\nseeds: [0, 1]\n"
                        "limits: {max_num_seqs: 64}\n")
    t = write("s.toml", 'workloads = ["game24-sc"]\nprofiles = ["vidur-llama3-8b-a100"]\n'
                        'policies = ["lpm", "gang"]\nrequest_rates = [1, 2]\n'
                        'seeds = [0, 1]\n[limits]\nmax_num_seqs = 64\n')
    a, b = load_config(y, {}), load_config(t, {})
    assert a == b and len(expand(a)) == 8
    assert load_config(y, {"request_rates": [3.0]}).request_rates == [3.0]  # flag wins


@pytest.mark.parametrize("text, field, line", [
    ("workloads: [a]\nprofiles: [b]\npolicies: [c]\nrequest_rates: [1]\nbogus: 1\n",
     "bogus", None),
    ("workloads: [a]\nprofiles: [b]\npolicies: [c]\nrequest_rates: [0]\n",
     "request_rates", None),
    ("workloads: [a]\nprofiles: [b]\npolicies: [c]\nrequest_rates: [1]\n"
     "limits: {max_seqs: 4}\n", "limits", None),
    ("workloads: [a]\nprofiles: [b\n", None, 3),
])
def test_bad_configs_name_the_key_or_line(write, text, field, line):
    path = write("bad.yaml", text)
    with pytest.raises(InputError) as exc:
        load_config(path, {})
    assert exc.value.source == str(path)
    if field:
        assert exc.value.field == field
    if line:
        assert exc.value.line is not None


def test_missing_axis_is_an_input_error():
    with pytest.raises(InputError) as exc:
        load_config(None, {"workloads": ["game24-sc"]})
    assert exc.value.field == "profiles"


def test_sweep_table_resume_and_executors(data_dir, tmp_path):
    cfg = load_config(None, BASE)
    a = run_sweep(cfg, tmp_path / "a", jobs=1, progress=False)
    assert len(a) == 4 and (a["error"] == "").all()
    assert set(a["policy"]) == {"lpm", "sjf+certaindex"} and a["cell_id"].is_unique
    assert (a["num_programs"] == 20).all()
    assert a["base_deadline_s"].nunique() == 1  # one deadline basis for every policy
    # more load, lower attainment (the physics, not a constant)
    lpm = a[a["policy"] == "lpm"].set_index("program_rate")
    assert lpm.loc[6.0, "mean_program_latency_s"] > lpm.loc[2.0, "mean_program_latency_s"]
    # two local processes give the same table
    b = run_sweep(cfg, tmp_path / "b", jobs=2, progress=False)
    pd.testing.assert_frame_equal(a[METRICS], b[METRICS])
    # a rerun skips every finished cell; a wider sweep runs only the new ones
    before = _journal_ids(tmp_path / "a")
    run_sweep(cfg, tmp_path / "a", jobs=1, progress=False)
    assert _journal_ids(tmp_path / "a") == before
    wider = load_config(None, {**BASE, "request_rates": [2.0, 4.0, 6.0]})
    c = run_sweep(wider, tmp_path / "a", jobs=1, progress=False)
    ids = _journal_ids(tmp_path / "a")
    assert len(ids) == 6 and ids[:4] == before and len(c) == 6
    assert list(c["program_rate"]) == [2.0, 4.0, 6.0, 2.0, 4.0, 6.0]  # sweep order


def test_sweep_on_a_dask_cluster(data_dir, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    cfg = load_config(None, BASE)
    local = run_sweep(cfg, tmp_path / "local", jobs=1, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None, processes=True) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        remote = run_sweep(cfg, tmp_path / "dask", scheduler="dask",
                           address=cluster.scheduler_address, progress=False)
    pd.testing.assert_frame_equal(local[METRICS], remote[METRICS])


def test_dask_without_a_cluster_is_a_clear_error(data_dir, tmp_path, capsys):
    assert main(["sweep", "--workload", "game24-sc", "--profile", "vidur-llama3-8b-a100",
                 "--policy", "lpm", "--request-rate", "1", "--num-programs", "5",
                 "--scheduler", "dask", "--address", "tcp://127.0.0.1:1",
                 "--output-dir", str(tmp_path), "--no-progress"]) == 2
    assert "Dask scheduler" in capsys.readouterr().err


def _sweep_cmd(out: Path, *extra: str) -> list[str]:
    """24 cells of 40 programs, one process: long enough to interrupt."""
    return [sys.executable, "-m", "dynasim", "sweep", "--workload", "game24-sc",
            "--profile", "vidur-llama3-8b-a100", "--policy", "lpm,gang,sjf+certaindex",
            "--request-rate", "1,2,3,4,5,6,7,8", "--num-programs", "40", "--jobs", "1",
            "--output-dir", str(out), "--no-progress", *extra]


def _interrupt_after(cmd: list[str], journal: Path, cells: int, sig) -> subprocess.Popen:
    """Start ``cmd``, wait until ``journal`` holds ``cells`` lines, send ``sig``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= cells:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(sig)
    return proc


def test_killed_sweep_loses_no_finished_cell(data_dir, tmp_path):
    """SIGKILL mid-sweep: every cell in the journal survives and is not run again."""
    out = tmp_path / "killed"
    cmd = _sweep_cmd(out, "--keep-records")
    journal = out / "cells.jsonl"
    _interrupt_after(cmd, journal, 3, signal.SIGKILL).wait()
    survived = [json.loads(x)["cell_id"] for x in journal.read_text().splitlines()
                if x.strip().endswith("}")]
    assert 3 <= len(survived) < 24
    assert all((out / "records" / f"{c}.parquet").exists() for c in survived)
    assert main(cmd[3:]) == 0  # resume in-process
    ids = _journal_ids(out)
    assert ids[:len(survived)] == survived and len(ids) == 24 and len(set(ids)) == 24
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 24 and (table["error"] == "").all()
    rec = pd.read_parquet(out / "records" / f"{table['cell_id'][0]}.parquet")
    assert len(rec) == 40 and {"latency", "fairness", "slo_met"} <= set(rec.columns)


def test_ctrl_c_leaves_a_readable_table(data_dir, tmp_path):
    """SIGINT (Ctrl-C) mid-sweep: exit 130 and a results.parquet with every cell the
    journal holds."""
    out = tmp_path / "interrupted"
    proc = _interrupt_after(_sweep_cmd(out), out / "cells.jsonl", 2, signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert "interrupted" in proc.stderr.read().decode()
    table = pd.read_parquet(out / "results.parquet")
    assert set(table["cell_id"]) == set(_journal_ids(out)) and 2 <= len(table) < 24


def test_headline_tables_ratio_to_lpm():
    """Rates and SLO scales at 90% from hand-made cells, and the ratios to lpm."""
    from dynasim.experiments.sweep import headline_table, tightest_slo_table

    rows = []
    for pol, att in (("lpm", [1.0, 0.95, 0.5]), ("sjf+certaindex", [1.0, 1.0, 0.8])):
        for rate, a in zip((1.0, 2.0, 4.0), att):
            rows.append({"workload": "w", "profile": "p", "policy": pol, "seed": 0,
                         "program_rate": rate, "slo_scale": 1.0, "slo_attainment": a})
        for scale, a in zip((0.5, 1.0, 2.0), att[::-1]):
            rows.append({"workload": "w", "profile": "p", "policy": pol, "seed": 0,
                         "program_rate": 8.0, "slo_scale": scale, "slo_attainment": a})
    df = pd.DataFrame(rows)
    t = headline_table(df[df.program_rate < 8]).set_index("policy")
    assert t.loc["lpm", "max_rate"] == pytest.approx(2 + 0.05 / 0.45 * 2)
    assert t.loc["sjf+certaindex", "max_rate"] == pytest.approx(2 + 0.1 / 0.2 * 2)
    assert t.loc["sjf+certaindex", "ratio_to_lpm"] == pytest.approx(
        3.0 / t.loc["lpm", "max_rate"])
    s = tightest_slo_table(df[df.program_rate == 8]).set_index("policy")
    assert s.loc["lpm", "min_slo_scale"] == pytest.approx(1.0 - 0.05 / 0.45 * 0.5)
    assert s.loc["sjf+certaindex", "tighter_than_lpm"] == pytest.approx(
        s.loc["lpm", "min_slo_scale"] / (1.0 - 0.1 / 0.2 * 0.5))


# ----------------------------------------------------- issue 15: nothing lost, nothing silent
SMALL = ["--workload", "game24-sc", "--profile", "vidur-llama3-8b-a100",
         "--request-rate", "1", "--num-programs", "3", "--no-progress", "--jobs", "1"]


@pytest.mark.parametrize("flag, value, field", [
    ("--policy", "nosuch", "policies"), ("--workload", "nosuch", "workloads"),
    ("--profile", "nosuch", "profiles")])
def test_unknown_names_are_refused_before_any_cell(data_dir, tmp_path, capsys, flag,
                                                   value, field):
    argv = ["sweep", *SMALL, "--policy", "lpm", "--output-dir", str(tmp_path / "s")]
    argv[argv.index(flag) + 1] = value
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"field '{field}'" in err[0] and value in err[0], err
    assert not (tmp_path / "s" / "cells.jsonl").exists()


def test_a_failed_cell_makes_the_sweep_exit_nonzero(data_dir, tmp_path, capsys,
                                                    monkeypatch):
    """Fault injection: the gang cell's simulation raises; the lpm cell still runs, the
    table keeps it, and the exit status says the sweep is incomplete."""
    import dynasim.simulation as sim

    real = sim.simulate_programs

    def flaky(specs, times, profile, policy, *a, **kw):
        if policy.name.startswith("gang"):
            raise RuntimeError("injected failure")
        return real(specs, times, profile, policy, *a, **kw)

    monkeypatch.setattr(sim, "simulate_programs", flaky)
    out = tmp_path / "s"
    with pytest.raises(SystemExit) as exc:
        main(["sweep", *SMALL, "--policy", "lpm,gang", "--output-dir", str(out)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "1 of 2 cells failed" in err and "injected failure" in err
    assert len(pd.read_parquet(out / "results.parquet")) == 1


def test_sweep_output_dir_that_is_a_file(data_dir, tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    for out in (f, f / "sub"):
        assert main(["sweep", *SMALL, "--policy", "lpm", "--output-dir", str(out)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and "field 'output_dir'" in err[0], err


def test_detect_at_above_cap_is_refused():
    with pytest.raises(InputError) as exc:
        load_config(None, {**BASE, "cap": 4, "detect_at": 5})
    assert exc.value.field == "detect_at"


def _two_cells(out: Path) -> list[str]:
    return ["sweep", *SMALL, "--policy", "lpm,fcfs", "--output-dir", str(out)]


@pytest.mark.parametrize("cut", [1, 7, 40])
def test_torn_last_journal_line_is_repaired(data_dir, tmp_path, capsys, cut):
    """A kill mid-append leaves a fragment; the rerun must not glue the next line onto
    it (that would lose the recomputed cell too)."""
    out = tmp_path / "s"
    assert main(_two_cells(out)) == 0
    ids = _journal_ids(out)
    data = (out / "cells.jsonl").read_bytes()
    (out / "cells.jsonl").write_bytes(data[:-cut])  # the last line torn
    capsys.readouterr()
    assert main(_two_cells(out)) == 0
    err = capsys.readouterr().err
    if cut > 1:
        assert "cells.jsonl:2" in err  # the warning names the torn line
    assert sorted(_journal_ids(out)) == sorted(ids)  # every line parses again
    before = (out / "cells.jsonl").read_bytes()
    assert main(_two_cells(out)) == 0
    assert (out / "cells.jsonl").read_bytes() == before  # nothing left to run


def test_non_utf8_journal_line_is_skipped_with_a_warning(data_dir, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(_two_cells(out)) == 0
    lines = (out / "cells.jsonl").read_bytes().splitlines(keepends=True)
    (out / "cells.jsonl").write_bytes(lines[0] + b"\xff\xfe\x00junk\n" + lines[1])
    capsys.readouterr()
    assert main(_two_cells(out)) == 0
    err = capsys.readouterr().err
    assert "cells.jsonl:2" in err and "skipped" in err
    assert "2 of 2 cells already finished" in err


def _descendants(pid: int) -> list:
    psutil = pytest.importorskip("psutil")
    return psutil.Process(pid).children(recursive=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killed_sweep_leaves_no_worker_behind(data_dir, tmp_path, sig):
    """SIGTERM/SIGINT to the sweep: its spawn workers and resource tracker end too."""
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "s"
    cmd = _sweep_cmd(out)
    cmd[cmd.index("--jobs") + 1] = "2"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kids: list = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        kids = _descendants(proc.pid)
        if len(kids) >= 3 and (out / "cells.jsonl").exists():  # 2 workers + tracker
            break
        time.sleep(0.1)
    assert proc.poll() is None and len(kids) >= 3, proc.stderr.read().decode()[-2000:]
    proc.send_signal(sig)
    assert proc.wait(timeout=60) != 0
    gone, alive = psutil.wait_procs(kids, timeout=20)
    for p in alive:  # clean up before failing
        p.kill()
    assert not alive, f"left running: {[p.pid for p in alive]}"


def test_headline_printout_says_below_the_lowest_rate():
    """A policy that misses 90% even at the lowest rate: the printout says so in words
    (no NaN), the numeric table keeps NaN for programs."""
    from dynasim.cli.experiments import headline_text
    from dynasim.experiments.sweep import headline_table

    rows = [{"workload": "w", "profile": "p", "policy": pol, "seed": 0,
             "program_rate": rate, "slo_scale": 1.0, "slo_attainment": a}
            for pol, att in (("lpm", [0.5, 0.2]), ("sjf", [1.0, 0.8]))
            for rate, a in zip((1.5, 3.0), att)]
    df = pd.DataFrame(rows)
    assert pd.isna(headline_table(df).set_index("policy").loc["lpm", "max_rate"])
    text = headline_text(df)
    assert "NaN" not in text and "nan" not in text
    lpm = next(line for line in text.splitlines() if " lpm " in line)
    assert "< 1.50" in lpm


# the cell ids of BASE before the deadline-protocol keys existed (issue 18)
BASE_CELL_IDS = ["152373bc6180d3d0", "7966753029b3ef91", "a268b1e38d16d5a0",
                 "2fe9f849da8eee68"]


def test_protocol_keys_pass_through_and_default_ids_hold(data_dir, tmp_path):
    assert [c["cell_id"] for c in expand(load_config(None, BASE))] == BASE_CELL_IDS
    one = dict(BASE, policies=["lpm"], request_rates=[6.0], num_programs=10)
    a = run_sweep(load_config(None, one), tmp_path / "a", jobs=1, progress=False)
    proto = dict(one, base_deadline_multiple=4.0, warmup_programs=2, cooldown_programs=3)
    b = run_sweep(load_config(None, proto), tmp_path / "b", jobs=1, progress=False)
    assert (a["error"] == "").all() and (b["error"] == "").all()
    assert a["cell_id"][0] != b["cell_id"][0]
    assert b["base_deadline_s"][0] == 4.0 * a["base_deadline_s"][0]
    assert a["deadline_protocol"][0] == "isolated-p90 x1"
    assert a["slo_attainment_programs_counted"][0] == 10
    assert b["deadline_protocol"][0] == ("isolated-p90 x4; steady state: skip first 2, "
                                         "last 3 arrivals")
    assert b["slo_attainment_programs_counted"][0] == 5
    assert b["base_deadline_multiple"][0] == 4.0 and b["warmup_programs"][0] == 2


@pytest.mark.parametrize("extra, field, why", [
    ({"base_deadline": 240.0, "base_deadline_multiple": 8.0}, "base_deadline_multiple",
     "not both"),
    ({"warmup_programs": 15, "cooldown_programs": 5}, "cooldown_programs", "leave none"),
])
def test_bad_protocol_keys_are_refused(extra, field, why):
    with pytest.raises(InputError) as exc:
        load_config(None, dict(BASE, **extra))
    assert exc.value.field == field and why in str(exc.value)


def test_a_journal_from_an_older_dynasim_still_resumes(tmp_path):
    """Cells journaled before newer config keys existed (low_threshold, the deadline
    protocol) still make a table: the missing keys are left empty, no KeyError."""
    from dynasim.experiments.sweep import CONFIG_COLUMNS, SweepStore

    old = {k: 1 for k in CONFIG_COLUMNS if k not in ("low_threshold", "deadline_protocol")}
    old.update(cell_id="abc", workload="w", profile="p", policy="lpm", error="",
               slo_attainment=0.5)
    (tmp_path / "cells.jsonl").write_text(json.dumps(old) + "\n")
    store = SweepStore(tmp_path)
    df = pd.read_parquet(store.write_table())
    assert list(df.columns[:len(CONFIG_COLUMNS)]) == CONFIG_COLUMNS
    assert df.loc[0, "slo_attainment"] == 0.5 and pd.isna(df.loc[0, "low_threshold"])
