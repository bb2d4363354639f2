"""Profiler-guided calibration of intra-program policies (Dynasor App. D.2).

The paper lets an operator pick thresholds on a labelled *calibration batch* so that
accuracy does not drop. :func:`calibrate_threshold` does exactly that, honestly split:

1. questions are split at random (``seed``) into a calibration part (``fraction``) and a
   disjoint held-out part;
2. on the calibration part, baseline-even at the cap gives the reference accuracy; every
   candidate threshold in ``grid`` is run (mean over ``seeds`` draw orders); the chosen
   one uses the fewest output tokens among those whose accuracy is at least the
   reference minus ``tolerance``;
3. the chosen policy and the cap are then evaluated on the held-out part only.

:func:`calibrate_pair` does the same for the two-sided policy's (threshold,
low_threshold) pairs (low <= high) on the same split.

:func:`fit_curve` fits the dynamic curve-fitting policy's γ on a calibration part.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from dynasim.certaindex import entropy_certaindex, majority_vote
from dynasim.experiments.batch import run_batch
from dynasim.policies.intra_program import BaselineEven, CurveFit, IntraPolicy
from dynasim.workloads.program import ProgramSpec, program_rng, shuffled


def split(programs: Sequence[ProgramSpec], fraction: float,
          seed: int) -> tuple[list[ProgramSpec], list[ProgramSpec]]:
    """(calibration, held-out): a seeded random split by question.

    Raises:
        ValueError: a fraction that leaves either part empty.
    """
    order = list(programs)
    random.Random(seed).shuffle(order)
    k = round(len(order) * fraction)
    if not 0 < k < len(order):
        raise ValueError(f"calibration fraction {fraction} leaves an empty split of "
                         f"{len(order)} programs")
    return order[:k], order[k:]


def _mean(programs: Sequence[ProgramSpec], intra: IntraPolicy, seeds: int) -> tuple[float, float]:
    runs = [run_batch(programs, intra, s) for s in range(seeds)]
    return (float(np.mean([r["accuracy"] for r in runs])),
            float(np.mean([r["output_tokens"] for r in runs])))


def _calibrate(programs: Sequence[ProgramSpec], make: Callable[[object], IntraPolicy],
               grid: Sequence, conservative: object, cap: int, tolerance: float,
               fraction: float, seeds: int, seed: int) -> dict:
    """The shared procedure of the module doc over the candidates ``grid`` (``make``:
    candidate -> policy); ``conservative`` is chosen when no candidate qualifies.
    Returns the result dict with the chosen candidate under ``choice`` and the
    per-candidate calibration rows (``accuracy``, ``output_tokens``) under ``curve``."""
    calib, held = split(programs, fraction, seed)
    even = BaselineEven(cap)
    ref_acc, ref_tok = _mean(calib, even, seeds)
    curve, best = [], None
    for t in grid:
        acc, tok = _mean(calib, make(t), seeds)
        curve.append((t, acc, tok))
        if acc >= ref_acc - tolerance - 1e-12 and (best is None or tok < best[2]):
            best = (t, acc, tok)
    if best is None:  # nothing qualifies: the most conservative candidate
        best = (conservative, *_mean(calib, make(conservative), seeds))
    t = best[0]
    h_acc, h_tok = _mean(held, make(t), seeds)
    hc_acc, hc_tok = _mean(held, even, seeds)
    return {"choice": t, "tolerance": tolerance, "cap": cap,
            "calibration": {"programs": len(calib), "accuracy": best[1],
                            "output_tokens": best[2], "accuracy_cap": ref_acc,
                            "output_tokens_cap": ref_tok},
            "held_out": {"programs": len(held), "accuracy": h_acc, "output_tokens": h_tok,
                         "accuracy_cap": hc_acc, "output_tokens_cap": hc_tok},
            "curve": curve}


def calibrate_threshold(programs: Sequence[ProgramSpec], make: Callable[[float], IntraPolicy],
                        grid: Sequence[float], cap: int, tolerance: float = 0.01,
                        fraction: float = 0.5, seeds: int = 5, seed: int = 0) -> dict:
    """Pick the cheapest threshold within ``tolerance`` of the cap's accuracy.

    Args:
        make: threshold -> intra-program policy (with the cap and detect step set).
        grid: candidate thresholds.
        tolerance: allowed accuracy drop (absolute, e.g. 0.01 = 1 point).

    Returns:
        dict with ``threshold`` and, for ``calibration`` and ``held_out``, the accuracy
        and output tokens of the chosen policy and of baseline-even at the cap
        (``*_cap``), plus the per-threshold calibration ``curve``.
    """
    res = _calibrate(programs, make, grid, max(grid), cap, tolerance, fraction, seeds,
                     seed)
    t = res.pop("choice")
    res["curve"] = [{"threshold": c, "accuracy": a, "output_tokens": k}
                    for c, a, k in res["curve"]]
    return {"threshold": t, **res}


def calibrate_pair(programs: Sequence[ProgramSpec],
                   make: Callable[[float, float], IntraPolicy], grid: Sequence[float],
                   cap: int, tolerance: float = 0.01, fraction: float = 0.5,
                   seeds: int = 5, seed: int = 0) -> dict:
    """Pick the cheapest (threshold, low_threshold) pair of the two-sided policy
    (:class:`~dynasim.policies.intra_program.TwoSided`) within ``tolerance`` of the
    cap's accuracy, on the calibration split, and evaluate it on the held-out split.

    The candidates are every pair of ``grid`` values with low <= high (the policy refuses
    low > high); with none qualifying the most conservative pair is kept: the highest
    threshold and the lowest low threshold (fewest programs stopped on either side).
    Dynasor App. D.2's profiler-guided calibration, extended to the second threshold.

    Args:
        make: (threshold, low_threshold) -> intra-program policy.
        grid: candidate values for both thresholds, in [0, 1].
        tolerance: allowed accuracy drop (absolute, e.g. 0.01 = 1 point).

    Returns:
        dict with ``threshold``, ``low_threshold`` and, for ``calibration`` and
        ``held_out``, the accuracy and output tokens of the chosen policy and of
        baseline-even at the cap (``*_cap``), plus the per-pair calibration ``curve``.
    """
    pairs = [(hi, lo) for hi in grid for lo in grid if lo <= hi]
    res = _calibrate(programs, lambda p: make(*p), pairs, (max(grid), min(grid)), cap,
                     tolerance, fraction, seeds, seed)
    hi, lo = res.pop("choice")
    res["curve"] = [{"threshold": p[0], "low_threshold": p[1], "accuracy": a,
                     "output_tokens": k} for p, a, k in res["curve"]]
    return {"threshold": hi, "low_threshold": lo, **res}


def needed_samples(spec: ProgramSpec, cap: int, detect_at: int) -> int:
    """Fewest samples n >= detect_at whose majority vote is as correct as the cap's,
    for the spec's draw order (the target that curve fitting learns)."""
    calls = spec.samples[:cap]
    want = majority_vote([c.answer for c in calls], [c.correct for c in calls],
                         spec.equivalent)[1]
    for n in range(detect_at, len(calls) + 1):
        got = majority_vote([c.answer for c in calls[:n]], [c.correct for c in calls[:n]],
                            spec.equivalent)[1]
        if got == want:
            return n
    return len(calls)


def fit_curve(programs: Sequence[ProgramSpec], cap: int, detect_at: int,
              seeds: int = 5) -> CurveFit:
    """Fit γ of ``n(h) = detect + (cap − detect)(1 − h)^γ`` by least squares over
    (certaindex at the detect step, samples needed) pairs of every program and seed
    (scipy ``minimize_scalar`` on γ in [0.05, 20])."""
    hs, ns = [], []
    for s in range(seeds):
        for spec in programs:
            if spec.algorithm != "sc" or len(spec.samples) < max(detect_at, 2):
                continue
            sp = shuffled(spec, program_rng(s, spec.question_id))
            first = sp.samples[:detect_at]
            hs.append(entropy_certaindex([c.answer for c in first], sp.equivalent))
            ns.append(needed_samples(sp, cap, detect_at))
    h, n = np.array(hs), np.array(ns, float)

    def loss(g: float) -> float:
        return float(np.sum((detect_at + (cap - detect_at) * (1 - h) ** g - n) ** 2))

    g = minimize_scalar(loss, bounds=(0.05, 20.0), method="bounded").x
    return CurveFit(cap, detect_at, float(g))


def evaluate(programs: Sequence[ProgramSpec], intra: IntraPolicy, seeds: int) -> dict[str, float]:
    """Mean accuracy and output tokens of ``intra`` over ``seeds`` draw orders."""
    acc, tok = _mean(programs, intra, seeds)
    return {"accuracy": acc, "output_tokens": tok}


__all__ = ["split", "calibrate_threshold", "calibrate_pair", "needed_samples", "fit_curve", "evaluate"]
