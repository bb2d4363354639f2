"""Batch mode: the paper's offline token-to-accuracy experiment (Dynasor §4, App. G).

All programs are run to completion with no serving system in the loop: only the
intra-program policy decides how many samples (or how wide a beam) each program gets.
For every policy and cap, each seed shuffles every program's sample draw order; the row
reports the mean ± std over seeds of the workload's total output tokens and accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dynasim.workloads.program import Program, ProgramSpec, program_rng, shuffled

if TYPE_CHECKING:
    from dynasim.policies.intra_program import IntraPolicy


def run_program_offline(spec: ProgramSpec, intra: IntraPolicy) -> Program:
    """Run one program to completion, every wave finishing at once (no timing)."""
    prog = Program(0, spec, intra)
    wave = prog.start()
    while wave:
        for call in wave:
            prog.on_call_done(call)
        wave = prog.on_wave_done(0.0)
    return prog


def run_batch(programs: Sequence[ProgramSpec], intra: IntraPolicy, seed: int) -> dict[str, float]:
    """One seed of one policy over a workload.

    Returns:
        ``{"output_tokens": total generated tokens, "accuracy": fraction correct,
        "knob": mean knob (samples or beam width), "stopped": fraction of programs that
        stopped at the detect step}``.
    """
    tokens, correct, knobs, stopped = 0, 0, 0, 0
    for spec in programs:
        prog = run_program_offline(shuffled(spec, program_rng(seed, spec.question_id)), intra)
        tokens += prog.output_tokens_done
        correct += prog.result()[1]
        knobs += prog.knob
        first = min(intra.first_wave(min(intra.cap, spec.max_knob)), spec.max_knob) \
            if spec.algorithm == "sc" else intra.cap
        stopped += prog.knob < min(intra.cap, spec.max_knob) and prog.knob <= first
    n = len(programs)
    return {"output_tokens": tokens, "accuracy": correct / n, "knob": knobs / n,
            "stopped": stopped / n}


def token_accuracy(programs: Sequence[ProgramSpec],
                   policies: dict[str, Callable[[int], IntraPolicy]], caps: Sequence[int],
                   seeds: int) -> pd.DataFrame:
    """Token-to-accuracy rows: one per (policy, cap), mean ± std over ``seeds`` seeds.

    Args:
        policies: name -> factory ``cap -> intra-program policy``.

    Returns:
        DataFrame with columns ``policy, cap, setting, output_tokens_mean,
        output_tokens_std, accuracy_mean, accuracy_std, knob_mean, stopped_mean, seeds``.
    """
    rows = []
    for name, make in policies.items():
        for cap in caps:
            intra = make(cap)
            runs = [run_batch(programs, intra, s) for s in range(seeds)]
            t = np.array([r["output_tokens"] for r in runs], float)
            a = np.array([r["accuracy"] for r in runs], float)
            rows.append({"policy": name, "cap": cap, "setting": repr(intra),
                         "output_tokens_mean": t.mean(), "output_tokens_std": t.std(),
                         "accuracy_mean": a.mean(), "accuracy_std": a.std(),
                         "knob_mean": float(np.mean([r["knob"] for r in runs])),
                         "stopped_mean": float(np.mean([r["stopped"] for r in runs])),
                         "seeds": seeds})
    return pd.DataFrame(rows)


def tokens_saved(table: pd.DataFrame, policy: str, baseline: str = "even") -> dict:
    """Tokens saved by ``policy`` at the largest cap against ``baseline``, at equal
    accuracy: the baseline's tokens needed to reach the policy's accuracy are read off
    its token-to-accuracy curve (linear interpolation between caps; the largest cap's
    tokens when the policy's accuracy is at or above it).

    Returns:
        ``{"cap", "accuracy", "policy_tokens", "baseline_tokens", "saved"}`` (saved is a
        fraction of the baseline's tokens).
    """
    cap = table["cap"].max()
    mine = table[(table.policy == policy) & (table.cap == cap)].iloc[0]
    base = table[table.policy == baseline].sort_values("output_tokens_mean")
    acc = mine.accuracy_mean
    xs, ys = base.accuracy_mean.to_numpy(), base.output_tokens_mean.to_numpy()
    at_cap = base[base.cap == cap].iloc[0]
    if acc >= at_cap.accuracy_mean:
        need = at_cap.output_tokens_mean
    else:
        order = np.argsort(xs, kind="stable")
        need = float(np.interp(acc, xs[order], ys[order]))
    return {"cap": int(cap), "accuracy": float(acc),
            "policy_tokens": float(mine.output_tokens_mean), "baseline_tokens": need,
            "saved": 1.0 - float(mine.output_tokens_mean) / need if need else 0.0}


def matched_length_threshold(programs: Sequence[ProgramSpec], certaindex: IntraPolicy,
                             seeds: int) -> int:
    """baseline-length's token threshold when none is given: the one that stops the same
    fraction of programs at the detect step as ``certaindex`` does, so the comparison
    isolates the stopping signal (length vs certaindex) at an equal stopping rate.

    Returns the ``f``-quantile of the detect-step output-token totals over programs and
    seeds, ``f`` being certaindex's stopped fraction (0 tokens when it stops none)."""
    frac = float(np.mean([run_batch(programs, certaindex, s)["stopped"]
                          for s in range(seeds)]))
    if frac <= 0:
        return 0
    d = certaindex.detect_at
    totals = [sum(c.output_tokens for c in
                  shuffled(p, program_rng(s, p.question_id)).samples[:d])
              for s in range(seeds) for p in programs if p.algorithm == "sc"]
    return int(np.quantile(totals, frac, method="lower"))
