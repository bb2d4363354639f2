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
# # Fidelity and speed: the simulator against real vLLM runs
#
# How close dynasim's latencies are to a real vLLM's, why they are not closer, and how
# fast it simulates. Every number is printed by a cell below; none is quoted from an
# earlier run. Live-server checks (a CPU or GPU vLLM you start yourself) cannot run here;
# the section on them says which command prints their tables.
#
# * **A100 fidelity**: DistServe's three real vLLM runs (OPT-13B on one A100-80GB,
#   ShareGPT lengths, 100 s of Poisson arrivals at 1, 2 and 3 req/s) replayed through the
#   simulator with the shipped profile `distserve-opt13b-a100`; per request,
#   `|sim - real| / real` of E2E latency and of TTFT. CLI: `dynasim validate`
#   (`make validate`); with `--refit`, also the fit and the leave-one-run-out check.
# * **Ground-truth consistency**: are the three runs one machine? Read from their
#   timestamps alone, without simulating.
# * **Speed**: simulated seconds per wall second on the Azure 2023 conversation trace.
#   CLI: `dynasim benchmark --repeat 3`.
#
# `DYNASIM_NOTEBOOK_SMALL=1` (CI) runs fewer fit evaluations (the refits then stop short
# of convergence, and say so) and benchmarks a 2,000-request cut of the trace once.

# %% tags=["parameters"]
import os
from pathlib import Path

SMALL = os.environ.get("DYNASIM_NOTEBOOK_SMALL", "0") not in ("", "0")  # CI: shrunk
OUT = Path(os.environ.get("DYNASIM_NOTEBOOK_OUT", "out/notebooks"))


def pick(full, small):
    return small if SMALL else full


REFIT_EVALS = pick(150, 8)  # simulations per refit (dynasim validate --refit's default)
LOO_EVALS = pick(100, 5)  # per refit of the leave-one-run-out check
BENCH_TRACE = "azure-conv-2023"
BENCH_REQUESTS = pick(None, 2000)  # None: the whole trace (19,366 requests)
BENCH_REPEAT = pick(3, 1)  # runs per variant; the median is reported

# %% [markdown]
# ## Fidelity against real A100 runs
#
# Each run's arrival times and prompt/output lengths go through the simulator with the
# shipped profile; the table is what `dynasim validate` prints. Issue 5's targets are a
# median E2E error <= 5% and a median TTFT error <= 15% on every run.

# %%
from dynasim.experiments.validate import (  # noqa: E402
    RUNS,
    consistency_table,
    leave_one_out,
    print_consistency,
    print_table,
    refit,
    validate_run,
)
from dynasim.profiles import load_profile  # noqa: E402
from dynasim.profiles.distserve import CALIBRATION, distserve_opt13b_a100  # noqa: E402

profile = load_profile("distserve-opt13b-a100")
rows = [validate_run(name, profile) for name in RUNS]
print_table(rows, f"Fidelity of {profile.name} ({profile.scheduling}) against real vLLM "
                  "runs (A100, OPT-13B): |sim - real| / real per request")


def met(rows, e2e=0.05, ttft=0.15):
    """Which of the two targets every run meets."""
    return (f"median E2E <= {e2e:.0%}: "
            f"{'met' if all(r['median_e2e_error'] <= e2e for r in rows) else 'NOT met'}; "
            f"median TTFT <= {ttft:.0%}: "
            f"{'met' if all(r['median_ttft_error'] <= ttft for r in rows) else 'NOT met'}")


def span(rows, key):
    """'a-b%' over the rows."""
    values = [100 * r[key] for r in rows]
    return f"{min(values):.1f}-{max(values):.1f}%"


print(f"issue 5 targets: {met(rows)}")
print(f"median E2E error over the three runs: {span(rows, 'median_e2e_error')}")

# %% [markdown]
# ## One fidelity table: every recorded vLLM run
#
# Beyond DistServe's 2023 runs, real per-request measurements of modern vLLM V1 on GPUs
# (`dynasim.runs`): residency-vllm (vLLM 0.23, H100, Qwen3-14B; 2-8 req/s and a
# long/short prompt mix at 6 and 12 req/s, the latter saturated), BLIS's training runs
# (vLLM 0.15.1, H100; Llama-2-7b, Llama-2-70b TP 4, Mixtral-8x7B TP 2) and
# LLMServingSim's validation runs (vLLM 0.19; RTX 4090 and 2 x RTX PRO 6000). Each is
# simulated whole with its shipped profile (`vllm023-qwen3-14b-h100`, ...), fitted by
# `dynasim calibrate --from-runs` on the runs marked `fit` and checked on the `held`
# ones (`dynasim.profiles.fit_runs`). "published sim error" is the source's own simulator
# on the same run (LLMServingSim's `summary.txt`: the sign is theirs; BLIS: its aggregate
# held-out figure). CLI: `dynasim validate` (`--runs NAME...` to select).

# %%
from dynasim.experiments.validate import fidelity_table, print_fidelity_table  # noqa: E402

TABLE_RUNS = pick(None, ["residency-rate4", "blis-llama2-7b-codegen",
                         "llmservingsim-rtx4090-llama3.1-8b"])  # None: every run
table = fidelity_table(TABLE_RUNS)
print_fidelity_table(table)

# %% [markdown]
# **How the profile got there.** Its step-time coefficients are DistServe's published fit
# of their vLLM measurements. The engine pads a v0 prefill batch to its longest prompt as
# vLLM 0.2 did (`max_paddings`). Five physical numbers the coefficients leave out (a
# prefill scale, a decode scale, a decode per-context scale, CPU ms per sequence per step,
# front-end latency) are then fitted jointly on the three runs by simulating them
# (Nelder-Mead on the worst run's median E2E error + 0.3 x the worst median TTFT error;
# `dynasim.experiments.validate.refit`). The shipped numbers, and a fresh refit:

# %%
print("shipped calibration (dynasim.profiles.distserve.CALIBRATION):", CALIBRATION)
cal_all, cost_all = refit(max_evals=REFIT_EVALS)
print(f"refit on all three runs, {REFIT_EVALS} evaluations: {cal_all} "
      f"(objective {cost_all:.4f})")
if SMALL:
    print("small mode: too few evaluations to converge; run the notebook without "
          "DYNASIM_NOTEBOOK_SMALL (or `dynasim validate --refit`) for the real fit")

# %% [markdown]
# **Why 5% median E2E is out of reach without special cases.** Fit the same five numbers
# on runs 1 and 3 only, and the model meets the target on those two runs but not on run 2:

# %%
pair = (RUNS[0], RUNS[2])
cal_13, _ = refit(pair, max_evals=REFIT_EVALS)
rows_13 = [validate_run(name, distserve_opt13b_a100(cal_13)) for name in RUNS]
print_table(rows_13, f"Fitted on {' and '.join(r.removeprefix('distserve-') for r in pair)}"
                     f" only ({REFIT_EVALS} evaluations)")
print(f"on the two fitted runs: {met([r for r in rows_13 if r['run'] in pair])}")

# %% [markdown]
# The ground truth says why, without any simulation. Per request, the decode window
# (first to last token) is set against the number of requests decoding alongside and the
# prefills that stalled it; one least-squares fit over all three runs takes the prefill
# stalls out, leaving each run's decode time per token at equal batch size
# (`dynasim.experiments.validate.consistency_table`; `dynasim validate` prints it too).
# Runs of one machine and one setup should agree cell by cell.

# %%
bias, per_token = consistency_table()
print_consistency(bias, per_token)

runs = [r.removeprefix("distserve-") for r in RUNS]
med, size = per_token["median"], per_token["size"]


def gap(a, b):
    """(run a / run b - 1) per batch bin where both runs have requests."""
    both = (size[a] > 0) & (size[b] > 0)
    return (med[a][both] / med[b][both] - 1).dropna()


same = gap(runs[0], runs[2])
slow = [gap(runs[1], other) for other in (runs[0], runs[2])]
lo = min(g.min() for g in slow)
hi = max(g.max() for g in slow)
print(f"{runs[0]} against {runs[2]}: within {same.abs().max():.1%} in each of the "
      f"{len(same)} batch bins where both have requests")
print(f"{runs[1]} against the other two: {lo:+.1%} to {hi:+.1%} per token in each of the "
      f"{sum(len(g) for g in slow)} (run, bin) pairs where both have requests")

# %%
import plotly.graph_objects as go  # noqa: E402

from dynasim.experiments.plots import write_figures  # noqa: E402

fig = go.Figure()
for run in runs:
    has = size[run] > 0
    fig.add_trace(go.Scatter(x=list(med.index[has]), y=med[run][has], name=run,
                             mode="lines+markers",
                             text=[f"{int(n)} requests" for n in size[run][has]],
                             hovertemplate="%{x} decoding: %{y:.1f} ms/token (%{text})"))
fig.update_layout(title="DistServe's vLLM runs (OPT-13B, A100): decode ms per token at "
                        "equal batch, prefill stalls taken out",
                  xaxis_title="requests decoding alongside (mean over the decode window)",
                  yaxis_title="decode ms per token", template="plotly_white",
                  width=960, height=560)
write_figures({OUT / "figures" / "fidelity-ground-truth-decode": fig})
fig

# %% [markdown]
# Runs 1 and 3 agree at equal batch; run 2 decodes slower at every batch size, and the
# common fit's bias (printed under the table) splits the same way. A simulator whose step
# time depends on the engine's state (batch, context, prefills), as every simulator's
# does, cannot be within 5% of both kinds of run; the per-run gap grows in E2E because a
# slower step also lengthens the queue. So the shipped fit trades them evenly (the first
# table), and the error a new run of this setup can expect is best read from fits that
# did not see it: leave each run out, fit on the other two, check the one left out.

# %%
loo = leave_one_out(max_evals=LOO_EVALS)
print_table(loo, f"Leave one run out: fitted on the other runs ({LOO_EVALS} evaluations "
                 "each), checked on this one")
for r in loo:
    print(f"  {r['run']}: {r['calibration']}")
print(f"held-out median E2E error: {span(loo, 'median_e2e_error')}")

# %% [markdown]
# ## Live servers: calibration and fidelity
#
# No live server runs in this notebook; these commands print the tables.
#
# ```bash
# # a vLLM to measure: any vLLM (GPU), or the tiny random-weight Llama of the tests on CPU
# python -m replay.testing.vllm_server --port 8011 --max-num-seqs 4   # needs .venv-vllm
# # calibrate it: TTFTs of lone prompts, decode steps of k streams, mixed steps, /metrics
# dynasim calibrate --base-url http://127.0.0.1:8011 --model tiny-llama \
#     --output out/tiny.json --report out/tiny-calibration.html      # --quick for less
# # live fidelity: replay Poisson traces at 0.3x, 0.9x and 1.3x the profile's saturation
# # rate, simulate the same requests, compare per request (and the server with itself)
# dynasim fidelity --base-url http://127.0.0.1:8011 --model tiny-llama \
#     --profile out/tiny.json --num-requests 60 --real-repeats 2 --output-dir out/fidelity
# dynasim plot out/fidelity/fidelity.json --kind sim-vs-real --output out/fidelity/plots
# # is this machine steady enough to judge by?
# python -m replay.steadiness --seconds 60
# ```
#
# `dynasim calibrate` fits the `tokens` step-time form with scipy and writes a profile
# with its held-out error and valid ranges. `dynasim fidelity` calibrates first when
# given no `--profile`. `dynasim validate --base-url URL --model M` runs it after the A100
# table (its flags are `--live-profile` and `--live-output-dir` there). The live table
# gives, per load, the median/p90 E2E and TTFT errors, SLO attainment real against
# simulated, the engine's decode ms per token against the simulated one, the client's
# p99 dispatch lag and the CPU pressure. The targets are a median E2E error <= 10% and
# TTFT <= 25% per load.
#
# **Read it against the noise floor.** `--real-repeats 2` replays each trace a second
# time and prints how much the server differs from itself; no simulator can be expected
# to match one replay more closely than a second replay of the same requests does. On
# a small shared CPU machine that floor is about as large as the targets, and the
# simulator's error is of the same size, so the targets can be neither met nor checked
# there. The machine's own speed moves: `python -m replay.steadiness` times one fixed
# piece of CPU work, pinned to one core, again and again, and prints its spread and the
# median per 10 s window. The calibrated profile keeps the speed of the minutes it was
# measured in, and over saturation amplifies a later change of speed. `--recalibrate`
# (a quick calibration just before each load) and `--wait-calm PSI` (wait until the
# machine's CPU pressure is below PSI) follow or avoid the drift. A GPU server with CPU
# cores to spare is where this check means something.
#
# **CPU contention, what was tried.** vLLM's CPU default (`--executor mp` of
# `replay.testing.vllm_server`) runs the model in a separate worker process whose
# shared-memory queues busy-poll with `sched_yield` for 1 s after each message
# (`shm_broadcast.py`, `busy_loop_s`); on 2 cores that starves the API server and the
# client (the live table's dispatch-lag column shows it). Pinning the engine core and
# worker to CPU 0 and the API server and client to CPU 1 (`--pin` on the server,
# `--client-cpus 1` on the client) slowed decode under load against the calibration.
# `--executor uni` runs the model inside the engine-core process, leaving no worker to
# spin, and removes the client's lag at light load, but not the machine's drift; and in
# one clean-clone CI run under `uni` a quick calibration's decode steps came out half the
# engine's in the replay right after, so the tests keep vLLM's default (`mp`).

# %% [markdown]
# ## Speed
#
# The Azure 2023 conversation trace at its recorded arrival times on
# `distserve-opt13b-a100`, as shipped (vLLM v0 scheduling, requests beyond OPT-13B's
# 2,048-token context rejected) and with every request served (`--max-model-len 16384`,
# v0 and V1 scheduling). `dynasim.experiments.benchmark.run_benchmark` prints a line per
# run; the table has the median of the runs. CLI: `dynasim benchmark --repeat 3
# [--scheduling v1] [--max-model-len 16384]` (pin it to one CPU with `taskset -c 0` to
# compare machines).

# %%
import statistics  # noqa: E402

import pandas as pd  # noqa: E402

from dynasim.experiments.benchmark import run_benchmark  # noqa: E402
from dynasim.trace import read_trace, write_mooncake  # noqa: E402

trace = BENCH_TRACE
if BENCH_REQUESTS is not None:  # small mode: the first requests only
    cut = OUT / "benchmark" / f"{BENCH_TRACE}-first{BENCH_REQUESTS}.jsonl"
    cut.parent.mkdir(parents=True, exist_ok=True)
    write_mooncake(read_trace(BENCH_TRACE).head(BENCH_REQUESTS), cut)
    trace = str(cut)
    print(f"small mode: the first {BENCH_REQUESTS} requests of {BENCH_TRACE}, "
          f"{BENCH_REPEAT} run per variant")

VARIANTS = {"as shipped (v0, max_model_len 2048)": {},
            "--max-model-len 16384": {"max_model_len": 16384},
            "--scheduling v1 --max-model-len 16384": {"scheduling": "v1",
                                                      "max_model_len": 16384}}
speed = []
for variant, limits in VARIANTS.items():
    results = run_benchmark(trace, "distserve-opt13b-a100", BENCH_REPEAT, **limits)
    wall = statistics.median(r["wall_s"] for r in results)
    sim_s = results[0]["simulated_s"]
    speed.append({"variant": variant, "requests": results[0]["requests"],
                  "served": results[0]["served"], "wall s": wall, "simulated s": sim_s,
                  "simulated s per wall s": sim_s / wall,
                  "engine steps": results[0]["engine_steps"]})
speed = pd.DataFrame(speed)
print(speed.to_string(index=False, formatters={
    "wall s": "{:.2f}".format, "simulated s": "{:,.0f}".format,
    "simulated s per wall s": "{:,.0f}x".format, "engine steps": "{:,}".format,
    "requests": "{:,}".format, "served": "{:,}".format}))

# %% [markdown]
# The engine does no Python work per token: between events that change the batch it
# advances a whole run of decode steps in one SimPy timeout (`dynasim/engine.py`), so
# wall time follows the number of batch changes, not of tokens.

# %%
assert len(rows) == len(loo) == len(RUNS) and len(speed) == len(VARIANTS)
assert all(0 <= r[k] < 10 for r in rows + rows_13 + loo
           for k in ("median_e2e_error", "median_ttft_error"))
assert (speed["simulated s per wall s"] > 1).all()
assert (OUT / "figures" / "fidelity-ground-truth-decode.html").stat().st_size > 1000
