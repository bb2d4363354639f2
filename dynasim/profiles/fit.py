"""Fitting a :class:`~dynasim.profiles.step_time.TokensStepTime` to measured steps (scipy).

Input: rows of measured step times, each a :class:`StepRow` (the step's composition in
the engine's terms plus the time measured, ms). The fit minimises relative residuals
``(model - measured) / measured`` with :func:`scipy.optimize.least_squares` under the
form's sign constraints (every coefficient >= 0), started from a non-negative least
squares solution of the linear part (:func:`scipy.optimize.nnls`).

Honesty: a random ``held_out`` fraction of the rows (fixed ``seed``) is kept out of the
fit; :class:`~dynasim.profiles.profile.StepTimeFit` reports the error on those rows, and the
ranges the fit saw (a profile is valid inside them, an extrapolation outside).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares, nnls

from dynasim.profiles.profile import StepTimeFit
from dynasim.profiles.step_time import TokensStepTime

NAMES = TokensStepTime.coefficient_names()


@dataclass(frozen=True)
class StepRow:
    """One measured step: ``prefill`` chunks ``(new_tokens, computed_before)``,
    ``num_decode`` decoding requests with ``sum_decode_ctx`` context tokens, and the
    measured time ``ms`` (milliseconds). ``group`` labels rows for per-group reports."""

    prefill: tuple[tuple[int, int], ...]
    num_decode: int
    sum_decode_ctx: float
    ms: float
    group: str = field(default="", compare=False)


def features(row: StepRow) -> tuple[float, float, float, float, float]:
    """``(tokens, pairs, sum_decode_ctx, sequences, 1)`` of a row
    (:meth:`TokensStepTime.features`, plus the constant term's 1)."""
    return (*TokensStepTime.features(row.prefill, row.num_decode, row.sum_decode_ctx), 1.0)


def predict_ms(model: TokensStepTime, rows: list[StepRow]) -> np.ndarray:
    """Model times (ms) for ``rows``, shape ``(len(rows),)``."""
    return np.array([1000.0 * model.step_time(list(r.prefill), r.num_decode,
                                              r.sum_decode_ctx) for r in rows])


def _predict(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    step, floor, per_tok, attn_p, attn_d, seq = x
    return (step + np.maximum(floor, per_tok * f[:, 0]) + attn_p * f[:, 1]
            + attn_d * f[:, 2] + seq * f[:, 3])


def _start(f: np.ndarray, y: np.ndarray, base: np.ndarray,
           fixed: dict[str, float]) -> np.ndarray:
    """A starting point: the roofline knee ``T0`` (``dense_floor_ms = dense_ms_per_token
    * T0``) searched on a grid of token counts; for each knee the rest is linear and is
    solved by NNLS on relative residuals. The max() kink leaves a local optimiser blind to
    the floor, hence the grid."""
    cols = {"step_ms": f[:, 4], "prefill_attention_ms_per_pair": f[:, 1],
            "decode_attention_ms_per_token": f[:, 2], "seq_ms": f[:, 3]}
    knees = [0.0] if "dense_floor_ms" in fixed or "dense_ms_per_token" in fixed else \
        [0.0, *np.unique(np.geomspace(1, max(f[:, 0].max(), 1), 40).round())]
    best, best_cost = base.copy(), np.inf
    for knee in knees:
        x = base.copy()
        offset = _predict(x, f)
        names = [n for n in cols if n not in fixed]
        mat = [cols[n] for n in names]
        if "dense_ms_per_token" not in fixed:
            names.append("dense_ms_per_token")
            mat.append(np.maximum(f[:, 0], knee))
        a = np.column_stack(mat) / y[:, None]
        coef, _ = nnls(a, (y - offset) / y)
        for n, c in zip(names, coef):
            x[NAMES.index(n)] = c
        if knee:  # knees other than 0 only when neither dense coefficient is fixed
            x[NAMES.index("dense_floor_ms")] = x[NAMES.index("dense_ms_per_token")] * knee
        cost = float(np.sum(((_predict(x, f) - y) / y) ** 2))
        if cost < best_cost:
            best, best_cost = x, cost
    return best


def held_out_mask(n: int, held_out: float = 0.2, seed: int = 0) -> np.ndarray:
    """Which of ``n`` rows :func:`fit_tokens` keeps out of the fit (bool, shape ``(n,)``):
    ``round(held_out * n)`` of them, drawn by a seeded permutation."""
    test = np.zeros(n, dtype=bool)
    if held_out > 0:
        test[np.random.default_rng(seed).permutation(n)[:int(round(held_out * n))]] = True
    return test


def fit_tokens(rows: list[StepRow], *, held_out: float = 0.2, seed: int = 0,
               fixed: dict[str, float] | None = None
               ) -> tuple[TokensStepTime, StepTimeFit]:
    """Fit the ``tokens`` step-time form to ``rows``.

    Args:
        rows: measured steps; at least 6 (one per coefficient) after the hold-out.
        held_out: fraction of rows kept out of the fit and used to report its error.
        seed: seed of the hold-out split.
        fixed: coefficients pinned to a value (e.g. ``{"dense_floor_ms": 0}`` when the
            data cannot tell a floor from a constant).

    Returns:
        The fitted model and its :class:`~dynasim.profiles.profile.StepTimeFit` report (errors
        are fractions: ``|model - measured| / measured``).

    Raises:
        ValueError: too few rows, or a measured time that is not positive.
    """
    fixed = dict(fixed or {})
    unknown = set(fixed) - set(NAMES)
    if unknown:
        raise ValueError(f"unknown coefficients {sorted(unknown)} (known: {NAMES})")
    y = np.array([r.ms for r in rows], dtype=float)
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("every measured step time must be a positive number of ms")
    f = np.array([features(r) for r in rows], dtype=float)
    test = held_out_mask(len(rows), held_out, seed)
    train = ~test
    free = [i for i, n in enumerate(NAMES) if n not in fixed]
    if train.sum() < len(free):
        raise ValueError(f"{train.sum()} rows to fit {len(free)} coefficients")

    base = np.array([fixed.get(n, 0.0) for n in NAMES])
    ft, yt = f[train], y[train]
    x0 = _start(ft, yt, base, fixed)
    scale = np.maximum(np.abs(x0), 1e-9)

    def residual(z: np.ndarray) -> np.ndarray:
        x = base.copy()
        x[free] = z * scale[free]
        return (_predict(x, ft) - yt) / yt

    sol = least_squares(residual, x0[free] / scale[free], bounds=(0, np.inf),
                        x_scale="jac", method="trf")
    x = base.copy()
    x[free] = sol.x * scale[free]
    model = TokensStepTime(**dict(zip(NAMES, (float(v) for v in x))))
    err = np.abs(_predict(x, f) - y) / y
    report_err = err[test] if test.any() else err[train]
    prompt = [n + p for r in rows for n, p in r.prefill] or [0]
    report = StepTimeFit(
        rows=int(train.sum()), held_out_rows=int(test.sum()),
        train_median_error=float(np.median(err[train])),
        held_out_median_error=float(np.median(report_err)),
        held_out_p90_error=float(np.percentile(report_err, 90)),
        held_out_max_error=float(report_err.max()),
        max_step_tokens=int(f[:, 0].max()), max_num_decode=int(max(r.num_decode for r in rows)),
        max_sum_decode_ctx=int(f[:, 2].max()), max_prompt_tokens=int(max(prompt)))
    return model, report
