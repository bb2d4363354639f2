"""The sweep scale-out script (``python -m dynasim.experiments.scaleout``): it runs the
same sweep on LocalClusters of several sizes and refuses bad worker counts."""

from __future__ import annotations

import pytest

from dynasim.errors import InputError
from dynasim.experiments.scaleout import main, time_sweep

CONFIG = ("workloads: [game24-sc]\nprofiles: [vidur-llama3-8b-a100]\npolicies: [lpm]\n"
          "request_rates: [1, 2]\nnum_programs: 6\n")


def test_scaleout_times_each_worker_count_on_the_same_table(data_dir, write, capsys):
    pytest.importorskip("dask.distributed")
    rows = time_sweep(str(write("s.yaml", CONFIG)), [1, 2])
    assert [r["workers"] for r in rows] == [1, 2]
    assert all(r["cells"] == 2 and r["wall_s"] > 0 for r in rows)
    assert rows[0]["speedup"] == 1.0
    assert "workers 2  cells 2" in capsys.readouterr().out


def test_bad_worker_counts_are_refused(write, capsys):
    with pytest.raises(InputError):
        time_sweep(str(write("s.yaml", CONFIG)), [0])
    with pytest.raises(SystemExit):
        main([str(write("s.yaml", CONFIG)), "--workers", "one"])
    assert "--workers" in capsys.readouterr().err
