# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Finish-time fairness (Dynasor App. D.3)
#
# φ = T_shared / output tokens: a program's latency under sharing per token it produced
# (s/token). A fair scheduler keeps φ's distribution narrow: short programs should not
# wait behind long ones, long ones should not starve. CDFs of φ and of program latency
# per policy, from a sweep that keeps each cell's program records.

# %% tags=["parameters"]
import os
from pathlib import Path

SMALL = os.environ.get("DYNASIM_NOTEBOOK_SMALL", "0") not in ("", "0")  # CI: shrunk
OUT = Path(os.environ.get("DYNASIM_NOTEBOOK_OUT", "out/notebooks"))

WORKLOAD = "date-sc" if SMALL else "game24-sc"
RATE = 2.0 if SMALL else 3.0  # programs/s
NUM_PROGRAMS = 12 if SMALL else 300

# %%
from dynasim.experiments.plots import plot  # noqa: E402
from dynasim.experiments.sweep import run_sweep  # noqa: E402
from dynasim.experiments.sweep_config import SweepConfig  # noqa: E402

cfg = SweepConfig(workloads=[WORKLOAD], profiles=["vidur-llama3-8b-a100"],
                  policies=["fcfs", "lpm", "gang", "sjf+certaindex"],
                  request_rates=[RATE], num_programs=NUM_PROGRAMS, keep_records=True)
cells = run_sweep(cfg, OUT / "fairness", jobs=1, progress=False)
cells[["policy", "mean_fairness_s_per_token", "p90_fairness_s_per_token",
       "p99_fairness_s_per_token", "mean_program_latency_s"]]

# %%
files = plot([OUT / "fairness"], "fairness-cdf", OUT / "figures")
files += plot([OUT / "fairness"], "latency-cdf", OUT / "figures")
files

# %%
from dynasim.experiments import figures  # noqa: E402
from dynasim.experiments.results import read_program_runs  # noqa: E402

figs = figures.cdf_figures(read_program_runs([OUT / "fairness"], {}, value="fairness"),
                           "fairness-cdf")
next(iter(figs.values()))

# %%
assert all(f.endswith((".html", ".png")) for f in files) and len(cells) == 4
