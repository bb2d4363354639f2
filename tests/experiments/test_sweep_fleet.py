"""Fleet axes of ``dynasim sweep`` (issue 19): ``replicas`` x ``routers`` cells run
behind a router, the row carries the fleet, and the tables compare routers."""

from __future__ import annotations

import pandas as pd
import pytest

from dynasim.errors import InputError
from dynasim.experiments.sweep import fleet_view, headline_table, rate_tables, run_sweep
from dynasim.experiments.sweep_config import expand, load_config

FLEET = {"workloads": ["game24-tot"], "profiles": ["vidur-llama3-8b-a100"],
         "policies": ["sjf"], "request_rates": [2.0], "num_programs": 24,
         "detect_at": 1, "replicas": [1, 2], "routers": ["round-robin", "program-affinity"]}


def test_fleet_axes_expand_after_the_others_and_stay_out_when_unset():
    cells = expand(load_config(None, FLEET))
    assert [(c["replicas"], c["router"]) for c in cells] == [
        (1, "round-robin"), (1, "program-affinity"), (2, "round-robin"),
        (2, "program-affinity")]
    assert len({c["cell_id"] for c in cells}) == 4
    plain = expand(load_config(None, {k: v for k, v in FLEET.items()
                                      if k not in ("replicas", "routers")}))
    assert "router" not in plain[0] and "replicas" not in plain[0]
    one = expand(load_config(None, dict(FLEET, replicas=None, routers="least-kv")))
    assert [(c["replicas"], c["router"]) for c in one] == [(1, "least-kv")]


@pytest.mark.parametrize("extra, why", [({"routers": ["nearest"]}, "unknown router"),
                                        ({"replicas": [0]}, "at least 1")])
def test_bad_fleet_keys_are_refused(extra, why):
    with pytest.raises(InputError) as exc:
        load_config(None, dict(FLEET, **extra))
    assert exc.value.field in extra and why in exc.value.message


def test_a_fleet_sweep_routes_and_its_tables_compare_routers(data_dir, tmp_path):
    df = run_sweep(load_config(None, FLEET), tmp_path / "s", jobs=1, progress=False)
    assert (df["error"] == "").all() and len(df) == 4
    two = df[df["replicas"] == 2]
    assert (two["num_replicas"] == 2).all()
    # round-robin splits requests evenly; program-affinity keeps each program on one
    # replica, so its split follows program sizes (imbalance above round-robin's)
    rr = two.set_index("router").loc["round-robin", "replica_request_imbalance"]
    assert rr == pytest.approx(1.0, abs=0.1)
    # one replica: every router gives the single engine's result
    one = df[df["replicas"] == 1].set_index("router")
    assert one.loc["round-robin", "mean_program_latency_s"] == pytest.approx(
        one.loc["program-affinity", "mean_program_latency_s"])
    view, base = fleet_view(df)
    assert base == "sjf @ round-robin x1"
    assert set(view["policy"]) == {"sjf @ round-robin x1", "sjf @ program-affinity x1",
                                   "sjf @ round-robin x2", "sjf @ program-affinity x2"}
    tables = next(iter(rate_tables(df).values()))
    assert "prefix-cache hit rate" in tables
    assert list(headline_table(df).columns)[-1] == "ratio_to_sjf @ round-robin x1"


def test_fleet_view_leaves_a_plain_sweep_alone():
    df = pd.DataFrame({"policy": ["lpm"], "slo_attainment": [1.0]})
    out, base = fleet_view(df)
    assert out is df and base == "lpm"


def test_fleet_flags_override_the_config(tmp_path, capsys):
    from dynasim.cli import main

    args = ["sweep", "--workload", "game24-tot", "--profile", "vidur-llama3-8b-a100",
            "--policy", "sjf", "--request-rate", "1", "--output-dir", str(tmp_path),
            "--no-progress", "--replicas", "2", "--router", "round-robin,nearest"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "routers" in err and "unknown router 'nearest'" in err
