"""The scheduler ablation (Dynasor §4, App. G): the same programs, arrivals and deadlines
under lpm, gang, lpm+certaindex, gang+certaindex and sjf+certaindex.

``dynasim ablation --workload W --request-rate R --profile P [limits]`` prints mean program
latency, P90 latency, SLO attainment, accuracy and output tokens per policy and writes
them as CSV. The paper's version (SC/GSM8K at 16 programs/s, mean latency): LPM 410 s,
gang 306 s, LPM + certaindex 165 s, gang + certaindex 159 s, SJF + certaindex 134 s.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dynasim.metrics import summarize_programs

ABLATION = ("lpm", "gang", "lpm+certaindex", "gang+certaindex", "sjf+certaindex")


def run_ablation(workload, profile, rate: float, intra_args: dict, seed: int = 0,
                 num_programs: int | None = None, slo_scale: float = 1.0,
                 base: float | None = None, policies=ABLATION,
                 aging_s: float | None = None) -> pd.DataFrame:
    """One row per policy (same specs, arrivals, deadlines for all).

    Returns:
        DataFrame: ``policy, program_rate, mean_program_latency_s,
        p90_program_latency_s, slo_attainment, accuracy, total_program_output_tokens,
        mean_samples_used, base_deadline_s``.
    """
    from dynasim.policy import make_policy
    from dynasim.simulation import online_programs, simulate_programs

    specs, times, deadlines, base = online_programs(
        workload, profile, rate, seed=seed, num_programs=num_programs,
        slo_scale=slo_scale, base=base, cap=intra_args["cap"])
    rows = []
    for name in policies:
        policy = make_policy(name, aging_s=aging_s, **intra_args)
        _, progs, _ = simulate_programs(specs, times, profile, policy, deadlines)
        s = summarize_programs(progs)
        rows.append({"policy": name, "program_rate": rate,
                     **{k: s[k] for k in ("mean_program_latency_s",
                                          "p90_program_latency_s", "slo_attainment",
                                          "accuracy", "total_program_output_tokens",
                                          "mean_samples_used")},
                     "base_deadline_s": base})
    return pd.DataFrame(rows)


def cmd_ablation(args) -> None:
    """``dynasim ablation``: print and write the ablation table."""
    from dynasim.cli import _profile
    from dynasim.cli_programs import _intra_args, online_profile
    from dynasim.workloads import load_workload

    profile = online_profile(args, _profile(args))
    w = load_workload(args.workload)
    table = run_ablation(w, profile, args.request_rate, _intra_args(args), args.seed,
                         args.num_programs, args.slo_scale, args.base_deadline,
                         aging_s=args.sjf_aging)
    print(f"{w.name} on {profile.name} ({profile.scheduling}, max_num_seqs "
          f"{profile.max_num_seqs}), {args.request_rate} programs/s, seed {args.seed}, "
          f"SLO scale {args.slo_scale}, base deadline {table.base_deadline_s[0]:.2f} s")
    print(f"{'policy':<18}{'mean lat s':>11}{'p90 lat s':>11}{'SLO att.':>10}"
          f"{'accuracy':>10}{'out tokens':>12}{'samples':>9}")
    for r in table.itertuples():
        print(f"{r.policy:<18}{r.mean_program_latency_s:>11.2f}"
              f"{r.p90_program_latency_s:>11.2f}{r.slo_attainment:>10.3f}"
              f"{r.accuracy:>10.3f}{r.total_program_output_tokens:>12}"
              f"{r.mean_samples_used:>9.2f}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(f"wrote {out}")
