"""Simulated against replayed: per-request TTFT and E2E errors and SLO attainment.

Requests are matched by ``request_id`` for trace runs (both sides number requests by
their line in the trace) and by (``program_id``, order within the program) for workload
runs (the same seed gives the same programs, and each program issues its calls in the
same order on both sides). The per-request error is ``|sim − real| / real``, over
requests that succeeded on both sides.

Only runs of the same input are compared (:func:`check_same_runs`): the same trace (by
file name) or workload, seed, request (or program) rate and burstiness (``summary.json``;
a key absent on one side is not checked), and every matched request
with the same ``prompt_tokens`` and planned output tokens (a replay's
``asked_output_tokens``: a Dynasor proxy may stop a request early; a request that failed
in the simulator has no planned length). Anything else is refused, naming the first
difference. A partial run (``summary.json`` says ``partial`` or ``interrupted``, or it
has fewer requests than the other side) is compared with a warning naming how many
requests are missing (:func:`partial_warnings`).

A recorded vLLM run (:mod:`dynasim.runs`) is a run too: ``REAL_DIR`` may be
``recorded:NAME`` (its measured records, read from the data mirror) or a folder written
by ``python -m dynasim.runs NAME DIR``; the figure then goes to ``SIM_DIR/compare.html``
by default.

SLO attainment: for workloads, the share of programs meeting their deadline (each run
judges its own programs against the same deadlines when both used the same base
deadline; a mismatch is reported); for traces, the share of requests (failed ones count
as misses) meeting every ``--goodput`` SLO (``ttft``, ``tpot``, ``e2el`` in ms).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dynasim.data_record import (
    COLUMNS,
    PROGRAM_COLUMNS,
    RUN_FILES,  # the figure and compare.json may not replace one
    write_atomic,
)
from dynasim.errors import InputError, read_text
from dynasim.metrics import parse_goodput
from replay.journal import programs_table, requests_table

if TYPE_CHECKING:
    import plotly.graph_objects as go

@dataclass
class Run:
    """One run folder as read by compare: its request and program tables, its
    ``summary.json`` (``{}`` when absent) and whether its journal's last line was cut
    (a crash mid-write)."""

    dir: Path
    requests: pd.DataFrame
    programs: pd.DataFrame | None
    summary: dict
    cut_line: bool = False


def _jsonl(path: Path) -> tuple[list[dict], bool]:
    """(rows, whether the last line was cut) of a journal; only the last line may be
    cut (the journal flushes each row whole), a bad line before it is an error."""
    lines = read_text(path).splitlines()
    last = max((i for i, x in enumerate(lines) if x.strip()), default=-1)
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            if i == last:
                return rows, True
            raise InputError(f"not a JSON row ({exc.msg})", source=str(path),
                             line=i + 1) from None
        if not isinstance(row, dict):
            raise InputError("a row must be a JSON object", source=str(path), line=i + 1)
        rows.append(row)
    return rows, False


def _table(path: Path, rows_to_table: Callable[[list[dict]], pd.DataFrame],
           columns: list[str]) -> tuple[pd.DataFrame, bool]:
    """(table, whether the journal's last line was cut) of one run file, JSONL rows
    through ``rows_to_table`` or a parquet table (raises InputError naming the file)."""
    cut = False
    try:
        if path.suffix == ".jsonl":
            rows, cut = _jsonl(path)
            df = rows_to_table(rows)
        else:
            df = pd.read_parquet(path)
    except KeyError as exc:
        raise InputError("missing in the rows", source=str(path),
                         field=str(exc.args[0])) from None
    except (ValueError, TypeError, OSError) as exc:  # pyarrow's ArrowInvalid included
        if isinstance(exc, InputError):
            raise
        raise InputError(f"not a readable table ({str(exc)[:120]})",
                         source=str(path)) from None
    if "replica" in columns and "replica" not in df.columns:
        df["replica"] = 0  # written before replicas existed: one replica
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError("missing column", source=str(path), field=missing[0])
    return df, cut


def read_run(run_dir: str | Path) -> Run:
    """Read a run folder as :func:`replay.journal.read_records` does (a replay's JSONL
    journal first, else the parquet tables) plus its ``summary.json``.

    ``recorded:NAME`` reads the recorded run NAME (module docstring).

    Raises:
        InputError: no results in the folder, or a file that is not UTF-8, not JSON or
            not a table (naming the file and, for a journal, the line); an unknown
            recorded run.
    """
    if str(run_dir).startswith("recorded:"):
        from dynasim.runs import load_run

        rec = load_run(str(run_dir))
        return Run(Path(str(run_dir)), rec.measured.copy(), None, rec.summary())
    d = Path(run_dir)
    ext = ".jsonl" if (d / "requests.jsonl").exists() else ".parquet"
    if not (d / f"requests{ext}").exists():
        raise InputError("no requests.jsonl or requests.parquet: not a run folder",
                         source=str(d), field="run_dir")
    req, cut = _table(d / f"requests{ext}", requests_table, COLUMNS)
    progs = None
    if (d / f"programs{ext}").exists():
        progs, _ = _table(d / f"programs{ext}", programs_table, PROGRAM_COLUMNS)
    summary = {}
    if (d / "summary.json").exists():
        try:
            summary = json.loads(read_text(d / "summary.json"))
        except ValueError as exc:
            raise InputError(f"not JSON ({exc})", source=str(d / "summary.json")) from None
        if not isinstance(summary, dict):
            raise InputError("must be a JSON object", source=str(d / "summary.json"))
    return Run(d, req, progs, summary, cut)


def _same_input(a: object, b: object) -> bool:
    """Trace sources match by file name (one run may name it by another path); a
    recorded run's trace is ``recorded:NAME`` or its export ``recorded-NAME.jsonl``."""
    def name(x: object) -> str:
        text = str(x)
        if text.startswith("recorded:"):
            return f"recorded-{text.removeprefix('recorded:')}.jsonl"
        return Path(text).name

    return name(a) == name(b)


def check_same_runs(sim: Run, real: Run, m: pd.DataFrame) -> None:
    """Refuse runs of different inputs (module doc), naming the first difference.

    Args:
        m: the matched requests (:func:`_match`).

    Raises:
        InputError: (field ``workload``, ``trace``, ``seed``, ``request_rate``,
            ``program_rate``, ``burstiness``, ``prompt_tokens`` or ``output_tokens``)
            the runs are not of the same trace/workload, load and seed.
    """
    where = f"{sim.dir} vs {real.dir}"
    ss, rs = sim.summary, real.summary
    ks, kr = (("workload" if s.get("workload") is not None else "trace"
               if s.get("trace") is not None else None) for s in (ss, rs))
    if ks is not None and kr is not None and ks != kr:
        raise InputError(f"sim ran {ks} {ss[ks]}, real {kr} {rs[kr]}: compare runs of "
                         "the same input", source=where, field="workload")
    for field in ("workload", "trace", "seed", "request_rate", "program_rate",
                  "burstiness"):
        a, b = ss.get(field), rs.get(field)
        if a is not None and b is not None and not (
                _same_input(a, b) if field in ("workload", "trace") else a == b):
            raise InputError(f"sim {a}, real {b}: compare runs of the same {field} "
                             "(the same load)", source=where, field=field)
    for field in ("prompt_tokens", "output_tokens"):
        s, r = m[f"{field}_plan_sim"], m[f"{field}_plan_real"]
        bad = s.notna() & r.notna() & (s != r)
        if bad.any():
            row = m[bad].iloc[0]
            req = f"request {int(row['request_id_sim'])}" if row["k2"] < 0 else \
                f"program {int(row['k1'])} call {int(row['k2'])} (request " \
                f"{int(row['request_id_sim'])})"
            raise InputError(f"{req}: sim {int(s[bad].iloc[0])}, real "
                             f"{int(r[bad].iloc[0])}: not runs of the same "
                             f"{ks or kr or 'input'} and seed", source=where, field=field)


def partial_warnings(sim: Run, real: Run, matched: int) -> list[str]:
    """One line per side that is partial (``summary.json`` says ``partial`` or
    ``interrupted``, a cut journal line, or fewer requests than the other side),
    naming how many of the other side's requests it lacks."""
    out = []
    for this, other in ((sim, real), (real, sim)):
        missing = len(other.requests) - matched
        flags = [k for k in ("interrupted", "partial") if this.summary.get(k) is True]
        if this.cut_line:
            flags.append("last journal line cut")
        if missing <= 0 and not flags:
            continue
        why = f"a partial run ({', '.join(flags)})" if flags else "a partial run?"
        out.append(f"{this.dir}: {max(missing, 0)} request{'s' if missing != 1 else ''}"
                   f" of {other.dir} missing from it ({why}); compared on the "
                   f"{matched} in common")
    return out


def _match(sim: pd.DataFrame, real: pd.DataFrame) -> pd.DataFrame:
    def keyed(df: pd.DataFrame) -> pd.DataFrame:
        df = df.sort_values("request_id", kind="stable").copy()
        if (df["program_id"] >= 0).any():
            df["k1"] = df["program_id"]
            df["k2"] = df.groupby("program_id").cumcount()
        else:
            df["k1"], df["k2"] = df["request_id"], -1
        # planned tokens: what the run was asked to do (NaN: unknown, not checked)
        df["prompt_tokens_plan"] = df["prompt_tokens"].astype(float)
        df["output_tokens_plan"] = df["asked_output_tokens"].astype(float) \
            if "asked_output_tokens" in df else \
            df["output_tokens"].astype(float).where(df["error"] == "")
        return df[["k1", "k2", "request_id", "ttft", "e2e_latency", "error",
                   "output_tokens", "prompt_tokens_plan", "output_tokens_plan"]]

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


def _figure_path(output: str | None, real_dir: str) -> Path:
    """The figure's path (``REAL_DIR/compare.html`` by default); refuses one whose
    ``.html``/``.png``/``.json`` would replace a run's file (``--output
    REAL_DIR/summary.html`` would overwrite its ``summary.json``)."""
    path = Path(output) if output else Path(real_dir) / "compare.html"
    stem = path.with_suffix("") if path.suffix in (".html", ".png", ".json") else path
    for ext in (".html", ".png", ".json"):
        if stem.name + ext in RUN_FILES:
            raise InputError(f"would replace the run file {stem.name + ext}: choose "
                             "another name", source=str(path), field="output")
    return stem.with_name(stem.name + ".html")


def _clear_previous(fig_path: Path) -> None:
    """Remove what an earlier compare wrote at ``fig_path`` (``.html``, ``.png``,
    ``.json``), so that a PNG this run cannot make is not left from the last one."""
    for ext in (".html", ".png", ".json"):
        fig_path.with_suffix(ext).unlink(missing_ok=True)


def compare_dirs(sim_dir: str, real_dir: str, goodput: list[str] | None = None,
                 output: str | None = None) -> dict:
    """Compare two run directories; writes ``compare.json`` and the figure beside
    ``output`` (default ``REAL_DIR/compare.html``, replacing an earlier compare's
    ``.html``/``.png``/``.json`` there) and returns the result dict, whose
    ``warnings`` lists partial-run warnings (:func:`partial_warnings`).

    Raises:
        InputError: a directory without results or with an unreadable file, runs of
            different inputs (:func:`check_same_runs`), no request in common, or an
            ``output`` that would replace a run file.
    """
    fig_path = _figure_path(output, sim_dir if str(real_dir).startswith("recorded:")
                            else real_dir)
    sim_run, real_run = read_run(sim_dir), read_run(real_dir)
    sim, sim_prog = sim_run.requests, sim_run.programs
    real, real_prog = real_run.requests, real_run.programs
    m = _match(sim, real)
    check_same_runs(sim_run, real_run, m)
    if not len(m):
        raise InputError("no request in common: compare runs of the same trace or "
                         "workload and seed", source=f"{sim_dir} vs {real_dir}")
    both = m[(m["error_sim"] == "") & (m["error_real"] == "")]
    out: dict = {"sim_dir": str(sim_dir), "real_dir": str(real_dir),
                 "requests_sim": int(len(sim)), "requests_real": int(len(real)),
                 "matched": int(len(m)), "compared": int(len(both)),
                 "failed_real": int((real["error"] != "").sum()),
                 "warnings": partial_warnings(sim_run, real_run, len(m))}
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
            ms = real_run.summary.get("goodput_slos_ms")
            slos = {k: v / 1000.0 for k, v in ms.items()} if isinstance(ms, dict) and ms else None
        if slos:
            out["slo"] = " ".join(f"{k}:{v * 1000:g}ms" for k, v in slos.items())
            out["slo_attainment_sim"] = request_attainment(sim, slos)
            out["slo_attainment_real"] = request_attainment(real, slos)
    if "slo_attainment_sim" in out:
        out["slo_attainment_diff"] = out["slo_attainment_sim"] - out["slo_attainment_real"]
    _clear_previous(fig_path)
    out["figure"] = write_figure(both, out, fig_path)
    text = json.dumps(out, indent=2) + "\n"
    write_atomic(fig_path.with_suffix(".json"), lambda p: p.write_text(text))
    return out


def write_figure(both: pd.DataFrame, result: dict, path: Path) -> list[str]:
    """:func:`compare_figure` written as HTML always, PNG too when Chromium is installed
    (kaleido). Returns the files written."""
    files, png_error = save_figure(compare_figure(both, result), path)
    if png_error:
        result["png_error"] = png_error
    return files


def compare_figure(both: pd.DataFrame, result: dict) -> go.Figure:
    """CDFs of the TTFT and E2E errors and a sim-vs-real E2E scatter (plotly), in the
    project's figure style; an empty panel says why. ``both``: one row per request
    finished on both sides, ``{ttft,e2e_latency}_{sim,real}`` in seconds."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from dynasim.experiments.figures import PALETTE, note_empty, style

    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "TTFT error CDF", "E2E latency error CDF", "E2E latency per request"))
    for col, (name, c) in enumerate((("TTFT", "ttft"), ("E2E", "e2e_latency")), 1):
        r = both[f"{c}_real"].to_numpy(float)
        e = np.sort(np.abs(both[f"{c}_sim"].to_numpy(float) - r)[r > 0] / r[r > 0])
        fig.add_trace(go.Scatter(x=e * 100, y=100 * np.arange(1, len(e) + 1) / max(len(e), 1),
                                 mode="lines", line={"color": PALETTE[col - 1]},
                                 name=f"{name} |sim−real|/real"), 1, col)
        fig.update_xaxes(title_text=f"{name} relative error (%)", row=1, col=col)
        fig.update_yaxes(title_text="requests at or below (%)", row=1, col=col)
        if not len(e):
            note_empty(fig, f"no matched request with a real {name} > 0", 1, col)
    r, s = both["e2e_latency_real"], both["e2e_latency_sim"]
    fig.add_trace(go.Scatter(x=r, y=s, mode="markers", marker={"size": 4,
                             "color": PALETTE[2]}, name="requests"), 1, 3)
    hi = float(max(r.max(), s.max())) if len(both) else 1.0
    fig.add_trace(go.Scatter(x=[0, hi], y=[0, hi], mode="lines", name="sim = real",
                             line={"dash": "dot", "color": "#555"}), 1, 3)
    fig.update_xaxes(title_text="real E2E latency (s)", row=1, col=3)
    fig.update_yaxes(title_text="simulated E2E latency (s)", row=1, col=3)
    if not len(both):
        note_empty(fig, "no request finished on both sides", 1, 3)
    att = ""
    if "slo_attainment_sim" in result:
        att = (f"; SLO attainment sim {result['slo_attainment_sim']:.3f} vs real "
               f"{result['slo_attainment_real']:.3f}")
    style(fig, "Simulated vs replayed", f"{result['compared']} requests{att}", None, None,
          width=1400, height=450, legend_title="")
    return fig


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
