"""Reasoning programs: one query served by an algorithm that issues requests in steps.

A :class:`ProgramSpec` is what the trace recorded for one query (its samples, or its
search tree); a :class:`Program` is one run of it under an intra-program policy
(:mod:`dynasim.policies.intra_program`), a plain state machine that both the simulator and the
replay harness drive:

    waves = program.start()           # first wave of Calls, issued together
    ...each Call finishes...
    more = program.on_wave_done(now)  # next wave, or [] when the program is done

Algorithms (Dynasor §2, table in ``docs/dynasor.md``):

* ``sc`` -- self-consistency. The knob is the number of samples n; all samples share the
  prompt. Wave 1 is the first ``detect_at`` samples (the whole cap for baseline-even);
  at the detect step the intra-program policy measures certaindex and sets the total n;
  wave 2 is the rest. In general the policy is asked after every wave how many more
  samples to draw (``IntraPolicy.next_wave``; 0 stops): the early-stopping baselines
  ESC and Adaptive-Consistency draw window after window, or sample after sample. The
  samples used are always the first drawn (a seed shuffles the draw order,
  :func:`shuffled`). Final answer: :func:`~dynasim.certaindex.majority_vote`.
* ``tot`` -- tree search with a reward (Tree-of-Thoughts BFS): the knob is the beam width.
  Each step is a propose wave (one call per kept branch) then a value wave (the reward).
  At the detect step the reward certaindex R (max over kept branches, Rebase-like) sets
  the width of the remaining steps (:mod:`dynasim.workloads.tot`).
* ``cot`` -- chain of thought as one long sample: one call; the trace holds no
  intermediate answers, so no policy can stop it early (Dynasor-CoT probing needs the
  live text: see the proxy), and it runs to its recorded length.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from dynasim.certaindex import Equivalence, exact_match, majority_vote
from dynasim.errors import InputError
from dynasim.workloads.call import Call

ALGORITHMS = ("sc", "tot", "cot")


@dataclass(frozen=True)
class ProgramSpec:
    """One query of a workload, as recorded.

    Attributes:
        question_id: the query's id in its dataset.
        algorithm: ``sc``, ``tot`` or ``cot``.
        samples: SC/CoT calls in draw order (each with answer and correctness).
        difficulty: 1 all recorded samples correct, 2 mixed, 3 all wrong (§4).
        tree: the :class:`~dynasim.workloads.tot.TreeSpec` of a ``tot`` program.
        equivalent: the answer equivalence for clustering and voting.
    """

    question_id: str
    algorithm: str
    samples: tuple[Call, ...] = ()
    difficulty: int = 2
    tree: object | None = None
    equivalent: Equivalence = exact_match

    @property
    def max_knob(self) -> int:
        """Largest knob value the trace supports (samples, or the logged beam width)."""
        if self.algorithm == "tot":
            return self.tree.max_width  # type: ignore[union-attr]
        return len(self.samples)


def difficulty_of(correct: list[bool]) -> int:
    """Difficulty factor from per-question correctness over all recorded samples
    (Dynasor §4: always correct 1, mixed 2, always wrong 3)."""
    if all(correct):
        return 1
    if not any(correct):
        return 3
    return 2


def shuffled(spec: ProgramSpec, rng: random.Random) -> ProgramSpec:
    """The same program with its samples in a random draw order (SC/CoT only).

    A policy that stops early keeps the samples drawn first, so averaging over seeds
    averages over draw orders (issue 3 of dynasim; Dynasor App. G batch protocol)."""
    if spec.algorithm != "sc":
        return spec
    s = list(spec.samples)
    rng.shuffle(s)
    return replace(spec, samples=tuple(s))


def program_rng(seed: int, question_id: str) -> random.Random:
    """The draw-order RNG of one program under ``seed`` (independent of program order)."""
    return random.Random(f"{seed}:{question_id}")


@dataclass
class Program:
    """One run of a :class:`ProgramSpec` under an intra-program policy.

    Attributes:
        program_id: unique id in the run.
        spec: the recorded program.
        intra: the intra-program policy (:class:`~dynasim.policies.intra_program.IntraPolicy`).
        arrival_time: seconds.
        deadline: seconds after arrival (``inf`` when no SLO).
        knob: the knob value the policy settled on (SC samples, ToT width).
        certaindex: the signal values measured at the detect step.
        issued: calls issued so far, in order.
        answered: the issued calls that finished (:meth:`on_call_done`), in finish
            order. A call rejected by the server (``max_model_len``, HTTP 400) or failed
            produces no answer and no tokens: it never votes, never enters certaindex
            and is not a sample used; ``output_tokens_done`` counts answered calls only.
        error: why the last rejected call was rejected ("" if none was).
    """

    program_id: int
    spec: ProgramSpec
    intra: object
    arrival_time: float = 0.0
    deadline: float = float("inf")
    knob: int = 0
    certaindex: dict[str, float] = field(default_factory=dict)
    issued: list[Call] = field(default_factory=list)
    answered: list[Call] = field(default_factory=list)
    finish_time: float | None = None
    output_tokens_done: int = 0
    calls_done: int = 0
    error: str = ""
    _stage: int = 0  # SC: waves issued so far; ToT: 2 x steps issued (+1 mid-step)
    _stopped: bool = False  # SC: the policy issued no more samples after a wave
    _tree_widths: list[int] = field(default_factory=list)
    _tree_run: object | None = None  # the search at the current widths (cached)

    # ------------------------------------------------------------- driving
    def start(self) -> list[Call]:
        """The first wave of calls (issued together at arrival).

        Raises:
            InputError: the intra-program policy does not serve this program's algorithm
                (field ``policy``; e.g. an SC early-stopping baseline on a ToT search).
        """
        allowed = getattr(self.intra, "algorithms", ALGORITHMS)
        if self.spec.algorithm not in allowed:
            raise InputError(f"intra-program policy {getattr(self.intra, 'name', '?')} "
                             f"serves {'/'.join(allowed)} programs only; program "
                             f"{self.spec.question_id} is {self.spec.algorithm}",
                             field="policy")
        return self._issue(self._next_wave())

    def on_call_done(self, call: Call) -> None:
        """Record a finished call (its answer and output tokens count towards the
        program)."""
        self.calls_done += 1
        self.output_tokens_done += call.output_tokens
        self.answered.append(call)

    def on_call_rejected(self, call: Call, error: str) -> None:
        """Record a call the server rejected (or that failed): it has no answer and no
        tokens, so it is left out of votes, certaindex and ``samples_used``."""
        self.error = error

    def on_wave_done(self, now: float) -> list[Call]:
        """The next wave after every issued call finished; ``[]`` ends the program
        (``finish_time`` is set to ``now``, seconds)."""
        wave = self._next_wave()
        if not wave:
            self.finish_time = now
        return self._issue(wave)

    def _issue(self, wave: list[Call]) -> list[Call]:
        self.issued.extend(wave)
        return wave

    # -------------------------------------------------------- algorithms
    def _next_wave(self) -> list[Call]:
        if self.spec.algorithm == "tot":
            return self._next_tree_wave()
        samples, intra = self.spec.samples, self.intra
        if self.spec.algorithm == "cot":
            if self._stage == 0:
                self._stage, self.knob = 1, 1
                return [samples[0]]
            return []
        cap = min(intra.cap, len(samples))  # type: ignore[attr-defined]
        if self._stage == 0:
            self._stage = 1
            first = min(intra.first_wave(cap), cap)  # type: ignore[attr-defined]
            self.knob = first
            return list(samples[:first])
        if self._stopped:
            return []
        # after each wave the policy says how many more samples to draw now (0: stop);
        # the default asks decide() once, after the first wave (the two-wave SC run)
        drawn = len(self.issued)
        more = intra.next_wave(self, self.answered, cap)  # type: ignore[attr-defined]
        self._stage += 1
        n = max(drawn, min(drawn + more, cap))
        self.knob = n
        self._stopped = n == drawn
        return list(samples[drawn:n])

    def _next_tree_wave(self) -> list[Call]:
        tree, intra = self.spec.tree, self.intra
        cap = min(intra.cap, tree.max_width)  # type: ignore[union-attr, attr-defined]
        steps = tree.num_steps  # type: ignore[union-attr]
        if not self._tree_widths:
            self._tree_widths = [cap] * steps
            self._tree_run = None
            self.knob = cap
        k, half = divmod(self._stage, 2)
        if k >= steps:
            return []
        self._stage += 1
        if half == 1:
            return list(self._replay().steps[k].value)
        if k > 0 and k == intra.detect_at_step(steps):  # type: ignore[attr-defined]
            # detect step: the value wave of step k-1 is done; R sets the beam width
            last = self._replay().steps[k - 1]
            width = intra.decide_width(self, last, cap)  # type: ignore[attr-defined]
            self._tree_widths = [cap] * k + [max(1, min(width, cap))] * (steps - k)
            self._tree_run = None
            self.knob = self._tree_widths[-1]
        return list(self._replay().steps[k].propose)

    def _replay(self):
        """The ToT search replayed at the current beam widths, recomputed only after the
        widths change (:meth:`dynasim.workloads.tot.TreeSpec.run`)."""
        if self._tree_run is None:
            self._tree_run = self.spec.tree.run(self._tree_widths)  # type: ignore
        return self._tree_run

    # ------------------------------------------------------------ results
    def result(self) -> tuple[str | None, bool]:
        """(answer, correct) of the finished program: SC votes over the answered calls
        only; a ToT search or a CoT sample with a rejected call has no answer
        (``(None, False)``): the recorded search needs every call's output."""
        used = self.answered
        if self.spec.algorithm != "sc" and len(used) < len(self.issued):
            return None, False
        if self.spec.algorithm == "tot":
            run = self._replay()
            return run.answer, bool(run.correct)
        if self.spec.algorithm == "cot":
            return used[0].answer, bool(used[0].correct)
        return majority_vote([c.answer for c in used], [c.correct for c in used],
                             self.spec.equivalent)

    def knob_allowed(self) -> int:
        """Calls this program may still have issued in total: the cap until the detect
        step decided, the decided knob after (SJF's remaining-knob estimate, App. D.3).
        ToT counts the calls issued plus one propose call per beam branch left."""
        if self.spec.algorithm == "cot":
            return 1
        if self.spec.algorithm == "tot":
            steps_left = max(0, self.spec.tree.num_steps - (self._stage + 1) // 2)
            width = self.knob or min(self.intra.cap, self.spec.tree.max_width)
            return len(self.issued) + width * steps_left
        if self._stopped or (self._stage >= 2
                             and not getattr(self.intra, "sequential", False)):
            return self.knob
        return max(self.knob, min(self.intra.cap, len(self.spec.samples)))

    @property
    def samples_used(self) -> int:
        """SC: samples answered; ToT: calls answered; CoT: 1 (0 if rejected). A rejected
        call is not a sample used."""
        return len(self.answered)
