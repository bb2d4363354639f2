"""Every buildable profile by name: the shipped ``profiles/*.json`` are these builders'
output. Each builder reads its public source through :mod:`dynasim.datasets`
(sha256-checked) and returns a :class:`~dynasim.profiles.profile.Profile`;
``dynasim profiles --build NAME`` writes it, and a test checks each shipped file equals a
fresh build. The profiles of :data:`RUN_PROFILES` are fitted by
simulating recorded vLLM runs (a minute or so each).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from dynasim.profiles import fit_runs, llmservingsim, splitwise, vidur
from dynasim.profiles.distserve import distserve_opt13b_a100
from dynasim.profiles.profile import Profile

#: The shipped profiles fitted on recorded runs: name -> (runs fitted on, runs held out).
#: One workload or rate per server is held out at least; the LLMServingSim servers have
#: one run each, so their profiles are fitted on it and nothing is held out.
RUN_PROFILES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "vllm023-qwen3-14b-h100": (
        ("residency-rate2", "residency-rate6", "residency-w7-agg6"),
        ("residency-rate4", "residency-rate8", "residency-w7-agg12")),
    "vllm0151-llama2-7b-h100": (("blis-llama2-7b-general",),
                                ("blis-llama2-7b-codegen", "blis-llama2-7b-roleplay")),
    "vllm0151-llama2-70b-h100-tp4": (("blis-llama2-70b-general",),
                                     ("blis-llama2-70b-codegen", "blis-llama2-70b-roleplay")),
    "vllm0151-mixtral-8x7b-h100-tp2": (("blis-mixtral-general",),
                                       ("blis-mixtral-codegen", "blis-mixtral-roleplay",
                                        "blis-mixtral-reasoning")),
    "vllm019-llama3.1-8b-rtx4090": (("llmservingsim-rtx4090-llama3.1-8b",), ()),
    "vllm019-qwen3-32b-rtxpro6000-tp2": (("llmservingsim-rtxpro6000-qwen3-32b",), ()),
}

#: Engine switches turned off in a shipped profile against its vLLM version's table
#: (:func:`dynasim.profiles.run_switches.switches_for`): only where the switch, fitted
#: with, made the held-out runs' error worse by more than noise (``dynasim validate``
#: before and after); name -> the switches set.
#: Measured (validate tables in the issue-16 part-4 report): async scheduling made the
#: held-out E2E error of the 0.23 residency server 2-4x worse (rate 8: 1.3% -> 5.8%),
#: of Llama-2-70B roleplay 0.9% -> 8.3% and Mixtral codegen/roleplay 1.1/1.6% -> 3.1/5.2%,
#: and the fitted error of the Qwen3-32B run 0.7% -> 5.0% (mean E2E); full-prompt
#: admission moved the saturated residency run 30.4% -> 31.1%. Llama-2-7B (held-out TTFT
#: 36.5/42.9% -> 11.7/21.9%) and the RTX 4090 run keep their version's switches.
#: Rechecked with the residency driver's in-flight cap simulated (dynasim.runs.client),
#: refitting each way: full-prompt admission alone changes nothing but the saturated run
#: (E2E/TTFT 2.9/6.0% -> 3.0/6.1%); both switches on bring it to 2.2/2.3% and w7-agg6 to
#: 2.3/13.8% (from 3.5/18.7%) but the 1024-token runs' E2E from 0.8-1.3% to 1.3-2.7%
#: and their mean E2E error from 0.1-0.3% to 1.3-3.1%: the overrides stay.
SWITCH_OVERRIDES: dict[str, dict[str, bool]] = {
    "vllm023-qwen3-14b-h100": {"async_scheduling": False, "admit_full_prompt": False},
    "vllm0151-llama2-70b-h100-tp4": {"async_scheduling": False},
    "vllm0151-mixtral-8x7b-h100-tp2": {"async_scheduling": False},
    "vllm019-qwen3-32b-rtxpro6000-tp2": {"async_scheduling": False},
}

#: evaluations of the shipped fits (:func:`build`)
BUILD_EVALS = 100


def build(name: str) -> Profile:
    """The shipped profile ``name`` of :data:`RUN_PROFILES`, fitted by
    :func:`dynasim.profiles.fit_runs.fit_from_runs` with :data:`BUILD_EVALS` evaluations
    and the switches of its runs' vLLM version less :data:`SWITCH_OVERRIDES`
    (deterministic: the same data give the same profile); its ``provenance`` names the
    runs' files and their sha256.

    Raises:
        KeyError: ``name`` is not in :data:`RUN_PROFILES`.
    """
    from dynasim import datasets

    fit_on, held_out = RUN_PROFILES[name]
    files = {k: {"repo": v.repo, "commit": v.commit, "path": v.path, "sha256": v.sha256}
             for k, v in datasets.REGISTRY.items()
             if any(k.startswith(_dataset_stem(r)) for r in fit_on)}
    over = SWITCH_OVERRIDES.get(name, {})
    extra = {"switch_overrides": over} if over else {}
    profile, _ = fit_runs.fit_from_runs(list(fit_on), list(held_out), name,
                                        max_evals=BUILD_EVALS,
                                        provenance={"files": files, **extra}, switches=over)
    return profile


def _dataset_stem(run: str) -> str | tuple[str, ...]:
    """The dataset-name prefixes of a run's files in :mod:`dynasim.datasets`."""
    from dynasim.runs import blis, llmservingsim, residency

    if run in residency.RUNS:  # its trace (and chunk times) and the server config
        return (f"residency-qwen3-14b-{residency.RUNS[run]}-", "residency-qwen3-14b-server")
    if run in blis.EXPERIMENTS:
        return f"blis-{blis.EXPERIMENTS[run][16:]}"
    return f"llmservingsim-{llmservingsim.RUNS[run][0]}-"


BUILDERS: dict[str, Callable[[], Profile]] = {
    "distserve-opt13b-a100": distserve_opt13b_a100,
    **splitwise.builders(),
    vidur.NAME: vidur.build,
    llmservingsim.NAME: llmservingsim.build,
    **{name: partial(build, name) for name in RUN_PROFILES}}
"""Profile name -> zero-argument builder."""
