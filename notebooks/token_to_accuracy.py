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
# # Batch mode: token-to-accuracy (Dynasor §4 / App. G)
#
# Every question is answered offline by a self-consistency program; the x axis is the
# output tokens the whole batch spent, the y axis its majority-vote accuracy, each point a
# resource cap (samples), mean ± std over sample-draw orders. Policies:
# `even` (baseline: every program runs to the cap), `certaindex` (stop at the detect step
# when H̃ passes the threshold), `length` (the baseline that stops programs whose first
# samples are short, matched to stop as many programs as certaindex), `curve` (certaindex
# → remaining budget). The paper reports 9–52% fewer tokens at equal accuracy.

# %% tags=["parameters"]
import os
from pathlib import Path

SMALL = os.environ.get("DYNASIM_NOTEBOOK_SMALL", "0") not in ("", "0")  # CI: shrunk
OUT = Path(os.environ.get("DYNASIM_NOTEBOOK_OUT", "out/notebooks"))

WORKLOADS = ["date-sc"] if SMALL else ["game24-sc", "date-sc"]
CAPS = [5, 10] if SMALL else [5, 10, 20, 40]
SEEDS = 2 if SMALL else 10

# %%
import pandas as pd  # noqa: E402

from dynasim.experiments.batch import matched_length_threshold, token_accuracy, tokens_saved  # noqa
from dynasim.experiments.figures import token_accuracy_figures  # noqa: E402
from dynasim.experiments.plots import write_figures  # noqa: E402
from dynasim.policies import make_intra  # noqa: E402
from dynasim.workloads.catalog import load_workload  # noqa: E402

tables = []
for name in WORKLOADS:
    w = load_workload(name)
    cert = make_intra("certaindex", cap=max(CAPS), detect_at=5, threshold=0.7)
    length = matched_length_threshold(w.programs, cert, SEEDS)
    factories = {p: (lambda cap, p=p, length=length: make_intra(
                         p, cap=cap, detect_at=5, threshold=0.7, max_tokens=length))
                 for p in ("even", "certaindex", "length", "curve")}
    t = token_accuracy(w.programs, factories, CAPS, SEEDS)
    t.insert(0, "workload", name)
    tables.append(t)
table = pd.concat(tables, ignore_index=True)
OUT.mkdir(parents=True, exist_ok=True)
table.to_csv(OUT / "token-accuracy.csv", index=False)
table[["workload", "policy", "cap", "output_tokens_mean", "accuracy_mean"]]

# %%
figs = token_accuracy_figures(table)
write_figures({OUT / "figures" / f"token-accuracy-{k}": f for k, f in figs.items()})
next(iter(figs.values()))

# %% [markdown]
# Tokens saved at equal accuracy against baseline-even (the paper's batch metric):

# %%
saved = pd.DataFrame([{"workload": w, "policy": p,
                       **tokens_saved(table[table.workload == w], p)}
                      for w in WORKLOADS for p in ("certaindex", "length", "curve")])
saved

# %%
assert len(table) == len(WORKLOADS) * 4 * len(CAPS)
assert table["accuracy_mean"].between(0, 1).all()
