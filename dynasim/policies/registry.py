"""Policies by name: ``make_policy("sjf+certaindex")`` and ``make_intra("curve")``.

The registry imports its members (the inter-program policies and the intra-program
policies), so none of them imports it back.
"""

from __future__ import annotations

from dynasim.errors import InputError
from dynasim.policies.base import Policy
from dynasim.policies.dynasor_cot import (
    DEFAULT_CERTAINTY_WINDOW,
    DEFAULT_COT_THRESHOLD,
    DEFAULT_PROBE_INTERVAL,
    DynasorCoT,
    TokenBudget,
)
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
from dynasim.policies.priority import Priority
from dynasim.policies.sjf import SJF

INTER: dict[str, type[Policy]] = {"fcfs": FCFS, "lpm": LPM, "gang": Gang, "sjf": SJF,
                                  "plas": PLAS, "priority": Priority}
"""Inter-program policies by CLI name (Dynasor App. D.3; ``plas``: Autellix §4.2;
``priority``: vLLM's ``--scheduling-policy priority``)."""


INTRA = ("even", "certaindex", "two-sided", "curve", "length", "esc", "adaptive-consistency",
         "dynasor-cot", "budget")
#: Intra-program policies that measure certaindex and, alone, mean Dynasor's full system
#: (with SJF, App. D.3).
CERTAINDEX = ("certaindex", "two-sided")
#: How an SC program sends its samples (:attr:`IntraPolicy.dispatch`).
DISPATCH = ("waves", "eager")


def make_intra(name: str, cap: int = DEFAULT_CAP, detect_at: int = DEFAULT_DETECT_AT,
               threshold: float | None = None, reward_threshold: float | None = None,
               gamma: float = 1.0, max_tokens: int = 0,
               low_threshold: float | None = None,
               confidence: float = DEFAULT_CONFIDENCE, dispatch: str = "waves",
               probe_interval: int = DEFAULT_PROBE_INTERVAL,
               certainty_window: int = DEFAULT_CERTAINTY_WINDOW,
               token_budget: int | None = None) -> IntraPolicy:
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
    ``dynasor-cot`` (:class:`~dynasim.policies.dynasor_cot.DynasorCoT`, long chain of
    thought) takes ``probe_interval`` (T, default 64), ``certainty_window`` (w, default
    2) and ``threshold`` as τ (default 1.0); ``budget``
    (:class:`~dynasim.policies.dynasor_cot.TokenBudget`) takes ``token_budget`` (B).
    Both serve CoT programs only.
    ``dispatch``: ``waves`` (default) or ``eager`` (issue every sample at once, abort
    the unneeded ones after the detect step;
    :attr:`~dynasim.policies.intra_program.IntraPolicy.dispatch`).

    Raises:
        InputError: unknown name or dispatch (field ``dispatch``; ``eager`` with
            ``esc`` or ``adaptive-consistency``, whose decisions come one wave at a
            time); for ``two-sided`` a ``low_threshold`` above a threshold
            (field ``low_threshold``); for ``adaptive-consistency`` a ``confidence``
            outside (0, 1) (field ``confidence``).
    """
    if dispatch not in DISPATCH:
        raise InputError(f"unknown dispatch (known: {', '.join(DISPATCH)})",
                         field="dispatch", source=dispatch)
    if name == "dynasor-cot":
        intra: IntraPolicy = DynasorCoT(probe_interval, certainty_window,
                                        DEFAULT_COT_THRESHOLD if threshold is None
                                        else threshold)
    elif name == "budget":
        if token_budget is None:
            raise InputError("the budget policy needs a token budget (--token-budget)",
                             field="token_budget", source=name)
        intra = TokenBudget(token_budget)
    else:
        intra = _make_intra(name, cap, detect_at, threshold, reward_threshold, gamma,
                            max_tokens, low_threshold, confidence)
    if dispatch == "eager" and getattr(intra, "sequential", False):
        raise InputError(f"{name} decides one wave at a time: it cannot dispatch eagerly "
                         "(use --dispatch waves)", field="dispatch", source=name)
    intra.dispatch = dispatch
    return intra


def _make_intra(name: str, cap: int, detect_at: int, threshold: float | None,
                reward_threshold: float | None, gamma: float, max_tokens: int,
                low_threshold: float | None, confidence: float) -> IntraPolicy:
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
    ``INTRA+INTER`` (e.g. ``lpm``, ``gang+certaindex``, ``certaindex+sjf``), optionally
    followed by ``@eager`` or ``@waves``, the intra-program dispatch
    (``sjf+two-sided@eager``; same as ``dispatch=`` in ``intra_args``).

    A lone intra name takes ``inter`` (default ``sjf`` for certaindex and two-sided,
    Dynasor's full system; ``fcfs`` otherwise). ``aging_s`` is SJF's aging threshold in seconds
    (:class:`dynasim.policies.sjf.SJF`; ``None``: its default), also PLAS's
    anti-starvation threshold (:class:`dynasim.policies.plas.PLAS`), unused by the other
    inter-program policies. ``intra_args`` go to :func:`make_intra`.

    Raises:
        InputError: an unknown name or a name with two inter or two intra parts.
    """
    known = INTER
    if "@" in name:  # sjf+two-sided@eager: the dispatch in the name (sweep policy lists)
        name, dispatch = name.rsplit("@", 1)
        if intra_args.get("dispatch", "waves") not in ("waves", dispatch):
            raise InputError(f"--dispatch {intra_args['dispatch']} contradicts the policy "
                             "name", field="dispatch", source=f"{name}@{dispatch}")
        intra_args["dispatch"] = dispatch
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
