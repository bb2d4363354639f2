"""Simulated against replayed: per-request TTFT and E2E errors and SLO attainment.

Requests are matched by ``request_id`` for trace runs (both sides number requests by
their line in the trace) and by (``program_id``, order within the program) for workload
runs (the same seed gives the same programs, and each program issues its calls in the
same order on both sides). The per-request error is ``|sim − real| / real``, over
requests that succeeded on both sides.

SLO attainment: for workloads, the share of programs meeting their deadline (each run
judges its own programs against the same deadlines when both used the same base
deadline; a mismatch is reported); for traces, the share of requests (failed ones count
as misses) meeting every ``--goodput`` SLO (``ttft``, ``tpot``, ``e2el`` in ms).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dynasim.errors import InputError
from dynasim.metrics import parse_goodput
from replay.journal import read_records

if TYPE_CHECKING:
    import plotly.graph_objects as go


def _match(sim: pd.DataFrame, real: pd.DataFrame) -> pd.DataFrame:
    def keyed(df: pd.DataFrame) -> pd.DataFrame:
        df = df.sort_values("request_id", kind="stable").copy()
        if (df["program_id"] >= 0).any():
            df["k1"] = df["program_id"]
            df["k2"] = df.groupby("program_id").cumcount()
        else:
            df["k1"], df["k2"] = df["request_id"], 0
        return df[["k1", "k2", "ttft", "e2e_latency", "error", "output_tokens"]]

    return keyed(sim).merge(keyed(real), on=["k1", "k2"], suffixes=("_sim", "_real"))


def request_attainment(df: pd.DataFrame, slos: dict[str, float]) -> float:
    """Share of ``df``'s requests that succeeded and meet every SLO (seconds)."""
    if not len(df):
        return float("nan")
    ok = (df["error"] == "").to_numpy().copy()
    values = {"ttft": df["ttft"], "e2el": df["e2e_latency"],
              "tpot": df["tpot"].fillna(0.0)}
    for key, slo in slos.items():
        ok &= (values[key] <= slo).to_numpy()
    return float(ok.mean())


def _dist(err: np.ndarray) -> dict:
    if not len(err):
        return {"n": 0}
    return {"n": int(len(err)), "median": float(np.median(err)),
            "p90": float(np.percentile(err, 90)), "p99": float(np.percentile(err, 99)),
            "mean": float(err.mean())}


def compare_dirs(sim_dir: str, real_dir: str, goodput: list[str] | None = None,
                 output: str | None = None) -> dict:
    """Compare two run directories; writes ``compare.json`` and the figure beside
    ``output`` (default ``REAL_DIR/compare.html``) and returns the result dict.

    Raises:
        InputError: a directory without results, or runs with no request in common.
    """
    try:
        sim, sim_prog = read_records(sim_dir)
        real, real_prog = read_records(real_dir)
    except FileNotFoundError as exc:
        raise InputError(str(exc), field="run_dir") from exc
    m = _match(sim, real)
    if not len(m):
        raise InputError("no request in common: compare runs of the same trace or "
                         "workload and seed", source=f"{sim_dir} vs {real_dir}")
    both = m[(m["error_sim"] == "") & (m["error_real"] == "")]
    out: dict = {"sim_dir": str(sim_dir), "real_dir": str(real_dir),
                 "requests_sim": int(len(sim)), "requests_real": int(len(real)),
                 "matched": int(len(m)), "compared": int(len(both)),
                 "failed_real": int((real["error"] != "").sum())}
    for name, col in (("ttft", "ttft"), ("e2e", "e2e_latency")):
        s, r = both[f"{col}_sim"].to_numpy(float), both[f"{col}_real"].to_numpy(float)
        keep = r > 0
        out[f"{name}_error"] = _dist(np.abs(s[keep] - r[keep]) / r[keep])
        out[f"median_{name}_s"] = {"sim": float(np.median(s)) if len(s) else None,
                                   "real": float(np.median(r)) if len(r) else None}
    if sim_prog is not None and real_prog is not None and len(real_prog):
        out["slo"] = "program deadlines"
        out["slo_attainment_sim"] = float(sim_prog["slo_met"].mean())
        out["slo_attainment_real"] = float(real_prog["slo_met"].mean())
        d = sim_prog.merge(real_prog, on="program_id", suffixes=("_s", "_r"))
        out["deadline_mismatch_s"] = float((d["deadline_s"] - d["deadline_r"]).abs()
                                           .max()) if len(d) else None
        out["programs_sim"], out["programs_real"] = len(sim_prog), len(real_prog)
    else:
        slos = parse_goodput(goodput)
        if slos is None:
            summ = Path(real_dir) / "summary.json"
            ms = json.loads(summ.read_text()).get("goodput_slos_ms") \
                if summ.exists() else None
            slos = {k: v / 1000.0 for k, v in ms.items()} if ms else None
        if slos:
            out["slo"] = " ".join(f"{k}:{v * 1000:g}ms" for k, v in slos.items())
            out["slo_attainment_sim"] = request_attainment(sim, slos)
            out["slo_attainment_real"] = request_attainment(real, slos)
    if "slo_attainment_sim" in out:
        out["slo_attainment_diff"] = out["slo_attainment_sim"] - out["slo_attainment_real"]
    fig_path = Path(output) if output else Path(real_dir) / "compare.html"
    out["figure"] = write_figure(both, out, fig_path)
    fig_path.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def write_figure(both: pd.DataFrame, result: dict, path: Path) -> list[str]:
    """CDFs of the TTFT and E2E errors and a sim-vs-real E2E scatter (plotly): HTML
    always, PNG too when Chromium is installed (kaleido). Returns the files written."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "TTFT error CDF", "E2E latency error CDF", "E2E latency per request"))
    for col, (name, c) in enumerate((("TTFT", "ttft"), ("E2E", "e2e_latency")), 1):
        r = both[f"{c}_real"].to_numpy(float)
        e = np.sort(np.abs(both[f"{c}_sim"].to_numpy(float) - r)[r > 0] / r[r > 0])
        fig.add_trace(go.Scatter(x=e * 100, y=np.arange(1, len(e) + 1) / max(len(e), 1),
                                 mode="lines", name=f"{name} |sim−real|/real"), 1, col)
        fig.update_xaxes(title_text=f"{name} relative error (%)", row=1, col=col)
        fig.update_yaxes(title_text="fraction of requests", row=1, col=col)
    r, s = both["e2e_latency_real"], both["e2e_latency_sim"]
    fig.add_trace(go.Scatter(x=r, y=s, mode="markers", marker={"size": 4},
                             name="requests"), 1, 3)
    hi = float(max(r.max(), s.max())) if len(both) else 1.0
    fig.add_trace(go.Scatter(x=[0, hi], y=[0, hi], mode="lines", name="sim = real",
                             line={"dash": "dot"}), 1, 3)
    fig.update_xaxes(title_text="real E2E latency (s)", row=1, col=3)
    fig.update_yaxes(title_text="simulated E2E latency (s)", row=1, col=3)
    att = ""
    if "slo_attainment_sim" in result:
        att = (f"; SLO attainment sim {result['slo_attainment_sim']:.3f} vs real "
               f"{result['slo_attainment_real']:.3f}")
    fig.update_layout(title=f"Simulated vs replayed: {result['compared']} requests{att}",
                      width=1400, height=450)
    files, png_error = save_figure(fig, path)
    if png_error:
        result["png_error"] = png_error
    return files


def save_figure(fig: go.Figure, path: Path) -> tuple[list[str], str | None]:
    """Write a plotly figure as ``path.html`` (always) and ``path.png`` (through kaleido,
    only when a Chromium is installed; never downloads one), by
    :func:`dynasim.experiments.plots.write_figures`, the project's one figure writer.

    Returns:
        ``(files written, why the PNG failed or None)``."""
    from dynasim.experiments.plots import write_figures_noting_png

    return write_figures_noting_png({Path(path): fig})


def print_comparison(r: dict) -> None:
    """Print :func:`compare_dirs`'s result as a table."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"sim {r['sim_dir']} vs real {r['real_dir']}: {r['compared']} "
                    f"requests compared ({r['matched']} matched, {r['failed_real']} "
                    "failed in the replay)")
    for col in ("metric", "median", "p90", "p99", "mean"):
        t.add_column(col, justify="right")
    for name in ("ttft", "e2e"):
        d = r[f"{name}_error"]
        if d.get("n"):
            t.add_row(f"{name.upper()} |sim-real|/real", *(f"{d[k]:.1%}" for k in
                                                           ("median", "p90", "p99", "mean")))
    Console(width=120).print(t)
    for name in ("ttft", "e2e"):
        med = r[f"median_{name}_s"]
        if med["real"] is not None:
            print(f"median {name.upper()} (s): sim {med['sim']:.4f}  real {med['real']:.4f}")
    if "slo_attainment_sim" in r:
        print(f"SLO attainment ({r['slo']}): sim {r['slo_attainment_sim']:.3f}  real "
              f"{r['slo_attainment_real']:.3f}  difference {r['slo_attainment_diff']:+.3f}")
    else:
        print("SLO attainment: no SLO (give --goodput KEY:MS)")
    print("figure: " + ", ".join(r["figure"]))
