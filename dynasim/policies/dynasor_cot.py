"""Intra-program policies of long chain-of-thought programs in online runs.

A CoT program (:mod:`dynasim.workloads.cot_run`) is one logged trajectory: a main
request that decodes the chain of thought, and -- under Dynasor-CoT -- a probe request
every T generated tokens whose answer comes from the log. These policies say what the
program does; the stop rule itself is :func:`dynasim.policies.cot.should_stop`, the one
implementation the live proxy also runs.

* :class:`DynasorCoT` (``dynasor-cot``; Dynasor §2.1, Fig. 6): probe every
  ``probe_interval`` tokens; stop the program (abort its main request, vLLM's
  ``abort_request``) at the first probe whose last ``certainty_window`` answers agree
  with consistency >= ``threshold``; its answer is that probe's.
* :class:`TokenBudget` (``budget``; the paper's baseline): the main request decodes at
  most ``tokens`` tokens; a trajectory cut short is then asked one probe (its forced
  answer is the program's), one that ended by itself answers with its final answer.
* Any other intra-program policy runs the whole trajectory (its logged final answer).
"""

from __future__ import annotations

from dynasim.errors import InputError
from dynasim.policies.intra_program import DEFAULT_CAP, IntraPolicy

#: Probe spacing T of the online default: the data's own (governor_cot_probes probes
#: every 64 tokens); the live proxy's default is 32.
DEFAULT_PROBE_INTERVAL = 64
#: w and τ: the live proxy's defaults (``replay/proxy/probe.py``).
DEFAULT_CERTAINTY_WINDOW = 2
DEFAULT_COT_THRESHOLD = 1.0


class DynasorCoT(IntraPolicy):
    """Dynasor-CoT (module docstring). Serves CoT programs only.

    Args:
        probe_interval: T, generated tokens between probes (>= 1).
        certainty_window: w, probes in the consistency window (>= 1).
        threshold: τ in (0, 1].

    Raises:
        InputError: a knob out of range (field named).
    """

    name = "dynasor-cot"
    algorithms = ("cot",)

    def __init__(self, probe_interval: int = DEFAULT_PROBE_INTERVAL,
                 certainty_window: int = DEFAULT_CERTAINTY_WINDOW,
                 threshold: float = DEFAULT_COT_THRESHOLD) -> None:
        super().__init__(DEFAULT_CAP, 1)
        for field, v in (("probe_interval", probe_interval),
                         ("certainty_window", certainty_window)):
            if v < 1:
                raise InputError(f"{field} must be >= 1, got {v}", field=field)
        if not 0 < threshold <= 1:
            raise InputError(f"threshold τ must be in (0, 1], got {threshold}",
                             field="threshold")
        self.probe_interval = probe_interval
        self.certainty_window = certainty_window
        self.threshold = threshold

    def __repr__(self) -> str:
        return (f"dynasor-cot(T={self.probe_interval}, w={self.certainty_window}, "
                f"tau={self.threshold:g})")


class TokenBudget(IntraPolicy):
    """Truncation at a token budget (module docstring). Serves CoT programs only.

    Args:
        tokens: B, the main request's most generated tokens (>= 1).

    Raises:
        InputError: B < 1 (field ``token_budget``).
    """

    name = "budget"
    algorithms = ("cot",)

    def __init__(self, tokens: int) -> None:
        super().__init__(DEFAULT_CAP, 1)
        if tokens < 1:
            raise InputError(f"token budget must be >= 1, got {tokens}",
                             field="token_budget")
        self.tokens = tokens

    def __repr__(self) -> str:
        return f"budget(B={self.tokens})"
