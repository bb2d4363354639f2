"""``dynasim compare SIM recorded:NAME``: a simulation against a recorded vLLM run."""

from __future__ import annotations

import json

import pytest

from dynasim.cli import main
from dynasim.runs import export_run

RUN = "llmservingsim-rtx4090-llama3.1-8b"


@pytest.fixture
def simulated(data_dir, tmp_path):
    trace, _ = export_run(RUN, tmp_path / "rec")
    sim = tmp_path / "sim"
    assert main(["simulate", "--trace", str(trace), "--profile",
                 "vllm019-llama3.1-8b-rtx4090", "--output-dir", str(sim)]) == 0
    return sim


def test_simulation_compares_with_a_recorded_run(simulated, tmp_path, capsys):
    assert main(["compare", str(simulated), f"recorded:{RUN}"]) == 0
    result = json.loads((simulated / "compare.json").read_text())
    assert result["matched"] == result["compared"] == 300
    assert result["e2e_error"]["median"] < 0.10
    # the exported folder is the same run
    assert main(["compare", str(simulated), str(tmp_path / "rec")]) == 0
    again = json.loads((tmp_path / "rec" / "compare.json").read_text())
    assert again["e2e_error"] == result["e2e_error"]


def test_another_recorded_run_is_refused(simulated, capsys):
    assert main(["compare", str(simulated), "recorded:llmservingsim-rtxpro6000-qwen3-32b"]
                ) == 2
    err = capsys.readouterr().err
    assert "trace" in err or "prompt_tokens" in err


def test_unknown_recorded_run_is_one_line(simulated, capsys):
    assert main(["compare", str(simulated), "recorded:nope"]) == 2
    assert "unknown recorded run" in capsys.readouterr().err


def test_simulate_reads_a_recorded_run_by_name(data_dir, tmp_path):
    """``simulate --trace recorded:NAME`` reads the run directly (no export), and the
    result compares with the run itself."""
    sim = tmp_path / "direct"
    assert main(["simulate", "--trace", f"recorded:{RUN}", "--profile",
                 "vllm019-llama3.1-8b-rtx4090", "--output-dir", str(sim),
                 "--no-progress"]) == 0
    assert main(["compare", str(sim), f"recorded:{RUN}"]) == 0
    result = json.loads((sim / "compare.json").read_text())
    assert result["matched"] == 300 and result["e2e_error"]["median"] < 0.10
