"""Intra-program policies: how much of its knob each program gets (Dynasor App. D.2).

Every policy gives a program a resource *cap* (SC samples, ToT beam width) and, except
baseline-even, measures once at a *detect step* and then sets the knob:

* :class:`BaselineEven` -- every program runs to the cap (the uniform allocation the paper
  compares against).
* :class:`StaticThreshold` -- the paper's default, used in all its end-to-end results:
  at the detect step measure certaindex; a program whose every signal passes its
  threshold stops there, the others run to the cap.
* :class:`TwoSided` -- the static rule plus its mirror image: a program that is certain
  (every signal >= its threshold) *or* hopeless (a signal <= its low threshold: answers so
  scattered that more samples are unlikely to form a majority, or a best tree-search
  reward below a floor) stops at the detect step (Dynasor abstract: "terminates
  unpromising queries early").
* :class:`CurveFit` -- dynamic allocation: the knob is a fitted, decreasing function of
  certaindex, ``n(h) = detect + (cap − detect)·(1 − h)^γ`` (App. D.2 "curve fitting";
  γ fitted by :func:`fit_curve` on a calibration split).
* :class:`BaselineLength` -- stop on cumulative output tokens at the detect step: a
  program whose first samples are short in total (<= ``max_tokens``) stops (the paper's
  length baseline: output length as a cheap stand-in for certainty).

The field's SC early-stopping baselines decide after every wave, not once
(:meth:`IntraPolicy.next_wave`), and serve SC (and CoT) programs only:

* :class:`ESC` -- Early-stopping Self-Consistency (Li et al., ICLR 2024): windows of
  ``detect_at`` samples until one window is unanimous.
* :class:`AdaptiveConsistency` -- Adaptive-Consistency (Aggarwal et al., EMNLP 2023):
  one sample at a time until the Beta posterior of the majority reaches ``confidence``.

Profiler-guided calibration of the threshold lives in :mod:`dynasim.experiments.calibration`.
A policy object holds no per-program state; :class:`~dynasim.workloads.program.Program` calls it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dynasim.certaindex import (
    clusters,
    entropy_certaindex,
    is_certain,
    is_hopeless,
    is_missing,
    reward_certaindex,
)
from dynasim.errors import InputError

if TYPE_CHECKING:
    from dynasim.workloads.call import Call
    from dynasim.workloads.program import Program
    from dynasim.workloads.tot import StepRun

#: Paper defaults (App. D.2 table; SC/MATH): cap 20 samples, detect at 5, H̃ >= 0.7.
DEFAULT_CAP = 20
DEFAULT_DETECT_AT = 5
DEFAULT_THRESHOLD = 0.7
#: Two-sided default low threshold: H̃ <= 0 means no two detect-step answers agree (the
#: most conservative "hopeless" rule; calibrate it with ``dynasim calibrate-thresholds
#: --policy two-sided``). Not a paper value: the paper publishes no low threshold.
DEFAULT_LOW_THRESHOLD = 0.0
#: Adaptive-Consistency's stopping confidence (Aggarwal et al., EMNLP 2023, §3).
DEFAULT_CONFIDENCE = 0.95


class IntraPolicy:
    """Base: the cap and the detect step; subclasses override :meth:`decide`.

    Args:
        cap: resource cap (SC samples; ToT beam width is capped by the log's width).
        detect_at: SC samples in the first wave / ToT steps before the decision.
    """

    name = "even"
    #: ``waves`` (the paper's two-wave run: detect-step samples, then the rest) or
    #: ``eager`` (all ``cap`` samples at once, the unneeded ones aborted after the detect
    #: step; SC programs only: :mod:`dynasim.workloads.program`). Set by
    #: :func:`~dynasim.policies.registry.make_intra`.
    dispatch = "waves"

    def __init__(self, cap: int = DEFAULT_CAP, detect_at: int = DEFAULT_DETECT_AT) -> None:
        if cap < 1 or detect_at < 1:
            raise ValueError("cap and detect_at must be >= 1")
        self.cap = cap
        self.detect_at = detect_at

    def first_wave(self, cap: int) -> int:
        """Samples issued at arrival."""
        return min(self.detect_at, cap)

    def decide(self, program: Program, done: Sequence[Call]) -> int:
        """Total SC samples after the detect step, given the ``done`` calls."""
        return self.cap

    def next_wave(self, program: Program, done: Sequence[Call], cap: int) -> int:
        """SC: samples to draw now, after a wave whose answered calls are ``done`` (0:
        stop). :class:`~dynasim.workloads.program.Program` asks after every wave and
        clips the total to ``cap`` (the policy cap, bounded by the recorded samples).

        The default is the two-wave run of App. D.2: after the first wave (the detect
        step) :meth:`decide` sets the total; after the second wave, stop.
        """
        drawn = len(program.issued)
        if drawn > min(self.first_wave(cap), cap):
            return 0
        return max(0, min(self.decide(program, done), cap) - drawn)

    def detect_at_step(self, steps: int) -> int | None:
        """ToT: the step index whose start is the detect step (None: never)."""
        return min(self.detect_at, steps - 1)

    def decide_width(self, program: Program, step: StepRun, cap: int) -> int:
        """ToT: beam width of the remaining steps, given the last step's run."""
        return cap

    def signals(self, program: Program, done: Sequence[Call]) -> dict[str, float]:
        """Certaindex signals at the detect step, recorded on the program."""
        sig = {}
        answers = [c.answer for c in done]
        if len(answers) >= 2 and any(c.answer is not None or c.correct is not None
                                     for c in done):
            sig["entropy"] = entropy_certaindex(answers, program.spec.equivalent)
        rewards = [c.reward for c in done if c.reward is not None]
        if rewards:
            sig["reward"] = reward_certaindex(rewards, "max")
        program.certaindex = sig
        return sig

    def __repr__(self) -> str:
        return f"{self.name}(cap={self.cap}, detect_at={self.detect_at})"

class BaselineEven(IntraPolicy):
    """Uniform cap: every program gets ``cap`` (App. G baseline)."""

    name = "even"

    def first_wave(self, cap: int) -> int:
        return cap

    def detect_at_step(self, steps: int) -> int | None:
        return None


class StaticThreshold(IntraPolicy):
    """Stop at the detect step when every signal passes its threshold (App. D.2).

    Args:
        thresholds: per signal, e.g. ``{"entropy": 0.7}`` (SC) or ``{"reward": 0.4}``.
    """

    name = "certaindex"

    #: Per signal, the hopeless side (:class:`TwoSided`); none here, so only certain
    #: programs stop.
    low_thresholds: dict[str, float] = {}

    def __init__(self, cap: int = DEFAULT_CAP, detect_at: int = DEFAULT_DETECT_AT,
                 thresholds: dict[str, float] | None = None) -> None:
        super().__init__(cap, detect_at)
        self.thresholds = thresholds if thresholds is not None else {"entropy":
                                                                     DEFAULT_THRESHOLD}

    def decide(self, program: Program, done: Sequence[Call]) -> int:
        sig = self.signals(program, done)
        needed = {k: v for k, v in self.thresholds.items() if k in sig}
        stop = (needed and is_certain(sig, needed)) or is_hopeless(sig, self.low_thresholds)
        return len(done) if stop else self.cap

    def decide_width(self, program: Program, step: StepRun, cap: int) -> int:
        r = step.reward_max
        program.certaindex = {"reward": r}
        t, low = self.thresholds.get("reward"), self.low_thresholds.get("reward")
        return 1 if (t is not None and r >= t) or (low is not None and r <= low) else cap

    def __repr__(self) -> str:
        return f"certaindex(cap={self.cap}, detect_at={self.detect_at}, {self.thresholds})"


class TwoSided(StaticThreshold):
    """Stop at the detect step when the program is certain *or* hopeless (the rule is
    :class:`StaticThreshold`'s, with low thresholds set).

    * certain: every thresholded signal reaches its threshold -- Dynasor's static rule
      (App. D.2), exactly as :class:`StaticThreshold`;
    * hopeless: some signal is at or below its *low* threshold
      (:func:`dynasim.certaindex.is_hopeless`). For self-consistency H̃ <= low means the
      detect-step answers are so scattered that further samples are unlikely to form a
      majority; for tree search (ToT) a best kept-branch reward R <= low means no branch
      is promising. This is the abstract's "terminates unpromising queries early"
      (Fu et al., arXiv 2412.20993); the paper publishes no low threshold, so it is
      calibrated (:func:`dynasim.experiments.calibration.calibrate_pair`).

    A stopped SC program keeps its detect-step samples (knob = detect step) and answers
    by their majority vote; a stopped ToT program continues with beam width 1 (the
    program model's narrowest beam: a tree search cannot drop its last branch).

    Args:
        cap: resource cap (SC samples / ToT beam width).
        detect_at: SC samples in the first wave / ToT steps before the decision.
        thresholds: per signal, the certain side (``{"entropy": 0.7}``, ``{"reward": 0.4}``).
        low_thresholds: per signal, the hopeless side, e.g. ``{"entropy": 0.2}``.

    Raises:
        InputError: a low threshold above the threshold of the same signal (field
            ``low_threshold``): the two sides would overlap and every program with a
            value in between would be both certain and hopeless.
    """

    name = "two-sided"

    def __init__(self, cap: int = DEFAULT_CAP, detect_at: int = DEFAULT_DETECT_AT,
                 thresholds: dict[str, float] | None = None,
                 low_thresholds: dict[str, float] | None = None) -> None:
        super().__init__(cap, detect_at, thresholds)
        self.low_thresholds = low_thresholds if low_thresholds is not None else {
            k: DEFAULT_LOW_THRESHOLD for k in self.thresholds}
        for k, low in self.low_thresholds.items():
            high = self.thresholds.get(k)
            if high is not None and low > high:
                raise InputError(f"low threshold {low} of {k} is above its threshold "
                                 f"{high}: need low <= high", field="low_threshold")

    def __repr__(self) -> str:
        return (f"two-sided(cap={self.cap}, detect_at={self.detect_at}, {self.thresholds}, "
                f"low {self.low_thresholds})")


class CurveFit(IntraPolicy):
    """Knob from a fitted curve of certaindex: ``detect + (cap − detect)(1 − h)^γ``."""

    name = "curve"

    def __init__(self, cap: int = DEFAULT_CAP, detect_at: int = DEFAULT_DETECT_AT,
                 gamma: float = 1.0) -> None:
        super().__init__(cap, detect_at)
        self.gamma = gamma

    def budget(self, h: float) -> int:
        """Samples for certaindex ``h`` in [0, 1] (rounded up)."""
        extra = (self.cap - self.detect_at) * (1.0 - h) ** self.gamma
        return self.detect_at + math.ceil(extra - 1e-9)

    def decide(self, program: Program, done: Sequence[Call]) -> int:
        sig = self.signals(program, done)
        return self.budget(sig["entropy"]) if "entropy" in sig else self.cap

    def decide_width(self, program: Program, step: StepRun, cap: int) -> int:
        program.certaindex = {"reward": step.reward_max}
        return max(1, math.ceil(cap * (1.0 - step.reward_max) ** self.gamma - 1e-9))


class BaselineLength(IntraPolicy):
    """Stop when the detect-step samples total at most ``max_tokens`` output tokens."""

    name = "length"

    def __init__(self, cap: int = DEFAULT_CAP, detect_at: int = DEFAULT_DETECT_AT,
                 max_tokens: int = 0) -> None:
        super().__init__(cap, detect_at)
        self.max_tokens = max_tokens

    def decide(self, program: Program, done: Sequence[Call]) -> int:
        return len(done) if sum(c.output_tokens for c in done) <= self.max_tokens \
            else self.cap

    def decide_width(self, program: Program, step: StepRun, cap: int) -> int:
        return cap


class _Sequential(IntraPolicy):
    """Base of the SC early-stopping baselines: several decision points (one after every
    wave), the cap until they stop (:meth:`Program.knob_allowed`), SC/CoT only.

    Tree search is refused (:class:`~dynasim.workloads.program.Program` raises
    :class:`~dynasim.errors.InputError`, field ``policy``): both baselines are defined
    on the answers of independent samples, and a ToT beam has no such answers.
    """

    sequential = True
    algorithms = ("sc", "cot")

    def decide(self, program: Program, done: Sequence[Call]) -> int:
        return len(done) + self.next_wave(program, done, self.cap)

    def detect_at_step(self, steps: int) -> int | None:
        return None


class ESC(_Sequential):
    """Early-stopping self-consistency (Li et al., ICLR 2024, "Escape Sky-high Cost",
    §3): draw samples in windows of ``w`` (= ``detect_at``); stop after the first window
    whose answers all agree (one cluster under the program's equivalence, no missing
    answer); otherwise draw the next window, up to the cap (the last window is cut
    short at the cap). The final answer is the majority vote over every sample drawn.

    Args:
        cap: most samples per program.
        detect_at: the window size ``w`` (samples).
    """

    name = "esc"

    def next_wave(self, program: Program, done: Sequence[Call], cap: int) -> int:
        issued = program.issued
        last = issued[len(issued) - ((len(issued) - 1) % self.detect_at + 1):]
        answered = {id(c) for c in done}
        answers = [c.answer for c in last if id(c) in answered]
        groups = clusters(answers, program.spec.equivalent)
        if len(answers) == len(last) and len(groups) == 1 and not is_missing(answers[0]):
            return 0
        return min(self.detect_at, max(0, cap - len(issued)))

    def __repr__(self) -> str:
        return f"esc(cap={self.cap}, window={self.detect_at})"


def majority_posterior(a: int, b: int) -> float:
    """P(p > 1/2) for p ~ Beta(a + 1, b + 1): Adaptive-Consistency's confidence that the
    leading answer (``a`` votes) beats the runner-up (``b`` votes) in the limit of
    infinite samples (Aggarwal et al., EMNLP 2023, §3, Beta stopping criterion).

    Exact closed form for integer counts (beta-binomial identity):
    ``P(Beta(a+1, b+1) > 1/2) = P(Binomial(a+b+1, 1/2) <= a)
    = sum_{k=0}^{a} C(a+b+1, k) / 2^(a+b+1)`` -- equal to
    ``scipy.stats.beta.sf(0.5, a + 1, b + 1)``.
    """
    n = a + b + 1
    return sum(math.comb(n, k) for k in range(a + 1)) / 2 ** n


class AdaptiveConsistency(_Sequential):
    """Adaptive-Consistency (Aggarwal et al., EMNLP 2023, §3): draw samples one at a
    time; after each, with ``a`` votes for the leading answer and ``b`` for the
    runner-up (clusters under the program's equivalence; missing answers never count),
    stop when :func:`majority_posterior` ``(a, b) >= confidence`` (their default 0.95),
    up to the cap. It never stops before 2 samples (the first wave is 2: a single vote
    is no majority).

    Args:
        cap: most samples per program.
        detect_at: unused (kept for a uniform signature).
        confidence: the stopping confidence ``c`` in (0, 1).

    Raises:
        InputError: ``confidence`` outside (0, 1) (field ``confidence``).
    """

    name = "adaptive-consistency"

    def __init__(self, cap: int = DEFAULT_CAP, detect_at: int = DEFAULT_DETECT_AT,
                 confidence: float = DEFAULT_CONFIDENCE) -> None:
        super().__init__(cap, detect_at)
        if not 0.0 < confidence < 1.0:
            raise InputError(f"confidence {confidence} must be in (0, 1)",
                             field="confidence")
        self.confidence = confidence

    def first_wave(self, cap: int) -> int:
        return min(2, cap)

    def next_wave(self, program: Program, done: Sequence[Call], cap: int) -> int:
        answers = [c.answer for c in done]
        sizes = sorted((len(g) for g in clusters(answers, program.spec.equivalent)
                        if not is_missing(answers[g[0]])), reverse=True) + [0, 0]
        if len(done) >= 2 and majority_posterior(sizes[0], sizes[1]) >= self.confidence:
            return 0
        return min(1, max(0, cap - len(program.issued)))

    def __repr__(self) -> str:
        return f"adaptive-consistency(cap={self.cap}, c={self.confidence})"
