"""The HTML report of ``dynasim calibrate``: measured against fitted (plotly).

Four panels: TTFT of lone requests against prompt tokens (client, engine prefill step,
and the profile's frontend latency + fitted step); decode step time against batch size,
one line per context length; mixed steps (a prefill with requests decoding) against
prompt tokens; and the relative residual of every fitted row, held-out rows marked.
HTML always (plotly ``write_html``, plotly.js from its CDN); a PNG beside it only when a
Chromium is installed (kaleido; a browser is never downloaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dynasim.profiles.fit import held_out_mask, predict_ms

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from replay.calibrate.run import Calibration


def write_report(cal: Calibration, path: str | Path) -> list[str]:
    """Write the report of a :class:`replay.calibrate.run.Calibration` (:func:`report_figure`)
    as ``path.html`` (and ``.png`` with Chromium); returns the files."""
    from replay.compare import save_figure

    return save_figure(report_figure(cal), Path(path))[0]


def report_figure(cal: Calibration) -> go.Figure:
    """The four panels (module doc) in the style of every dynasim figure
    (:func:`dynasim.experiments.figures.style`); a panel without measurements says
    which were missing (:func:`~dynasim.experiments.figures.note_empty`)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from dynasim.experiments.figures import note_empty, style

    prof, data, med = cal.profile, cal.data, cal.medians
    model, fe = prof.step_time, prof.frontend_latency_ms
    fig = make_subplots(rows=2, cols=2, subplot_titles=(
        "Lone requests: TTFT vs prompt tokens", "Decode step vs batch size",
        "Mixed steps: prefill + decoding requests",
        "Fit residuals (model - measured) / measured"))
    lone = sorted(data["lone"], key=lambda r: r["prompt"])
    x = [r["prompt"] for r in lone]
    fig.add_trace(go.Scatter(x=x, y=[r["client_ttft_ms"] for r in lone], mode="markers",
                             name="client TTFT (measured)"), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=[r["prefill_ms"] for r in lone], mode="markers",
                             name="engine prefill step (measured)"), 1, 1)
    grid = np.unique(np.linspace(1, max(x or [1]), 60).round().astype(int))
    fig.add_trace(go.Scatter(x=grid, y=[fe + 1e3 * model.step_time([(int(p), 0)], 0, 0)
                                        for p in grid], mode="lines",
                             name=f"fitted: {fe:.2f} ms frontend + step"), 1, 1)
    fig.update_xaxes(title_text="prompt tokens", row=1, col=1)
    fig.update_yaxes(title_text="ms", row=1, col=1)
    gone = f"<br>({data.get('discarded', 0)} measurements discarded in all)"
    for rc, key, what in (((1, 1), "lone", "lone requests"), ((1, 2), "decode",
                                                               "decode steps"),
                          ((2, 1), "mixed", "mixed steps")):
        if not data.get(key):
            note_empty(fig, f"no {what} measured{gone}", *rc)
    for ctx in sorted({r["context"] for r in data["decode"]}):
        raw = [r for r in data["decode"] if r["context"] == ctx]
        fig.add_trace(go.Scatter(x=[r["batch"] for r in raw], y=[r["step_ms"] for r in raw],
                                 mode="markers", name=f"decode, context {ctx} (measured)"),
                      1, 2)
        rows = sorted((r for r in med["decode"] if r["context"] == ctx),
                      key=lambda r: r["batch"])
        fig.add_trace(go.Scatter(
            x=[r["batch"] for r in rows],
            y=[1e3 * model.step_time([], r["batch"], r["sum_decode_ctx"]) for r in rows],
            mode="lines", name=f"decode, context {ctx} (fitted)"), 1, 2)
    fig.update_xaxes(title_text="requests decoding (batch size)", row=1, col=2)
    fig.update_yaxes(title_text="ms per step", row=1, col=2)
    for j in sorted({r["decoders"] for r in data["mixed"]}):
        raw = sorted((r for r in data["mixed"] if r["decoders"] == j),
                     key=lambda r: r["prompt"])
        fig.add_trace(go.Scatter(x=[r["prompt"] for r in raw],
                                 y=[r["prefill_ms"] for r in raw], mode="markers",
                                 name=f"mixed, {j} decoding (measured)"), 2, 1)
        fig.add_trace(go.Scatter(x=[r["prompt"] for r in raw], y=[
            1e3 * model.step_time([(r["prompt"], 0)], j, r["sum_decode_ctx"]) for r in raw],
            mode="lines", name=f"mixed, {j} decoding (fitted)"), 2, 1)
    fig.update_xaxes(title_text="prompt tokens", row=2, col=1)
    fig.update_yaxes(title_text="ms per step", row=2, col=1)
    rows = cal.rows
    if rows:
        meas = np.array([r.ms for r in rows])
        res = (predict_ms(model, rows) - meas) / meas * 100
        test = held_out_mask(len(rows))
        for mask, label in ((~test, "fitted rows"), (test, "held-out rows")):
            idx = np.flatnonzero(mask)
            fig.add_trace(go.Scatter(x=idx, y=res[idx], mode="markers", name=label,
                                     text=[rows[i].group for i in idx]), 2, 2)
    else:
        note_empty(fig, "no fitted rows: nothing to compare", 2, 2)
    fig.update_xaxes(title_text="row (hover: group)", row=2, col=2)
    fig.update_yaxes(title_text="residual (%)", row=2, col=2)
    f, prov = prof.fit, prof.provenance or {}
    sub = f"{prof.name}, vLLM {prov.get('vllm_version', '?')}; " + (
        f"held-out median error {f.held_out_median_error:.1%}, p90 "
        f"{f.held_out_p90_error:.1%}" if f else "no fit quality recorded")
    style(fig, f"dynasim calibrate: {prof.model} at {prov.get('server', '?')}", sub,
          None, None, width=1400, height=900, legend_title="")
    return fig
