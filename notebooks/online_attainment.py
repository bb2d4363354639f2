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
# # Online serving: the three SLO-attainment panels (Dynasor §4, Fig. "end-to-end")
#
# Self-consistency programs (Game of 24, GPT-4 chain-of-thought samples; Date
# Understanding, code-davinci-002 samples) arrive as a Poisson process at one simulated
# vLLM replica (Llama-3-8B on an A100-80GB, `vidur-llama3-8b-a100`). Each program's
# deadline is SLO scale × difficulty (1–3) × a base deadline (the p90 latency of a program
# run alone at the cap). The panels:
#
# * (a) program arrival rate against SLO attainment, at SLO scale 1;
# * (b) SLO scale against attainment, at a fixed rate;
# * (c) accuracy against attainment, over all the rates of (a).
#
# `DYNASIM_NOTEBOOK_SMALL=1` shrinks the sweep (CI runs it so).

# %% tags=["parameters"]
import os
from pathlib import Path

SMALL = os.environ.get("DYNASIM_NOTEBOOK_SMALL", "0") not in ("", "0")  # CI: shrunk
OUT = Path(os.environ.get("DYNASIM_NOTEBOOK_OUT", "out/notebooks"))
JOBS = 1 if SMALL else os.cpu_count()


def pick(full, small):
    return small if SMALL else full


WORKLOADS = pick(["game24-sc", "date-sc"], ["date-sc"])
PROFILE = "vidur-llama3-8b-a100"
POLICIES = pick(["lpm", "gang", "sjf", "lpm+certaindex", "gang+certaindex",
                 "sjf+certaindex"], ["lpm", "sjf+certaindex"])
RATES = pick([0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8], [0.5, 2])
SLO_SCALES = pick([0.5, 0.75, 1, 1.5, 2, 3], [1, 2])
SEEDS = pick([0, 1, 2], [0])
NUM_PROGRAMS = pick(200, 12)

# %%
from dynasim.experiments.figures import (  # noqa: E402
    accuracy_attainment_figures,
    rate_attainment_figures,
    slo_attainment_figures,
)
from dynasim.experiments.plots import write_figures  # noqa: E402
from dynasim.experiments.results import max_rate_at_attainment  # noqa: E402
from dynasim.experiments.sweep import run_sweep  # noqa: E402
from dynasim.experiments.sweep_config import SweepConfig  # noqa: E402

rate_cfg = SweepConfig(workloads=WORKLOADS, profiles=[PROFILE], policies=POLICIES,
                       request_rates=RATES, slo_scales=[1.0], seeds=SEEDS,
                       num_programs=NUM_PROGRAMS)
rates = run_sweep(rate_cfg, OUT / "online-rates", jobs=JOBS, progress=False)
rates[["workload", "policy", "program_rate", "seed", "slo_attainment", "accuracy",
       "mean_program_latency_s"]].head()

# %% [markdown]
# ## (a) Program arrival rate against SLO attainment
# The dashed line is the 90% target; the marker on each line is the highest rate at which
# that policy still reaches it (linear interpolation between swept rates).

# %%
figs = rate_attainment_figures(rates, 0.9)
write_figures({OUT / "figures" / f"rate-attainment-{k}": f for k, f in figs.items()})
next(iter(figs.values()))

# %%
peak = max_rate_at_attainment(rates, 0.9)
peak

# %% [markdown]
# ## (b) SLO scale against attainment
# At a rate that loads the replica (the middle of the swept rates), tighter SLO scales
# than 1 are harder to meet; a policy that holds 90% at a smaller scale serves tighter
# SLOs.

# %%
busy = RATES[len(RATES) // 2]
slo_cfg = rate_cfg.model_copy(update={"request_rates": [busy], "slo_scales": SLO_SCALES})
scales = run_sweep(slo_cfg, OUT / "online-slo", jobs=JOBS, progress=False)
figs = slo_attainment_figures(scales, 0.9)
write_figures({OUT / "figures" / f"slo-attainment-{k}": f for k, f in figs.items()})
next(iter(figs.values()))

# %% [markdown]
# ## (c) Accuracy against attainment
# Each point is one (policy, rate); certaindex trades a little accuracy (programs stopped
# at the detect step answer by a 5-sample vote) for attainment.

# %%
figs = accuracy_attainment_figures(rates, 0.9)
write_figures({OUT / "figures" / f"accuracy-attainment-{k}": f for k, f in figs.items()})
next(iter(figs.values()))

# %%
assert len(rates) == len(WORKLOADS) * len(POLICIES) * len(RATES) * len(SEEDS)
assert (rates["error"] == "").all() and rates["slo_attainment"].between(0, 1).all()
