"""Policies by name: ``make_policy("sjf+certaindex")`` and ``make_intra("curve")``.

The registry imports its members (the inter-program policies and the intra-program
policies), so none of them imports it back.
"""

from __future__ import annotations

from dynasim.errors import InputError
from dynasim.policies.base import Policy
from dynasim.policies.fcfs import FCFS
from dynasim.policies.gang import Gang
from dynasim.policies.intra_program import (
    DEFAULT_CAP,
    DEFAULT_CONFIDENCE,
    DEFAULT_DETECT_AT,
    DEFAULT_LOW_THRESHOLD,
    DEFAULT_THRESHOLD,
    ESC,
    AdaptiveConsistency,
    BaselineEven,
    BaselineLength,
    CurveFit,
    IntraPolicy,
    StaticThreshold,
    TwoSided,
)
from dynasim.policies.lpm import LPM
from dynasim.policies.plas import PLAS
from dynasim.policies.sjf import SJF

INTER: dict[str, type[Policy]] = {"fcfs": FCFS, "lpm": LPM, "gang": Gang, "sjf": SJF,
                                  "plas": PLAS}
"""Inter-program policies by CLI name (Dynasor App. D.3; ``plas``: Autellix §4.2)."""


INTRA = ("even", "certaindex", "two-sided", "curve", "length", "esc", "adaptive-consistency")
#: Intra-program policies that measure certaindex and, alone, mean Dynasor's full system
#: (with SJF, App. D.3).
CERTAINDEX = ("certaindex", "two-sided")


def make_intra(name: str, cap: int = DEFAULT_CAP, detect_at: int = DEFAULT_DETECT_AT,
               threshold: float | None = None, reward_threshold: float | None = None,
               gamma: float = 1.0, max_tokens: int = 0,
               low_threshold: float | None = None,
               confidence: float = DEFAULT_CONFIDENCE) -> IntraPolicy:
    """The intra-program policy called ``name`` (:data:`INTRA`).

    ``certaindex`` thresholds: ``threshold`` on H̃ (default 0.7, the paper's SC/MATH
    value) and/or ``reward_threshold`` on R (tree search). ``two-sided`` takes the same
    and ``low_threshold`` (default 0.0,
    :data:`~dynasim.policies.intra_program.DEFAULT_LOW_THRESHOLD`), the floor of every
    signal it thresholds: H̃ <= low (SC) or R <= low (ToT) is hopeless
    (:class:`~dynasim.policies.intra_program.TwoSided`). Other policies ignore it.
    ``esc`` (:class:`~dynasim.policies.intra_program.ESC`) uses ``detect_at`` as its
    window; ``adaptive-consistency``
    (:class:`~dynasim.policies.intra_program.AdaptiveConsistency`) takes ``confidence``
    (default 0.95). Both serve SC programs only (a ToT program refuses them).

    Raises:
        InputError: unknown name; for ``two-sided`` a ``low_threshold`` above a threshold
            (field ``low_threshold``); for ``adaptive-consistency`` a ``confidence``
            outside (0, 1) (field ``confidence``).
    """
    if name == "even":
        return BaselineEven(cap, detect_at)
    if name in CERTAINDEX:
        th = {}
        if threshold is not None or reward_threshold is None:
            th["entropy"] = DEFAULT_THRESHOLD if threshold is None else threshold
        if reward_threshold is not None:
            th["reward"] = reward_threshold
        if name == "certaindex":
            return StaticThreshold(cap, detect_at, th)
        low = DEFAULT_LOW_THRESHOLD if low_threshold is None else low_threshold
        return TwoSided(cap, detect_at, th, {k: low for k in th})
    if name == "curve":
        return CurveFit(cap, detect_at, gamma)
    if name == "length":
        return BaselineLength(cap, detect_at, max_tokens)
    if name == "esc":
        return ESC(cap, detect_at)
    if name == "adaptive-consistency":
        return AdaptiveConsistency(cap, detect_at, confidence)
    raise InputError(f"unknown intra-program policy (known: {', '.join(INTRA)})",
                     field="policy", source=name)


def make_policy(name: str, inter: str | None = None, *, aging_s: float | None = None,
                **intra_args) -> Policy:
    """The policy called ``name``: ``INTER``, ``INTRA``, ``INTER+INTRA`` or
    ``INTRA+INTER`` (e.g. ``lpm``, ``gang+certaindex``, ``certaindex+sjf``).

    A lone intra name takes ``inter`` (default ``sjf`` for certaindex and two-sided,
    Dynasor's full system; ``fcfs`` otherwise). ``aging_s`` is SJF's aging threshold in seconds
    (:class:`dynasim.policies.sjf.SJF`; ``None``: its default), also PLAS's
    anti-starvation threshold (:class:`dynasim.policies.plas.PLAS`), unused by the other
    inter-program policies. ``intra_args`` go to :func:`make_intra`.

    Raises:
        InputError: an unknown name or a name with two inter or two intra parts.
    """
    known = INTER
    parts = [p.strip() for p in name.split("+") if p.strip()]
    inters = [p for p in parts if p in known]
    intras = [p for p in parts if p in INTRA]
    bad = [p for p in parts if p not in known and p not in INTRA]
    if bad or len(inters) > 1 or len(intras) > 1 or not parts:
        raise InputError(f"unknown policy (inter-program: {', '.join(known)}; "
                         f"intra-program: {', '.join(INTRA)}; combine as sjf+certaindex)",
                         field="policy", source=name)
    if inters and inter is not None and inter != inters[0]:
        raise InputError(f"--inter-program {inter} contradicts the policy name",
                         field="inter-program", source=name)
    chosen = inters[0] if inters else (inter or ("sjf" if intras and intras[0] in CERTAINDEX
                                                 else "fcfs"))
    if chosen not in known:
        raise InputError(f"unknown inter-program policy (known: {', '.join(known)})",
                         field="inter-program", source=chosen)
    intra = make_intra(intras[0] if intras else "even", **intra_args)
    if chosen in ("sjf", "plas") and aging_s is not None:
        return known[chosen](intra=intra, aging_s=aging_s)
    return known[chosen](intra=intra)
