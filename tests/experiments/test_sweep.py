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
