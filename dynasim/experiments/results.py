"""Reading results for tables and figures: sweep ``results.parquet``, ``dynasim batch``
CSVs and program records (with ``--filter KEY=VALUE`` filters), seed statistics, and the
attainment crossings the headline tables use (:func:`max_rate_at_attainment`,
:func:`min_slo_scale_at_attainment`: Dynasor §4's "highest rate / tightest SLO at 90%
attainment"). Sweep rows with a non-empty ``error`` are left out (:func:`ok_rows`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dynasim.errors import InputError

#: Columns every sweep-results kind needs (the sweep writes them all).
SWEEP_KEYS = ["workload", "profile", "policy", "program_rate", "slo_scale", "seed"]
#: Columns of the ``dynasim batch`` CSV the token-accuracy kind reads.
BATCH_COLUMNS = ["workload", "policy", "cap", "output_tokens_mean", "output_tokens_std",
                 "accuracy_mean", "accuracy_std"]


def slug(text: object) -> str:
    """A file-name-safe form of a workload, profile or number."""
    text = Path(str(text)).stem if "/" in str(text) else str(text)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


# ------------------------------------------------------------ attainment crossings
def _crossing(x: np.ndarray, y: np.ndarray, target: float) -> tuple[float, str]:
    """Walking ``x`` in the given order, the interpolated point where ``y`` first drops
    below ``target``: between the last point at or above it and the first below."""
    if not len(x):
        return math.nan, "no_data"
    below = np.flatnonzero(y < target)
    if not len(below):
        return float(x[-1]), "beyond_range"
    i = int(below[0])
    if i == 0:
        return math.nan, "below_target"
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (y0 - target) * (x1 - x0) / (y0 - y1)), "interpolated"


def _crossings(df: pd.DataFrame, target: float, along: str, per: str, out_col: str,
               descending: bool) -> pd.DataFrame:
    need = ["workload", "profile", "policy", along, per, "slo_attainment"]
    _require(df, need, "attainment frame")
    if not 0 < target <= 1:
        raise InputError(f"target must be a fraction in (0, 1], got {target}",
                         field="target")
    d = ok_rows(df)
    keys = ["workload", "profile", "policy", per]
    rows = []
    for key, g in d.groupby(keys, sort=True, dropna=False):
        g = g[np.isfinite(g[along].astype(float)) & np.isfinite(
            g["slo_attainment"].astype(float))]
        mean = g.groupby(along)["slo_attainment"].mean().sort_index(
            ascending=not descending)
        value, status = _crossing(mean.index.to_numpy(float), mean.to_numpy(float), target)
        rows.append(dict(zip(keys, key), **{out_col: value, "status": status}))
    cols = ["workload", "profile", "policy", per, out_col, "status"]
    return pd.DataFrame(rows, columns=cols)


def max_rate_at_attainment(df: pd.DataFrame, target: float = 0.9) -> pd.DataFrame:
    """The highest program arrival rate at which each policy still meets ``target`` SLO
    attainment (Dynasor §4's headline: "x times higher program rate at P90 attainment").

    Args:
        df: sweep results, a row per cell: ``workload, profile, policy, slo_scale,
            program_rate`` (programs/s), ``slo_attainment`` (fraction 0-1); an ``error``
            column, when present, drops rows whose error is not empty. Any number of
            seeds per rate (they are averaged first); other columns are ignored.
        target: attainment fraction, in (0, 1].

    Method, per (workload, profile, policy, slo_scale): the mean attainment over seeds
    at each rate, rates ascending; rows with a NaN rate or attainment are dropped. At
    the first rate whose mean falls below ``target``, ``max_rate`` is the linear
    interpolation between that rate and the rate before it (the last at or above the
    target), so later recoveries of a noisy curve do not count.

    Returns:
        DataFrame ``workload, profile, policy, slo_scale, max_rate, status`` (sorted),
        ``status`` telling how ``max_rate`` was found: ``interpolated``; ``beyond_range``
        (every rate met the target: ``max_rate`` is the highest rate tried, a lower
        bound); ``below_target`` (even the lowest rate missed it: NaN); ``no_data``
        (no finite row: NaN).

    Raises:
        InputError: a missing column (named in ``field``) or a target outside (0, 1].
    """
    return _crossings(df, target, "program_rate", "slo_scale", "max_rate", False)


def min_slo_scale_at_attainment(df: pd.DataFrame, target: float = 0.9) -> pd.DataFrame:
    """The tightest SLO scale at which each policy still meets ``target`` attainment
    (Dynasor §4: "x times tighter SLOs"), per (workload, profile, policy,
    program_rate): as :func:`max_rate_at_attainment` with SLO scales walked from the
    largest down, so ``min_slo_scale`` interpolates between the last scale at or above
    the target and the first below. ``status``: ``interpolated``, ``beyond_range``
    (every scale met it: the smallest scale tried, an upper bound), ``below_target``
    (even the loosest missed: NaN), ``no_data``.

    Returns:
        DataFrame ``workload, profile, policy, program_rate, min_slo_scale, status``.

    Raises:
        InputError: a missing column or a target outside (0, 1].
    """
    return _crossings(df, target, "slo_scale", "program_rate", "min_slo_scale", True)


def seed_stats(df: pd.DataFrame, keys: list[str], values: list[str]) -> pd.DataFrame:
    """Mean and population std over the rows (seeds) of each ``keys`` group:
    columns ``keys + [v_mean, v_std for v in values] + ["seeds"]`` (rows counted per
    group; NaN values ignored), sorted by ``keys``."""
    g = df.groupby(keys, sort=True, dropna=False)
    out = g[values].agg(["mean", lambda s: float(np.std(s.dropna())) if s.notna().any()
                         else math.nan])
    out.columns = [f"{v}_{'mean' if s == 'mean' else 'std'}" for v, s in out.columns]
    out["seeds"] = g.size()
    return out.reset_index()


# -------------------------------------------------------------------- input reading
def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that ran (an ``error`` column, when present, is empty)."""
    return df[df["error"].fillna("").astype(str) == ""] if "error" in df else df


def _require(df: pd.DataFrame, cols: Iterable[str], source: str | Path) -> None:
    for c in cols:
        if c not in df.columns:
            raise InputError(f"missing column (has: {', '.join(map(str, df.columns))})",
                             source=str(source), field=c)


def parse_filters(items: list[str] | None) -> dict[str, str]:
    """``["key=value", ...]`` -> ``{key: value}``.

    Raises:
        InputError: an item without ``=`` or with an empty key (field ``filter``).
    """
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"expected KEY=VALUE, got {item!r}", field="filter")
        out[key.strip()] = value.strip()
    return out


def _matches(values: pd.Series, want: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(values):
        return values == (want.lower() in ("1", "true", "yes"))
    if pd.api.types.is_numeric_dtype(values):
        try:
            w = float(want)
        except ValueError:
            return pd.Series(False, index=values.index)
        return pd.Series(np.isclose(values.astype(float), w, rtol=1e-9, atol=0.0),
                         index=values.index)
    return values.astype(str) == want


def apply_filters(df: pd.DataFrame, filters: dict[str, str],
                  source: str | Path) -> pd.DataFrame:
    """The rows of ``df`` matching every filter (:func:`parse_filters`).

    Raises:
        InputError: a filter key that is not a column, or no row left (naming it).
    """
    for key, want in filters.items():
        _require(df, [key], source)
        df = df[_matches(df[key], want)]
        if not len(df):
            raise InputError(f"no row with {key} = {want}", source=str(source), field=key)
    return df


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".csv":
            return pd.read_csv(path, keep_default_na=False, na_values=[""])
        return pd.read_parquet(path)
    except Exception as exc:
        raise InputError(f"cannot read table ({exc})"[:300], source=str(path)) from None


def read_sweep(paths: Sequence[str | Path], filters: dict[str, str] | None = None,
               need: list[str] = ()) -> pd.DataFrame:
    """Sweep results (``results.parquet`` or ``.csv`` files, or sweep output folders
    holding ``results.parquet``), concatenated, filtered, error rows dropped; a
    ``results_dir`` column gives each row's folder (for its ``records/``).

    Raises:
        InputError: a missing file, a missing column (``SWEEP_KEYS`` + ``need``), or a
            filter that keeps nothing; all naming the file and field.
    """
    frames = []
    for p in map(Path, paths):
        f = p / "results.parquet" if p.is_dir() else p
        if not f.is_file():
            raise InputError("no such results file (expected a sweep's results.parquet "
                             "or its folder)", source=str(f))
        df = _read_table(f)
        _require(df, SWEEP_KEYS + list(need), f)
        df = apply_filters(ok_rows(df), filters or {}, f)
        frames.append(df.assign(results_dir=str(f.parent)))
    df = pd.concat(frames, ignore_index=True)
    if not len(df):
        raise InputError("no successful cell (every row has an error)",
                         source=", ".join(map(str, paths)), field="error")
    return df


def read_batch(paths: Sequence[str | Path], filters: dict[str, str] | None = None) -> pd.DataFrame:
    """``dynasim batch`` CSVs (columns :data:`BATCH_COLUMNS`; ``seeds``, ``knob_mean``
    used when present), concatenated and filtered.

    Raises:
        InputError: a missing file or column, or a filter keeping nothing.
    """
    frames = []
    for p in map(Path, paths):
        if not p.is_file():
            raise InputError("no such batch CSV (dynasim batch --output F.csv)",
                             source=str(p))
        df = _read_table(p)
        _require(df, BATCH_COLUMNS, p)
        frames.append(apply_filters(df, filters or {}, p))
    return pd.concat(frames, ignore_index=True)


def read_program_runs(paths: Iterable[str | Path], filters: dict[str, str] | None = None, *,
                      value: str) -> list[dict]:
    """Per-program records for the CDF kinds, as groups of lines.

    ``paths`` are either sweep results (:func:`read_sweep`; each kept cell's records at
    ``<results dir>/records/<cell_id>.parquet``) or run folders (or their
    ``programs.parquet``) from ``dynasim simulate/replay --workload`` with a
    ``summary.json`` naming ``policy``, ``workload`` and ``profile`` (a replay's names
    no profile: its ``model`` stands in, shown as "``model`` at ``base_url``"); filters apply to
    the sweep's columns or the summary's keys. Sweep cells are grouped by (workload,
    profile, program_rate, slo_scale), their seeds pooled per policy.

    Returns:
        ``[{"workload", "profile", "profile_label" (run folders), "program_rate",
        "slo_scale", "seeds": int,
        "lines": {label: values (np.ndarray of ``value``, NaN dropped)}}]``.

    Raises:
        InputError: a missing file, record file, column or summary key, naming it.
    """
    paths = [Path(p) for p in paths]
    runs = [p for p in paths if (p / "programs.parquet").is_file()
            or p.name == "programs.parquet"]
    if runs and len(runs) < len(paths):
        raise InputError("give either sweep results or run folders, not both",
                         source=", ".join(map(str, paths)))
    if runs:
        return _run_dirs(runs, filters or {}, value)
    df = read_sweep(paths, filters, need=["cell_id"])
    groups = []
    keys = ["workload", "profile", "program_rate", "slo_scale"]
    for key, g in df.groupby(keys, sort=True):
        lines = {}
        for policy, cells in g.groupby("policy", sort=False):
            vals = [_record_values(Path(r.results_dir) / "records" / f"{r.cell_id}.parquet",
                                   value) for r in cells.itertuples()]
            lines[str(policy)] = np.concatenate(vals)
        groups.append(dict(zip(keys, key), seeds=int(g["seed"].nunique()), lines=lines))
    return groups


def _record_values(path: Path, value: str) -> np.ndarray:
    if not path.is_file():
        raise InputError("no program records for this cell (run the sweep with "
                         "--keep-records)", source=str(path), field="cell_id")
    df = _read_table(path)
    _require(df, [value], path)
    v = df[value].to_numpy(float)
    return v[np.isfinite(v)]


def _run_dirs(paths: list[Path], filters: dict[str, str], value: str) -> list[dict]:
    rows = []
    for p in paths:
        d = p.parent if p.name == "programs.parquet" else p
        summ = d / "summary.json"
        if not summ.is_file():
            raise InputError("no summary.json beside programs.parquet", source=str(summ))
        try:
            s = json.loads(summ.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"not JSON ({exc})", source=str(summ)) from None
        for k in ("policy", "workload"):
            if k not in s:
                raise InputError("missing key", source=str(summ), field=k)
        if not s.get("profile"):  # a replay: the server stands in for the profile
            if not s.get("model"):
                raise InputError("missing key (a simulated run names its profile, a "
                                 "replay its model)", source=str(summ), field="profile")
            s = {**s, "profile": s["model"], "profile_label": f"{s['model']} at "
                 f"{s.get('base_url', '?')}"}
        for k in filters:
            if k not in s:
                raise InputError("filter key not in summary", source=str(summ), field=k)
        if all(_matches(pd.Series([s[k]]), want).iloc[0] for k, want in filters.items()):
            rows.append((d, s, _record_values(d / "programs.parquet", value)))
    if not rows:
        raise InputError("no run matches the filters", field="filter",
                         source=", ".join(map(str, paths)))
    groups: dict[tuple, dict] = {}
    for d, s, vals in rows:
        key = (str(s["workload"]), str(s["profile"]))
        g = groups.setdefault(key, {"workload": key[0], "profile": key[1],
                                    "profile_label": s.get("profile_label", key[1]),
                                    "program_rate": set(), "slo_scale": set(),
                                    "seeds": set(), "lines": {}})
        for k in ("program_rate", "slo_scale"):
            g[k].add(s.get(k))
        g["seeds"].add(s.get("seed"))
        label = str(s["policy"])
        if label in g["lines"]:
            label = f"{label} ({d.name})"
        g["lines"][label] = vals
    out = []
    for g in groups.values():
        for k in ("program_rate", "slo_scale"):
            g[k] = g[k].pop() if len(g[k]) == 1 else None
        g["seeds"] = len(g["seeds"])
        out.append(g)
    return out
