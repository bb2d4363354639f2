"""The scheduler ablation (Dynasor §4, App. G): the same programs, arrivals and deadlines
under lpm, gang, lpm+certaindex, gang+certaindex and sjf+certaindex.

``dynasim ablation --workload W --request-rate R --profile P [limits]`` prints mean program
latency, P90 latency, SLO attainment, accuracy and output tokens per policy and writes
them as CSV. The paper's version (SC/GSM8K at 16 programs/s, mean latency): LPM 410 s,
gang 306 s, LPM + certaindex 165 s, gang + certaindex 159 s, SJF + certaindex 134 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from dynasim.metrics import summarize_programs

if TYPE_CHECKING:
    from dynasim.profiles.profile import Profile
    from dynasim.workloads.catalog import Workload

ABLATION = ("lpm", "gang", "lpm+certaindex", "gang+certaindex", "sjf+certaindex")


def run_ablation(workload: Workload, profile: Profile, rate: float, intra_args: dict, seed: int = 0,
                 num_programs: int | None = None, slo_scale: float = 1.0,
                 base: float | None = None,
                 policies: Sequence[str] = ABLATION,
                 aging_s: float | None = None, base_multiple: float | None = None,
                 warmup: int = 0, cooldown: int = 0) -> pd.DataFrame:
    """One row per policy (same specs, arrivals, deadlines for all). ``base_multiple``,
    ``warmup`` and ``cooldown`` are the deadline protocol's options
    (:func:`dynasim.simulation.online_programs`, :func:`dynasim.metrics.summarize_programs`).

    Returns:
        DataFrame: ``policy, program_rate, mean_program_latency_s,
        p90_program_latency_s, slo_attainment, accuracy, total_program_output_tokens,
        mean_samples_used, base_deadline_s``.
    """
    from dynasim.policies import make_policy
    from dynasim.simulation import online_programs, simulate_programs

    specs, times, deadlines, base = online_programs(
        workload, profile, rate, seed=seed, num_programs=num_programs,
        slo_scale=slo_scale, base=base, cap=intra_args["cap"], base_multiple=base_multiple)
    rows = []
    for name in policies:
        policy = make_policy(name, aging_s=aging_s, **intra_args)
        _, progs, _ = simulate_programs(specs, times, profile, policy, deadlines)
        s = summarize_programs(progs, warmup=warmup, cooldown=cooldown)
        rows.append({"policy": name, "program_rate": rate,
                     **{k: s[k] for k in ("mean_program_latency_s",
                                          "p90_program_latency_s", "slo_attainment",
                                          "accuracy", "total_program_output_tokens",
                                          "mean_samples_used")},
                     "base_deadline_s": base})
    return pd.DataFrame(rows)


