"""``python -m replay.steadiness``: the machine's own speed, the floor of live fidelity."""

from __future__ import annotations

import numpy as np
import pytest

from replay.steadiness import main, summary


def test_summary_by_hand():
    # 10 s at 100 ms, then 10 s at 130 ms
    starts = np.arange(0, 20, 0.5)
    times = np.where(starts < 10, 0.1, 0.13)
    r = summary({"times": times, "starts": starts, "steal_fraction": 0.02})
    assert r["runs"] == 40 and r["window_medians_ms"] == pytest.approx([100, 130])
    assert r["window_swing"] == pytest.approx(0.3)
    assert r["p10_ms"] == pytest.approx(100) and r["p90_ms"] == pytest.approx(130)


def test_command_prints_the_spread(capsys):
    assert main(["--seconds", "0.5", "--cpu", "-1"]) == 0
    out = capsys.readouterr().out
    assert "fixed work" in out and "largest swing between windows" in out


def test_bad_cpu_is_a_clear_error(capsys):
    assert main(["--seconds", "0.1", "--cpu", "4096"]) == 2
    assert "cannot pin to CPU 4096" in capsys.readouterr().err


def test_measure_restores_the_cpus():
    import os

    from replay.steadiness import measure

    before = os.sched_getaffinity(0)
    r = measure(0.3, cpu=sorted(before)[0], pause=0.0)
    assert os.sched_getaffinity(0) == before and len(r["times"]) >= 1
