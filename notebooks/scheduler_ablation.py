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
# # The scheduler ablation (Dynasor §4, ablation of the inter- and intra-program parts)
#
# The same programs, arrivals and deadlines under LPM, gang, LPM + certaindex,
# gang + certaindex and SJF + certaindex, at one loaded program rate. The paper's
# version (SC/GSM8K at 16 programs/s on its A100 setup): mean latency 410 s → 306 s →
# 165 s → 159 s → 134 s. Here: the shipped workloads on `vidur-llama3-8b-a100`.

# %% tags=["parameters"]
import os
from pathlib import Path

SMALL = os.environ.get("DYNASIM_NOTEBOOK_SMALL", "0") not in ("", "0")  # CI: shrunk
OUT = Path(os.environ.get("DYNASIM_NOTEBOOK_OUT", "out/notebooks"))

WORKLOADS = ["date-sc"] if SMALL else ["game24-sc", "date-sc"]
RATE = 2.0 if SMALL else 3.0  # programs/s
NUM_PROGRAMS = 12 if SMALL else 300
SEEDS = [0] if SMALL else [0, 1, 2]

# %%
import pandas as pd  # noqa: E402
import plotly.graph_objects as go  # noqa: E402

from dynasim.experiments.ablation import run_ablation  # noqa: E402
from dynasim.experiments.plots import write_figures  # noqa: E402
from dynasim.profiles import load_profile  # noqa: E402
from dynasim.workloads.catalog import load_workload  # noqa: E402

profile = load_profile("vidur-llama3-8b-a100").with_overrides(enable_prefix_caching=True)
intra = {"cap": 20, "detect_at": 5, "threshold": 0.7, "reward_threshold": None,
         "gamma": 1.0, "max_tokens": 0}
rows = []
for name in WORKLOADS:
    w = load_workload(name)
    for seed in SEEDS:
        t = run_ablation(w, profile, RATE, intra, seed=seed, num_programs=NUM_PROGRAMS)
        t.insert(0, "workload", name)
        t.insert(1, "seed", seed)
        rows.append(t)
ablation = pd.concat(rows, ignore_index=True)
OUT.mkdir(parents=True, exist_ok=True)
ablation.to_csv(OUT / "ablation.csv", index=False)
mean = ablation.groupby(["workload", "policy"], sort=False)[
    ["mean_program_latency_s", "p90_program_latency_s", "slo_attainment",
     "accuracy", "total_program_output_tokens"]].mean().reset_index()
mean

# %%
fig = go.Figure()
for name in WORKLOADS:
    m = mean[mean.workload == name]
    fig.add_bar(x=m["policy"], y=m["mean_program_latency_s"], name=name)
fig.update_layout(title=f"Scheduler ablation at {RATE} programs/s, vidur-llama3-8b-a100, "
                        f"{len(SEEDS)} seed(s)", yaxis_title="mean program latency (s)",
                  xaxis_title="policy", barmode="group", template="plotly_white",
                  width=960, height=520)
write_figures({OUT / "figures" / "ablation": fig})
fig

# %%
assert set(ablation["policy"]) == {"lpm", "gang", "lpm+certaindex", "gang+certaindex",
                                   "sjf+certaindex"}
assert (ablation["mean_program_latency_s"] > 0).all()
