"""``dynasim batch`` on long chain-of-thought workloads and ``dynasim cot-check``."""

from __future__ import annotations

import pandas as pd

from dynasim.cli import main
from tests.workloads.cot_fixture import write_cot_folder


def test_batch_on_a_cot_folder_writes_the_frontier(tmp_path, capsys):
    root = write_cot_folder(tmp_path / "cot")
    out = tmp_path / "out" / "f.csv"
    argv = ["batch", "--workload", str(root), "--policy", "budget,dynasor-cot",
            "--probe-interval", "64,128", "--certainty-window", "2,3",
            "--budgets", "128,256,512", "--select", "model=model-a", "--output", str(out),
            "--plot"]
    assert main(argv) == 0
    t = pd.read_csv(out)
    assert len(t) == 1 + 3 + 2 * 2  # full, three budgets, T x w
    assert sorted(t.policy.unique()) == ["budget", "dynasor-cot", "full"]
    text = capsys.readouterr().out
    assert "1 trajectories excluded" in text and "token change against the budget" in text
    assert "disagrees with the logged final_correct on 0 of 3" in text
    assert (out.parent / "plots" / "token-accuracy-Model-A-ds1.html").is_file()


def test_bad_cot_flags_are_one_line_errors(tmp_path, capsys):
    root = write_cot_folder(tmp_path / "cot")
    base = ["batch", "--workload", str(root), "--output", str(tmp_path / "f.csv")]
    for extra, words in ((["--probe-interval", "100"], "not a multiple"),
                         (["--policy", "budget,even"], "unknown chain-of-thought policy"),
                         (["--select", "model=nothing"], "no trajectories selected"),
                         (["--threshold", "0"], "tau")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err
    assert main(["batch", "--workload", "game24-sc", "--select", "model=x"]) == 2
    assert "chain-of-thought workloads only" in capsys.readouterr().err


def test_named_workload_batch_and_grading_check(data_dir, tmp_path, capsys):
    out = tmp_path / "f.csv"
    assert main(["batch", "--workload", "cot-r1-qwen7b-amc23", "--probe-interval", "64,128",
                 "--certainty-window", "2,4", "--output", str(out)]) == 0
    t = pd.read_csv(out)
    assert set(t.model) == {"deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}
    assert len(t[t.policy == "dynasor-cot"]) == 4
    assert "DeepSeek-R1-Distill-Qwen-7B      amc23   -20%" in capsys.readouterr().out
    assert main(["cot-check", "--workload", "cot-r1-qwen7b-amc23"]) == 0
    assert "disagree" in capsys.readouterr().out
