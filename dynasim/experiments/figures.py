"""The figure builders of ``dynasim plot`` (:mod:`dynasim.experiments.plots` reads the sweep, batch
and program inputs and writes the files; the sim-vs-real reader is here, with its
figure). Each returns ``{name: plotly Figure}``, ``name`` being the file stem
after the kind (e.g. ``game24-sc_vidur-llama3-8b-a100_slo1``).

Trace naming (what the tests and readers of the HTML rely on): a policy's mean line is
named after the policy; its ± std band is ``"<policy> ± std"`` (no legend entry); the
attainment crossing marker is ``"<policy>: ..."`` in the policy's legend group; the
target is a dashed layout shape at ``target`` x 100 %.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dynasim.errors import InputError
from dynasim.experiments.results import (
    max_rate_at_attainment,
    min_slo_scale_at_attainment,
    ok_rows,
    seed_stats,
    slug,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]
#: Usual order of policies in legends (others follow, alphabetically).
ORDER = ["fcfs", "lpm", "gang", "sjf", "plas", "lpm+certaindex", "gang+certaindex",
         "sjf+certaindex", "plas+certaindex", "sjf+two-sided", "certaindex", "two-sided",
         "even", "length", "curve"]
WIDTH, HEIGHT = 960, 560


def policy_order(policies: Iterable[str]) -> list[str]:
    """Policies in legend order (:data:`ORDER` first)."""
    return sorted(set(map(str, policies)),
                  key=lambda p: (ORDER.index(p) if p in ORDER else len(ORDER), p))


def colors(policies: Iterable[str]) -> dict[str, str]:
    """A stable colour per policy (same policy, same colour in every figure)."""
    return {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(policy_order(policies))}


MARKERS = ["circle", "square", "triangle-up", "x", "cross", "star", "triangle-down",
           "pentagon", "hexagon", "star-diamond"]


def markers(policies: Iterable[str]) -> dict[str, str]:
    """A stable marker symbol per policy, so lines that coincide stay tellable apart."""
    return {p: MARKERS[i % len(MARKERS)] for i, p in enumerate(policy_order(policies))}


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def _seeds_text(counts: Iterable[int]) -> str:
    counts = sorted({int(c) for c in counts})
    if not counts:
        return "0 seeds"
    n = counts[0] if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"{n} seed{'s' if counts[-1] != 1 else ''}"


def _line_style(policy: str, color: str, symbol: str, hidden: bool) -> dict:
    """A policy's line: solid with filled markers, or, when it lies on top of an earlier
    line (``hidden``), dashed with larger open markers so the one below stays visible."""
    return {"mode": "lines+markers", "name": policy, "legendgroup": policy,
            "line": {"color": color, "width": 2.5, "dash": "dash" if hidden else None},
            "marker": {"size": 11 if hidden else 8,
                       "symbol": symbol + ("-open" if hidden else "")}}


def style(fig: go.Figure, title: str, sub: str, x: str | None, y: str | None, **kw) -> None:
    """The project's one figure style (every ``dynasim plot`` kind, ``dynasim compare``
    and the ``dynasim calibrate`` report): white template, 14 pt font, a left-aligned
    title with ``sub`` as its subtitle, the legend titled ``legend_title`` (default
    "policy"), ``width`` x ``height`` pixels (default 960 x 560). ``x``/``y`` are the
    axis titles; ``None`` when subplots title their own axes."""
    if x is not None:  # None: subplots title their own axes
        kw.update(xaxis_title=x, yaxis_title=y)
    fig.update_layout(
        title={"text": f"{title}<br><sup>{sub}</sup>", "x": 0.02, "xanchor": "left"},
        width=kw.pop("width", WIDTH),
        height=kw.pop("height", HEIGHT), template="plotly_white",
        font={"size": 14}, legend={"title": kw.pop("legend_title", "policy")},
        margin={"t": 90 + 22 * sub.count("<br>"), "r": 30, "l": 80, "b": 70}, **kw)


def note_empty(fig: go.Figure, why: str, row: int | None = None, col: int | None = None) -> None:
    """Write ``why`` in the middle of an empty panel (the whole figure, or the subplot at
    ``row``, ``col``), so an empty panel says why it is empty."""
    x, y = 0.5, 0.5  # paper coordinates: plotly.js does not lay out empty subplots' axes
    if row is not None:
        sub = fig.get_subplot(row, col)
        x, y = (sum(sub.xaxis.domain) / 2, sum(sub.yaxis.domain) / 2)
    fig.add_annotation(text=why, x=x, y=y, xref="paper", yref="paper", showarrow=False,
                       xanchor="center", yanchor="middle", bgcolor="rgba(255,255,255,0.85)",
                       font={"size": 13, "color": "#555"},
                       name=f"empty {row or 1},{col or 1}")


def coinciding(series: dict[str, tuple[np.ndarray, np.ndarray]], atol: float = 1.5,
               xrtol: float = 0.02) -> dict[str, tuple[str, str]]:
    """The lines of ``series`` (``{policy: (x, y)}``, in drawing order) that lie on an
    earlier one, which they would hide: ``{policy: (earlier policy, "=" or "≈")}``;
    "=" when equal (1e-9), "≈" when every y is within ``atol`` (axis units) at x within
    ``xrtol`` (relative) of the earlier line's."""
    same: dict[str, tuple[str, str]] = {}
    seen: list[str] = []
    for p, (x, y) in series.items():
        for q in seen:
            qx, qy = series[q]
            if len(qx) != len(x) or not np.allclose(qx, x, rtol=xrtol, atol=0):
                continue
            if np.allclose(qy, y, rtol=0, atol=atol, equal_nan=True):
                exact = np.allclose(qx, x) and np.allclose(qy, y, rtol=0, atol=1e-9,
                                                           equal_nan=True)
                same[p] = (same.get(q, (q, ""))[0], "=" if exact else "≈")
                break
        seen.append(p)
    return same


def _same_text(same: dict[str, tuple[str, str]]) -> str:
    """``"fcfs = lpm; gang ≈ sjf"`` for each set of coinciding lines."""
    groups: dict[str, str] = {}
    for p, (q, sign) in same.items():
        groups[q] = groups.get(q, q) + f" {sign} {p}"
    return "; ".join(groups.values())


def _band(fig: go.Figure, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, color: str, name: str,
          fill: bool = True) -> None:
    """A ± std band: a translucent fill in ``color`` with a dotted edge of that colour
    (the edge alone when ``fill`` is false: a band lying on an earlier one)."""
    import plotly.graph_objects as go

    x, lo, hi = map(np.asarray, (x, lo, hi))
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.sum() < 2 or not np.any(hi[ok] > lo[ok]):
        return
    x, lo, hi = x[ok], lo[ok], hi[ok]
    fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]),
                             y=np.concatenate([hi, lo[::-1]]), fill="toself",
                             mode="lines", fillcolor=_rgba(color, 0.1 if fill else 0.0),
                             line={"width": 1, "color": color, "dash": "dot"},
                             hoverinfo="skip", showlegend=False, name=f"{name} ± std",
                             legendgroup=name))


def _attainment_curves(df: pd.DataFrame, along: str, per: str, target: float, *,
                       crossings: pd.DataFrame) -> dict:
    """rate-attainment (``along`` = program_rate) and slo-attainment (slo_scale).

    Seed spread is drawn as ± std error bars in the policy's colour (translucent bands of
    five policies blend into one colour); a line lying exactly on an earlier one is
    dashed with open markers and named in the subtitle ("fcfs = lpm")."""
    import plotly.graph_objects as go

    df = ok_rows(df)
    col, sym = colors(df["policy"]), markers(df["policy"])
    figs = {}
    for (w, prof, at), g in df.groupby(["workload", "profile", per], sort=True):
        fig = go.Figure()
        stats = seed_stats(g, ["policy", along], ["slo_attainment"])
        series = {}
        for policy in policy_order(stats["policy"]):
            s = stats[stats["policy"] == policy].sort_values(along)
            series[policy] = (s[along].to_numpy(float),
                              s["slo_attainment_mean"].to_numpy(float) * 100,
                              s["slo_attainment_std"].to_numpy(float) * 100,
                              s["seeds"].to_numpy())
        same = coinciding({p: v[:2] for p, v in series.items()})
        for policy, (x, m, sd, n) in series.items():
            hidden = policy in same
            fig.add_trace(go.Scatter(
                **_line_style(policy, col[policy], sym[policy], hidden), x=x, y=m,
                error_y={"type": "data", "array": np.minimum(m + sd, 100.0) - m,
                         "arrayminus": np.minimum(sd, m), "color": col[policy],
                         "thickness": 1.5, "width": 4, "visible": bool(np.any(sd > 0))},
                customdata=np.column_stack([sd, n]),
                hovertemplate=f"{policy}<br>{along} %{{x:g}}<br>attainment %{{y:.1f}}% "
                              "± %{customdata[0]:.1f}<br>%{customdata[1]} seeds"
                              "<extra></extra>"))
            c = crossings[(crossings["workload"] == w) & (crossings["profile"] == prof)
                          & (crossings["policy"] == policy)
                          & np.isclose(crossings[per].astype(float), float(at))]
            _crossing_marker(fig, c, along, target, col[policy], policy, (x, m),
                             hidden)
        fig.add_hline(y=target * 100, line={"dash": "dash", "color": "#555", "width": 1.5},
                      annotation_text=f"{target:.0%} attainment",  # where curves are low
                      annotation_position="top right" if along == "program_rate"
                      else "top left")
        seeds = _seeds_text(g.groupby(["policy", along])["seed"].nunique())
        if along == "program_rate":
            title = f"SLO attainment vs program arrival rate: {w}"
            sub = f"profile {prof}, SLO scale {at:g}, {seeds}; ◆ = highest rate at " \
                  f"{target:.0%} attainment (interpolated), ≥ = met at every rate"
            xt, stem = "program arrival rate (programs/s)", f"slo{at:g}"
        else:
            title = f"SLO attainment vs SLO scale: {w}"
            sub = f"profile {prof}, {at:g} programs/s, {seeds}; ◆ = tightest SLO " \
                  f"scale at {target:.0%} attainment (interpolated), ≤ = met at every scale"
            xt, stem = "SLO scale (deadline / (difficulty × base deadline))", \
                f"rate{at:g}"
        if same:
            sub += f"<br>{_same_text(same)}: lines on top of each other (the later " \
                   "dashed, open markers)"
        style(fig, title, sub, xt, "SLO attainment (% of programs meeting deadline)")
        fig.update_yaxes(range=[0, 102])
        if along == "program_rate":
            fig.update_xaxes(rangemode="tozero")
        else:  # the scales tried, not 0 to the largest
            xs = g[along].astype(float)
            pad = max(0.05 * (xs.max() - xs.min()), 0.05 * xs.max(), 1e-9)
            fig.update_xaxes(range=[xs.min() - pad, xs.max() + pad])
        figs[f"{slug(w)}_{slug(prof)}_{slug(stem)}"] = fig
    return figs


def _crossing_marker(fig: go.Figure, c: pd.DataFrame, along: str, target: float, color: str,
                     policy: str, curve: tuple[np.ndarray, np.ndarray],
                     on_top: bool = False) -> None:
    """The policy's crossing marker; ``on_top`` (its line lies on an earlier one): an
    open, larger diamond, so a diamond below it still shows."""
    import plotly.graph_objects as go

    diamond = {"symbol": "diamond-open", "size": 18, "color": color,
               "line": {"color": color, "width": 2.5}} if on_top else {
        "symbol": "diamond", "size": 13, "color": color,
        "line": {"color": "white", "width": 1.5}}
    if not len(c):
        return
    col = "max_rate" if along == "program_rate" else "min_slo_scale"
    v, status = float(c[col].iloc[0]), c["status"].iloc[0]
    rate = along == "program_rate"
    if not math.isfinite(v):  # a legend line saying why there is no diamond
        if status == "below_target":
            fig.add_trace(go.Scatter(
                x=[None], y=[None], mode="markers", legendgroup=policy,
                marker={"symbol": "diamond-open", "size": 11, "color": color},
                name=f"{policy}: < {target:.0%} at every "
                     f"{'rate' if rate else 'scale'}", meta={"crossing": col,
                                                              "status": status}))
        return
    unit, pre = (" programs/s", "") if rate else ("", "scale ")
    if status == "beyond_range":  # met at every point: a bound at the last one tried
        sign = "≥" if rate else "≤"
        x, m = curve
        y = float(m[np.isclose(x, v)][0])
        fig.add_trace(go.Scatter(
            x=[v], y=[y], mode="markers+text", text=[sign], legendgroup=policy,
            cliponaxis=False,
            textposition="top center", textfont={"color": color, "size": 16},
            marker=diamond,
            name=f"{policy}: {pre}{sign} {v:.3g}{unit} (met at every "
                 f"{'rate' if rate else 'scale'})",
            meta={"crossing": col, "status": status},
            hovertemplate=f"{policy}<br>{target:.0%} met at every "
                          f"{'rate' if rate else 'scale'} tried: {col} {sign} "
                          f"{v:.3g}{unit}<extra></extra>"))
        return
    fig.add_trace(go.Scatter(
        x=[v, v], y=[0, target * 100], mode="lines", line={"color": color, "width": 1,
                                                          "dash": "dot"},
        showlegend=False, hoverinfo="skip", legendgroup=policy,
        name=f"{policy} {col} guide"))
    fig.add_trace(go.Scatter(
        x=[v], y=[target * 100], mode="markers", legendgroup=policy,
        marker=diamond,
        name=f"{policy}: {pre}{v:.3g}{unit}", meta={"crossing": col, "status": status},
        hovertemplate=f"{policy}<br>{col} {v:.3g}{unit} ({status})<extra></extra>"))


def rate_attainment_figures(df: pd.DataFrame, target: float = 0.9) -> dict:
    """Dynasor §4 online figure type (a): program arrival
    rate (programs/s) against SLO attainment (%), a line per policy (mean over seeds, ±
    std error bars), the target as a dashed line and each policy's
    :func:`~dynasim.experiments.results.max_rate_at_attainment` as a diamond on it (a
    policy meeting the target at every rate: a diamond marked "≥" at its last rate and
    attainment, a lower bound). One figure per (workload, profile, slo_scale).

    Args:
        df: sweep results (``workload, profile, policy, program_rate, slo_scale, seed,
            slo_attainment`` as a 0-1 fraction); rows with a non-empty ``error`` are
            left out.
    """
    return _attainment_curves(df, "program_rate", "slo_scale", target,
                              crossings=max_rate_at_attainment(df, target))


def slo_attainment_figures(df: pd.DataFrame, target: float = 0.9) -> dict:
    """Dynasor §4 online figure type (b): SLO scale against SLO attainment (%),
    a line per policy, one figure per (workload, profile, program_rate), the tightest
    scale meeting the target (:func:`~dynasim.experiments.results.min_slo_scale_at_attainment`)
    marked ("≤" at the smallest scale when every scale met it); the x axis spans the
    scales tried. Input as :func:`rate_attainment_figures`."""
    return _attainment_curves(df, "slo_scale", "program_rate", target,
                              crossings=min_slo_scale_at_attainment(df, target))


#: Label positions, one per policy in turn, so labels of nearby points overlap less.
POSITIONS = ["top center", "bottom center", "top left", "bottom left", "top right",
             "bottom right"]


def _cell_label(rate: float, scale: float, one_rate: bool, one_scale: bool) -> str:
    """A cell's label: "(rate/s, ×scale)", leaving out what is the same for all."""
    parts = ([] if one_rate and not one_scale else [f"{rate:g}/s"]) + \
        ([] if one_scale else [f"×{scale:g}"])
    return "(" + ", ".join(parts) + ")"


def _cell_labels(s: pd.DataFrame, one_rate: bool, one_scale: bool) -> list[str]:
    """One label per cell of ``s``; cells drawn on the same spot (attainment and accuracy
    equal to 0.1 point) share one label, "(0.5, 1, 1.5/s)", on the first of them."""
    spots: dict[tuple, list[int]] = {}
    pos = zip(s["slo_attainment_mean"].round(3), s["accuracy_mean"].round(3))
    for i, key in enumerate(pos):
        spots.setdefault(key, []).append(i)
    rates, scales = s["program_rate"].to_numpy(float), s["slo_scale"].to_numpy(float)
    out = [""] * len(s)
    for idx in spots.values():
        if len(idx) == 1:
            out[idx[0]] = _cell_label(rates[idx[0]], scales[idx[0]], one_rate, one_scale)
        elif one_scale:
            out[idx[0]] = "(" + ", ".join(f"{rates[i]:g}" for i in idx) + "/s)"
        else:
            out[idx[0]] = " ".join(_cell_label(rates[i], scales[i], one_rate, False)
                                   for i in idx)
    return out


def accuracy_attainment_figures(df: pd.DataFrame, target: float = 0.9) -> dict:
    """Dynasor §4 online figure type (c): SLO attainment (%) against accuracy (%),
    a marker per policy and (program_rate, slo_scale) cell, labelled "(rate/s, ×scale)"
    (what all cells share left out) and not joined (cells are not an ordered series; mean over seeds, ± std error bars
    both ways), the target attainment as a dashed vertical line. One figure per (workload, profile). ``df`` also needs
    ``accuracy`` (0-1)."""
    import plotly.graph_objects as go

    df = ok_rows(df)
    col, sym = colors(df["policy"]), markers(df["policy"])
    figs = {}
    for (w, prof), g in df.groupby(["workload", "profile"], sort=True):
        fig = go.Figure()
        stats = seed_stats(g, ["policy", "program_rate", "slo_scale"],
                           ["slo_attainment", "accuracy"])
        one_rate, one_scale = g["program_rate"].nunique() == 1, g["slo_scale"].nunique() == 1
        for i, policy in enumerate(policy_order(stats["policy"])):
            s = stats[stats["policy"] == policy].sort_values(
                ["slo_attainment_mean", "program_rate"])
            fig.add_trace(go.Scatter(
                x=s["slo_attainment_mean"] * 100, y=s["accuracy_mean"] * 100,
                mode="markers+text", name=policy, legendgroup=policy,
                text=_cell_labels(s, one_rate, one_scale),
                textposition=POSITIONS[i % len(POSITIONS)], cliponaxis=False,
                textfont={"size": 10, "color": col[policy]},
                marker={"size": 9, "symbol": sym[policy], "color": col[policy]},
                error_x={"type": "data", "array": s["slo_attainment_std"] * 100,
                         "thickness": 1, "width": 0, "color": _rgba(col[policy], 0.35)},
                error_y={"type": "data", "array": s["accuracy_std"] * 100, "thickness": 1,
                         "width": 0, "color": _rgba(col[policy], 0.35)},
                customdata=s[["program_rate", "slo_scale", "seeds"]].to_numpy(),
                hovertemplate=f"{policy}<br>%{{customdata[0]:g}} programs/s, SLO scale "
                              "%{customdata[1]:g}<br>attainment %{x:.1f}%<br>accuracy "
                              "%{y:.1f}%<br>%{customdata[2]} seeds<extra></extra>"))
        fig.add_vline(x=target * 100, line={"dash": "dash", "color": "#555", "width": 1.5},
                      annotation_text=f"{target:.0%} attainment",
                      annotation_position="bottom left")  # labels crowd the top
        rates = ", ".join(f"{r:g}" for r in sorted(g["program_rate"].unique()))
        scales = ", ".join(f"{r:g}" for r in sorted(g["slo_scale"].unique()))
        seeds = _seeds_text(g.groupby(["policy", "program_rate", "slo_scale"])["seed"]
                            .nunique())
        style(fig, f"Accuracy vs SLO attainment: {w}",
                f"profile {prof}, {seeds}; points: rate{'s' * (',' in rates)} {rates} "
                f"programs/s × SLO scale{'s' * (',' in scales)} {scales}",
                "SLO attainment (% of programs meeting deadline)",
                "accuracy (% of programs correct)")
        fig.update_xaxes(range=[0, 108])  # room for the labels of points at 100%
        fig.update_yaxes(rangemode="tozero")
        figs[f"{slug(w)}_{slug(prof)}"] = fig
    return figs


def _padded(v: np.ndarray, at_least: float) -> list[float]:
    """An axis range around the finite values ``v``: 5% padding each side, widened
    about its middle to ``at_least`` (so a 0.1-point difference is not drawn full
    height)."""
    v = v[np.isfinite(v)]
    lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    if hi - lo < at_least:
        mid = (lo + hi) / 2
        lo, hi = mid - at_least / 2, mid + at_least / 2
    return [lo, hi]


def token_accuracy_figures(df: pd.DataFrame) -> dict:
    """Dynasor batch mode (§4 / App. G token-to-accuracy curves): total output tokens
    over the workload (tokens) against accuracy (%), a line per intra-program policy
    through its caps (mean over seeds, ± std band in accuracy as a translucent fill in
    the policy's colour with a dotted edge, ± std error bars in tokens; coinciding lines
    named in the subtitle); the y axis spans at least 2 points. One figure per workload.

    Args:
        df: rows of ``dynasim batch`` CSVs: ``workload, policy, cap,
            output_tokens_mean, output_tokens_std, accuracy_mean, accuracy_std`` (0-1),
            optional ``seeds`` and ``knob_mean``.
    """
    import plotly.graph_objects as go

    col, sym = colors(df["policy"]), markers(df["policy"])
    figs = {}
    for w, g in df.groupby("workload", sort=True):
        fig = go.Figure()
        subs = {p: g[g["policy"] == p].sort_values("cap") for p in policy_order(g["policy"])}
        curves = {p: (s["output_tokens_mean"].to_numpy(float),
                      s["accuracy_mean"].to_numpy(float) * 100) for p, s in subs.items()}
        same, spans = coinciding(curves, atol=0.05), []
        for policy, s in subs.items():
            x, m = curves[policy]
            sd = s["accuracy_std"].to_numpy(float) * 100
            spans += [m - np.nan_to_num(sd), m + np.nan_to_num(sd)]
            _band(fig, x, m - sd, m + sd, col[policy], policy, fill=policy not in same)
            knob = s["knob_mean"] if "knob_mean" in s else s["cap"] * np.nan
            hidden = policy in same
            fig.add_trace(go.Scatter(
                **_line_style(policy, col[policy], sym[policy], hidden), x=x, y=m,
                error_x={"type": "data", "array": s["output_tokens_std"], "thickness": 1},
                customdata=np.column_stack([s["cap"], knob, sd]),
                hovertemplate=f"{policy}<br>cap %{{customdata[0]}} (mean knob "
                              "%{customdata[1]:.2f})<br>%{x:,.0f} tokens<br>accuracy "
                              "%{y:.2f}% ± %{customdata[2]:.2f}<extra></extra>"))
        seeds = _seeds_text(g["seeds"]) if "seeds" in g else "seeds not recorded"
        caps = ", ".join(str(int(c)) for c in sorted(g["cap"].unique()))
        sub = f"no serving system (token counts only), caps {caps}, {seeds}; bands ± std"
        if same:
            sub += f"<br>{_same_text(same)}: lines on top of each other (the later " \
                   "dashed, their bands outlined only)"
        style(fig, f"Accuracy vs output tokens (batch mode): {w}", sub,
              "output tokens, whole workload (tokens)",
              "accuracy (% of programs correct)", legend_title="intra-program policy")
        fig.update_yaxes(range=_padded(np.concatenate(spans), 2.0))
        figs[slug(w)] = fig
    return figs


def cdf_figures(groups: list[dict], kind: str) -> dict:
    """Program latency CDF (latency-cdf, seconds) or finish-time fairness CDF
    (fairness-cdf: φ = T_shared / output tokens, drawn in ms/token, lower is fairer;
    Dynasor App. D.3 / §4 fairness figure), a line per policy (always in the legend,
    even alone), the programs per policy counted in the subtitle, one figure per group
    of :func:`~dynasim.experiments.results.read_program_runs`."""
    import plotly.graph_objects as go

    scale = 1.0 if kind == "latency-cdf" else 1e3  # s/token -> ms/token
    figs = {}
    for g in groups:
        col = colors(g["lines"])
        fig = go.Figure()
        order = policy_order(g["lines"])
        for label in order:
            v = np.sort(np.asarray(g["lines"][label], float)) * scale
            fig.add_trace(go.Scatter(
                x=v, y=np.arange(1, len(v) + 1) / max(len(v), 1) * 100, mode="lines",
                line={"shape": "hv", "color": col[label], "width": 2.5}, name=label,
                showlegend=True,
                hovertemplate=f"{label}<br>%{{x:.4g}}<br>%{{y:.1f}}% of programs"
                              "<extra></extra>"))
        where = [f"profile {g.get('profile_label') or g['profile']}"]
        if g.get("program_rate") is not None:
            where.append(f"{g['program_rate']:g} programs/s")
        if g.get("slo_scale") is not None:
            where.append(f"SLO scale {g['slo_scale']:g}")
        counts = ", ".join(f"{p} {len(g['lines'][p])}" for p in order)
        where.append(f"{_seeds_text([g['seeds']])} pooled; programs per policy: {counts}")
        if kind == "latency-cdf":
            title, xt = "Program latency CDF", "program latency, arrival to finish (s)"
        else:
            title = "Finish-time fairness CDF"
            xt = "φ = program latency / output tokens (ms/token; lower is fairer)"
        style(fig, f"{title}: {g['workload']}", ", ".join(where), xt,
              "programs at or below (%)", showlegend=True)
        fig.update_yaxes(range=[0, 101])
        stem = [slug(g["workload"]), slug(g["profile"])]
        if g.get("program_rate") is not None:
            stem.append(f"rate{g['program_rate']:g}")
        if g.get("slo_scale") is not None:
            stem.append(f"slo{g['slo_scale']:g}")
        figs["_".join(stem)] = fig
    return figs


def read_comparisons(paths: Iterable[str | Path]) -> list[dict]:
    """Simulated-vs-replayed points for sim-vs-real, from ``compare.json`` files written
    by ``dynasim compare`` (or folders holding one), and ``fidelity.json`` files of
    ``replay.fidelity`` (``{"rows": [...]}``, a point per load).

    Returns:
        ``[{"label", "slo" (what attainment means), "attainment": (sim, real) or None,
        "latency": {metric: (sim s, real s)}, "workload", "profile", "seed"}]``;
        p90 E2E and program latencies are read from the compared run folders when they
        still exist.

    Raises:
        InputError: a missing file, bad JSON, or neither format (naming the key).
    """
    points = []
    for p in map(Path, paths):
        f = p
        if p.is_dir():
            f = next((p / n for n in ("compare.json", "fidelity.json")
                      if (p / n).is_file()), p / "compare.json")
        if not f.is_file():
            raise InputError("no such comparison file (dynasim compare writes "
                             "compare.json)", source=str(f))
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # binary: not UTF-8
            raise InputError(f"not JSON ({exc})", source=str(f)) from None
        if isinstance(d, dict) and "rows" in d:
            points += _fidelity_points(d, f)
        elif isinstance(d, dict) and "median_e2e_s" in d:
            points.append(_compare_point(d, f))
        else:
            raise InputError("neither a compare.json nor a fidelity.json",
                             source=str(f), field="median_e2e_s")
    return points


def _summary(d: Path) -> dict:
    try:
        return json.loads((d / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _compare_point(d: dict, f: Path) -> dict:
    lat = {}
    for name, label in (("e2e", "median E2E"), ("ttft", "median TTFT")):
        v = d[f"median_{name}_s"]
        if v.get("sim") is not None and v.get("real") is not None:
            lat[label] = (v["sim"], v["real"])
    sim_dir, real_dir = Path(d.get("sim_dir", "")), Path(d.get("real_dir", ""))
    try:
        from replay.journal import read_records

        (sreq, sprog), (rreq, rprog) = read_records(sim_dir), read_records(real_dir)
        e2e = [df.loc[df["error"] == "", "e2e_latency"].to_numpy(float)
               for df in (sreq, rreq)]
        if all(len(v) for v in e2e):
            lat["p90 E2E"] = tuple(float(np.percentile(v, 90)) for v in e2e)
        if sprog is not None and rprog is not None and len(sprog) and len(rprog):
            for q, label in ((50, "median program latency"), (90, "p90 program latency")):
                lat[label] = tuple(float(np.percentile(df["latency"].to_numpy(float), q))
                                   for df in (sprog, rprog))
    except (FileNotFoundError, KeyError, ValueError):
        pass
    ss, rs = _summary(sim_dir), _summary(real_dir)
    att = None
    if d.get("slo_attainment_sim") is not None and d.get("slo_attainment_real") is not None:
        att = (d["slo_attainment_sim"], d["slo_attainment_real"])
    return {"label": f"{sim_dir.name or f.parent.name} vs {real_dir.name or '?'}",
            "slo": d.get("slo", "SLO"), "attainment": att, "latency": lat,
            "workload": rs.get("workload", ss.get("workload", rs.get("trace"))),
            "profile": ss.get("profile"), "seed": rs.get("seed", ss.get("seed"))}


def _fidelity_points(d: dict, f: Path) -> list[dict]:
    prof = d.get("profile") or {}
    out = []
    for i, r in enumerate(d["rows"]):
        if not isinstance(r, dict) or "median_e2e_sim_s" not in r:
            raise InputError("fidelity row without median_e2e_sim_s", source=str(f),
                             line=None, field=f"rows[{i}].median_e2e_sim_s")
        lat = {label: (r[f"median_{n}_sim_s"], r[f"median_{n}_real_s"])
               for n, label in (("e2e", "median E2E"), ("ttft", "median TTFT"))}
        for n, slo in (("e2e", "E2E SLO (fidelity)"), ("ttft", "TTFT SLO (fidelity)")):
            out.append({"label": f"{f.parent.name}/{r.get('load', i)}", "slo": slo,
                        "attainment": (r[f"{n}_attainment_sim"], r[f"{n}_attainment_real"]),
                        "latency": lat if n == "e2e" else {}, "workload": "fidelity trace",
                        "profile": prof.get("name") if isinstance(prof, dict) else None,
                        "seed": None})
    return out


def sim_vs_real_figure(points: list[dict]) -> go.Figure:
    """Simulated against replayed (``dynasim compare`` / ``replay.fidelity``; the
    fidelity check behind every simulated figure): left, SLO attainment (%) simulated
    against replayed, a point per comparison; right, latencies (s, log-log) simulated
    against replayed, a point per comparison and metric (median / p90 E2E, median TTFT,
    median / p90 program latency where known); both with the ``sim = real`` line; an
    empty panel says why (:func:`note_empty`)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
        "SLO attainment", "latency"))
    symbols = ["circle", "diamond", "square", "triangle-up", "x", "star"]
    slos = sorted({p["slo"] for p in points if p["attainment"] is not None})
    for i, slo in enumerate(slos):
        ps = [p for p in points if p["slo"] == slo and p["attainment"] is not None]
        fig.add_trace(go.Scatter(
            x=[p["attainment"][1] * 100 for p in ps],
            y=[p["attainment"][0] * 100 for p in ps], mode="markers",
            name=f"attainment: {slo}", text=[p["label"] for p in ps],
            marker={"size": 11, "symbol": symbols[i % len(symbols)],
                    "color": PALETTE[i % len(PALETTE)]},
            hovertemplate="%{text}<br>real %{x:.1f}%<br>sim %{y:.1f}%<extra></extra>"),
            1, 1)
    fig.add_trace(go.Scatter(x=[0, 100], y=[0, 100], mode="lines", name="sim = real",
                             line={"dash": "dot", "color": "#555"}), 1, 1)
    if not slos:
        note_empty(fig, "no SLO attainment: the comparisons had no SLO<br>(dynasim "
                        "compare --goodput KEY:MS)", 1, 1)
    metrics = [m for m in ("median TTFT", "median E2E", "p90 E2E", "median program latency",
                           "p90 program latency")
               if any(m in p["latency"] for p in points)]
    allv = []
    for i, m in enumerate(metrics):
        ps = [p for p in points if m in p["latency"]]
        xs, ys = [p["latency"][m][1] for p in ps], [p["latency"][m][0] for p in ps]
        allv += xs + ys
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="markers", name=m, text=[p["label"] for p in ps],
            marker={"size": 10, "symbol": symbols[i % len(symbols)],
                    "color": PALETTE[(i + 3) % len(PALETTE)]},
            hovertemplate=f"%{{text}}<br>{m}<br>real %{{x:.4g}} s<br>sim %{{y:.4g}} s"
                          "<extra></extra>"), 1, 2)
    if not metrics:
        note_empty(fig, "no latency pairs: the compared run folders<br>are gone and the "
                        "comparison has no medians", 1, 2)
    pos = [v for v in allv if v and v > 0]
    lo, hi = (min(pos) / 1.5, max(pos) * 1.5) if pos else (1e-3, 1.0)
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", showlegend=False,
                             name="sim = real (latency)",
                             line={"dash": "dot", "color": "#555"}), 1, 2)
    fig.update_xaxes(title_text="replayed SLO attainment (%)", range=[0, 102], row=1, col=1)
    fig.update_yaxes(title_text="simulated SLO attainment (%)", range=[0, 102], row=1,
                     col=1)
    fig.update_xaxes(title_text="replayed latency (s)", type="log", row=1, col=2)
    fig.update_yaxes(title_text="simulated latency (s)", type="log", row=1, col=2)
    works = sorted({str(p["workload"]) for p in points if p.get("workload")})
    profs = sorted({str(p["profile"]) for p in points if p.get("profile")})
    seeds = {p["seed"] for p in points if p.get("seed") is not None}
    n = len({p["label"] for p in points})
    sub = [f"workload {', '.join(works) or 'unknown'}",
           f"profile {', '.join(profs) or 'unknown'}", f"{n} comparison{'s' * (n != 1)}"]
    if seeds:
        sub.append(_seeds_text([len(seeds)]))
    style(fig, "Simulated vs replayed", ", ".join(sub), None, None, width=1400,
            height=560, legend_title="")
    return fig


BUILDERS = {"rate-attainment": rate_attainment_figures,
            "slo-attainment": slo_attainment_figures,
            "accuracy-attainment": accuracy_attainment_figures}
