"""Batch frontier of Dynasor-CoT on logged long chains of thought (Dynasor §2, Fig. 6).

No serving system: every trajectory of a :class:`~dynasim.workloads.cot.CotWorkload` is
replayed from its logged probes under each offline policy of
:mod:`dynasim.policies.cot` (``budget`` B, ``dynasor-cot`` (T, w, τ), ``full``), and each
(model, dataset) group gets one row per setting:

* ``tokens_mean``: main-stream generated tokens per trajectory (tokens);
* ``probe_tokens_mean``: tokens decoded by its probes (tokens; the probe prompts reuse
  the main request's cached prefix, so their prefill is not counted);
* ``accuracy``: fraction whose answer ``math_equal``\\s the reference;
* ``saving_at_equal_accuracy`` = 1 − tokens_mean / B(acc), B(acc) the mean tokens the
  ``budget`` baseline needs for the same accuracy: linear interpolation on its monotone
  accuracy curve (the running maximum of accuracy over increasing budgets, from (0, 0));
  NaN when the accuracy is above every budget's (the paper's Fig. 6 metric);
  ``saving_with_probes`` is the same with probe tokens added on both sides.

:data:`PAPER_SAVINGS` holds the paper's figures for the comparison table
(:func:`paper_comparison`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dynasim.certaindex import math_equal
from dynasim.policies import cot as rule

if TYPE_CHECKING:
    from dynasim.workloads.cot import CotTrajectory, CotWorkload

#: Dynasor §2 Fig. 6: tokens saved by Dynasor-CoT at the baseline's accuracy, by model
#: and dataset (fractions).
PAPER_SAVINGS = {
    ("DeepSeek-R1-Distill-Qwen-7B", "aime24"): 0.11,
    ("DeepSeek-R1-Distill-Qwen-7B", "amc23"): 0.20,
    ("DeepSeek-R1-Distill-Qwen-7B", "math500"): 0.29,
    ("DeepSeek-R1-Distill-Qwen-32B", "aime24"): 0.15,
    ("DeepSeek-R1-Distill-Qwen-32B", "amc23"): 0.25,
    ("DeepSeek-R1-Distill-Qwen-32B", "math500"): 0.19,
}
POLICIES = ("budget", "dynasor-cot", "full")
BUDGET_STEP = 256


def _correct(answer: str | None, target: str) -> bool:
    return answer is not None and math_equal(answer, target)


def _summary(trajs: Sequence[CotTrajectory], outcomes: list[rule.CotOutcome]) -> dict:
    return {"trajectories": len(trajs),
            "tokens_mean": float(np.mean([o.tokens for o in outcomes])),
            "probe_tokens_mean": float(np.mean([o.probe_tokens for o in outcomes])),
            "probes_mean": float(np.mean([o.probes for o in outcomes])),
            "accuracy": float(np.mean([_correct(o.answer, t.target)
                                       for o, t in zip(outcomes, trajs)])),
            "stopped_fraction": float(np.mean([o.stopped for o in outcomes]))}


def default_budgets(trajs: Sequence[CotTrajectory], step: int = BUDGET_STEP) -> list[int]:
    """Every ``step`` tokens up to the longest trajectory (rounded up)."""
    top = max(t.tokens for t in trajs)
    return list(range(step, -(-top // step) * step + 1, step))


def evaluate_group(trajs: Sequence[CotTrajectory], *, policies: Sequence[str] = POLICIES,
                   probe_intervals: Sequence[int] = (64,), windows: Sequence[int] = (2,),
                   threshold: float = 1.0, budgets: Sequence[int] | None = None,
                   data_interval: int = 64) -> pd.DataFrame:
    """Rows of one (model, dataset) group: ``policy, probe_interval, certainty_window,
    threshold, budget`` (NaN where not a knob of the policy) and the :func:`_summary`
    columns; ``full`` is always included (the accuracy reference).

    Raises:
        ValueError: an unknown policy; a probe interval not a multiple of
            ``data_interval``; a window < 1; a negative budget.
    """
    for p in policies:
        if p not in POLICIES:
            raise ValueError(f"unknown CoT policy {p!r} (known: {', '.join(POLICIES)})")
    rows = [{"policy": "full", **_summary(trajs, [rule.full(t.tokens, t.final_answer)
                                                  for t in trajs])}]
    if "budget" in policies:
        for b in budgets or default_budgets(trajs):
            rows.append({"policy": "budget", "budget": int(b), **_summary(trajs, [
                rule.budget(t.positions, t.answers, t.probe_tokens, t.tokens,
                            t.final_answer, int(b)) for t in trajs])})
    if "dynasor-cot" in policies:
        for T in probe_intervals:
            for w in windows:
                rows.append({"policy": "dynasor-cot", "probe_interval": int(T),
                             "certainty_window": int(w), "threshold": threshold,
                             **_summary(trajs, [rule.dynasor_cot(
                                 t.positions, t.answers, t.hesitant, t.probe_tokens,
                                 t.tokens, t.final_answer, probe_interval=int(T),
                                 window=int(w), threshold=threshold,
                                 data_interval=data_interval) for t in trajs])})
    return pd.DataFrame(rows)


def tokens_for_accuracy(curve: pd.DataFrame, accuracy: float, tokens: str = "tokens_mean"
                        ) -> float:
    """Tokens the budget baseline needs to reach ``accuracy``: linear interpolation on
    its monotone curve (running maximum of accuracy over increasing ``tokens``, starting
    from (0 tokens, 0 accuracy)); NaN above the curve's best accuracy.

    Args:
        curve: budget rows with ``tokens`` and ``accuracy`` columns.
    """
    c = curve.sort_values(tokens)
    xs = np.concatenate([[0.0], c[tokens].to_numpy(float)])
    ys = np.maximum.accumulate(np.concatenate([[0.0], c["accuracy"].to_numpy(float)]))
    if accuracy > ys[-1] + 1e-12:
        return float("nan")
    i = int(np.argmax(ys >= accuracy - 1e-12))
    if i == 0:
        return 0.0
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return float(x1 if y1 == y0 else x0 + (accuracy - y0) / (y1 - y0) * (x1 - x0))


def add_savings(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``budget_tokens_at_equal_accuracy``, ``saving_at_equal_accuracy`` and
    ``saving_with_probes`` (module docstring) to every non-budget row, per group."""
    table = table.copy()
    table["total_tokens_mean"] = table["tokens_mean"] + table["probe_tokens_mean"]
    for col in ("budget_tokens_at_equal_accuracy", "saving_at_equal_accuracy",
                "saving_with_probes"):
        table[col] = np.nan
    for _, g in table.groupby(["model", "dataset"], sort=False):
        curve = g[g.policy == "budget"]
        if curve.empty:
            continue
        for i, r in g[g.policy != "budget"].iterrows():
            need = tokens_for_accuracy(curve, r.accuracy)
            need_all = tokens_for_accuracy(curve, r.accuracy, "total_tokens_mean")
            table.loc[i, "budget_tokens_at_equal_accuracy"] = need
            if need > 0:
                table.loc[i, "saving_at_equal_accuracy"] = 1 - r.tokens_mean / need
            if need_all > 0:
                table.loc[i, "saving_with_probes"] = 1 - r.total_tokens_mean / need_all
    return table


def frontier(workload: CotWorkload, **knobs: object) -> pd.DataFrame:
    """:func:`evaluate_group` over every (model, dataset) group of ``workload``, with
    :func:`add_savings`; columns ``workload, model, dataset`` first. ``knobs`` go to
    :func:`evaluate_group`."""
    frames = []
    for (model, dataset), trajs in workload.groups().items():
        g = evaluate_group(trajs, data_interval=workload.probe_interval, **knobs)
        g.insert(0, "dataset", dataset)
        g.insert(0, "model", model)
        g.insert(0, "workload", workload.name)
        frames.append(g)
    cols = ["probe_interval", "certainty_window", "threshold", "budget"]
    table = pd.concat(frames, ignore_index=True)
    for c in cols:
        if c not in table:
            table[c] = np.nan
    return add_savings(table)


def grading_disagreement(workload: CotWorkload) -> pd.DataFrame:
    """How often ``math_equal(final_answer, target)`` disagrees with the logged
    ``final_correct``, per (model, dataset): ``trajectories, disagree, rate,
    logged_accuracy, math_equal_accuracy, examples`` (up to 3 distinct pairs)."""
    rows = []
    for (model, dataset), trajs in workload.groups().items():
        bad = [t for t in trajs if t.correct != t.final_correct_logged]
        pairs = list(dict.fromkeys(f"{t.final_answer!r} vs {t.target!r} (logged "
                                   f"{t.final_correct_logged})" for t in bad))
        rows.append({"model": model, "dataset": dataset, "trajectories": len(trajs),
                     "disagree": len(bad), "rate": len(bad) / len(trajs),
                     "logged_accuracy": float(np.mean([t.final_correct_logged
                                                       for t in trajs])),
                     "math_equal_accuracy": float(np.mean([t.correct for t in trajs])),
                     "examples": "; ".join(pairs[:3])})
    return pd.DataFrame(rows)


def paper_comparison(table: pd.DataFrame, tolerance: float = 0.01) -> pd.DataFrame:
    """Per (model, dataset): the paper's saving (NaN for models it did not run) beside
    dynasim's: ``best_saving`` (the largest ``saving_at_equal_accuracy`` over the
    dynasor-cot settings) and ``iso_saving`` (the largest among settings whose accuracy
    is within ``tolerance`` of the full trajectories'), each with its setting and
    accuracy change against ``full``."""
    rows = []
    for (model, dataset), g in table.groupby(["model", "dataset"], sort=False):
        full_acc = float(g[g.policy == "full"].accuracy.iloc[0])
        d = g[g.policy == "dynasor-cot"].dropna(subset=["saving_at_equal_accuracy"])
        row = {"model": model, "dataset": dataset, "full_accuracy": full_acc,
               "paper_saving": PAPER_SAVINGS.get((model.split("/")[-1], dataset),
                                                 float("nan"))}
        for label, sub in (("best", d), ("iso", d[d.accuracy >= full_acc - tolerance])):
            if sub.empty:
                row.update({f"{label}_saving": float("nan"), f"{label}_setting": "-",
                            f"{label}_accuracy_change": float("nan")})
                continue
            r = sub.loc[sub.saving_at_equal_accuracy.idxmax()]
            row.update({f"{label}_saving": float(r.saving_at_equal_accuracy),
                        f"{label}_setting": f"T={int(r.probe_interval)} "
                                            f"w={int(r.certainty_window)}",
                        f"{label}_accuracy_change": float(r.accuracy) - full_acc})
        rows.append(row)
    return pd.DataFrame(rows)


def frontier_figures(table: pd.DataFrame) -> dict:
    """One token-accuracy figure per (model, dataset): the budget curve (mean main-stream
    tokens against accuracy, %), the Dynasor-CoT points (one marker per probe interval,
    labelled by window) and the full trajectory. Returns ``{name: plotly Figure}``."""
    import plotly.graph_objects as go

    from dynasim.experiments.figures import PALETTE, style
    from dynasim.experiments.results import slug

    figs = {}
    for (model, dataset), g in table.groupby(["model", "dataset"], sort=False):
        fig = go.Figure()
        b = g[g.policy == "budget"].sort_values("budget")
        fig.add_trace(go.Scatter(x=b.tokens_mean, y=b.accuracy * 100, mode="lines+markers",
                                 name="budget (truncate at B)", line={"color": PALETTE[0]},
                                 marker={"size": 4}, customdata=b.budget,
                                 hovertemplate="B %{customdata:.0f}<br>%{x:,.0f} tokens"
                                               "<br>accuracy %{y:.2f}%<extra></extra>"))
        d = g[g.policy == "dynasor-cot"]
        for i, (T, s) in enumerate(d.groupby("probe_interval")):
            fig.add_trace(go.Scatter(
                x=s.tokens_mean, y=s.accuracy * 100, mode="markers+text",
                name=f"dynasor-cot T={int(T)}", text=[f"w={int(w)}" for w in
                                                       s.certainty_window],
                textposition="top center", marker={"size": 9, "color": PALETTE[1 + i]},
                hovertemplate="%{text}<br>%{x:,.0f} tokens<br>accuracy %{y:.2f}%"
                              "<extra></extra>"))
        f = g[g.policy == "full"]
        fig.add_trace(go.Scatter(x=f.tokens_mean, y=f.accuracy * 100, mode="markers",
                                 name="full trajectory", marker={"size": 11, "symbol": "star",
                                                                 "color": "black"}))
        name = model.split("/")[-1]
        style(fig, f"Dynasor-CoT vs token budget: {name} on {dataset}",
              f"{int(f.trajectories.iloc[0])} logged trajectories, no serving system; "
              "main-stream tokens (probe tokens not included)",
              "mean generated tokens per trajectory (tokens)",
              "accuracy (% of trajectories correct)", legend_title="policy")
        figs[slug(f"{name}-{dataset}")] = fig
    return figs


def _pct(x: float) -> str:
    return "   n/a" if x != x else f"{x:>+6.1%}"


def format_report(table: pd.DataFrame, disagreement: pd.DataFrame) -> str:
    """The text ``dynasim batch`` prints for a CoT workload: per (model, dataset) the
    grading check, the full trajectory, budget points at powers of two, every
    dynasor-cot setting (accuracy change against full, savings), then the comparison
    with the paper's table (:func:`paper_comparison`)."""
    out = []
    for (model, dataset), g in table.groupby(["model", "dataset"], sort=False):
        f = g[g.policy == "full"].iloc[0]
        d = disagreement[(disagreement.model == model) & (disagreement.dataset == dataset)]
        out.append(f"{model.split('/')[-1]} on {dataset}: {int(f.trajectories)} "
                   f"trajectories, full length {f.tokens_mean:.0f} tokens, accuracy "
                   f"{f.accuracy:.4f}")
        if not d.empty:
            r = d.iloc[0]
            out.append(f"  math_equal(final_answer, target) disagrees with the logged "
                       f"final_correct on {int(r.disagree)} of {int(r.trajectories)} "
                       f"({r.rate:.2%})")
        b = g[(g.policy == "budget") & g.budget.isin([2 ** k for k in range(9, 16)])]
        if not b.empty:
            out.append("  budget: " + "  ".join(f"B={int(r.budget)}: {r.tokens_mean:.0f} "
                                                f"tok {r.accuracy:.3f}"
                                                for r in b.itertuples()))
        out.append(f"  {'policy':<12}{'T':>5}{'w':>4}{'tau':>5}{'tokens':>8}"
                   f"{'probe tok':>10}{'accuracy':>9}{'Δacc':>8}{'stopped':>8}"
                   f"{'saving':>8}{'+probes':>8}")
        for r in g[g.policy == "dynasor-cot"].itertuples():
            out.append(f"  {r.policy:<12}{int(r.probe_interval):>5}"
                       f"{int(r.certainty_window):>4}{r.threshold:>5.2f}"
                       f"{r.tokens_mean:>8.0f}{r.probe_tokens_mean:>10.0f}"
                       f"{r.accuracy:>9.4f}{r.accuracy - f.accuracy:>+8.4f}"
                       f"{r.stopped_fraction:>8.1%}{_pct(r.saving_at_equal_accuracy):>8}"
                       f"{_pct(r.saving_with_probes):>8}")
    cmp = paper_comparison(table)
    out.append("")
    out.append("token change against the budget baseline at its equal accuracy (negative: "
               "tokens saved): the paper (Dynasor §2 Fig. 6) and dynasim on these traces")
    out.append(f"  {'model':<30}{'dataset':>8}{'paper':>7}{'best':>8}  {'setting':<12}"
               f"{'Δacc':>7}{'iso-acc':>9}  {'setting':<12}{'Δacc':>7}")
    for r in cmp.itertuples():
        out.append(f"  {r.model.split('/')[-1]:<30}{r.dataset:>8}"
                   f"{'-' if r.paper_saving != r.paper_saving else f'{-r.paper_saving:.0%}':>7}"
                   f"{_pct(-r.best_saving):>8}  {r.best_setting:<12}"
                   f"{r.best_accuracy_change:>+7.3f}{_pct(-r.iso_saving):>9}  "
                   f"{r.iso_setting:<12}{r.iso_accuracy_change:>+7.3f}")
    for (model, dataset), s in PAPER_SAVINGS.items():
        if not ((cmp.model.str.endswith(model)) & (cmp.dataset == dataset)).any():
            out.append(f"  {model:<30}{dataset:>8}{-s:>7.0%}  (not run here)")
    out.append("  best: the largest saving over the settings run; iso-acc: the largest among "
               "settings within 1 point of the full trajectories' accuracy; Δacc against "
               "the full trajectory")
    return "\n".join(out)
