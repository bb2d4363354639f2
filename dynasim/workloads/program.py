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
  *Eager dispatch* (``IntraPolicy.dispatch == "eager"``, issue 18 of dynasim): the first
  wave is all ``cap`` samples; when the first ``detect_at`` of them have finished (in
  finish order) the policy decides the total n, and the unfinished samples beyond n
  (the last issued first) are cancelled (:meth:`Program.take_cancelled`): the driver
  aborts their requests (the engine's ``abort``, or closing the HTTP stream). No second
  wave, so no serialisation; the price is the partial samples aborted.
* ``tot`` -- tree search with a reward (Tree-of-Thoughts BFS): the knob is the beam width.
  Each step is a propose wave (one call per kept branch) then a value wave (the reward).
  At the detect step the reward certaindex R (max over kept branches, Rebase-like) sets
  the width of the remaining steps (:mod:`dynasim.workloads.tot`).
* ``cot`` -- chain of thought as one long sample. Without a logged trajectory (a
  per-sample CSV) it is one call run to its recorded length. With one
  (``ProgramSpec.trajectory``, the ``cot-*`` workloads) it is a main request plus, under
  Dynasor-CoT, probe requests issued as the main request reaches each probe position
  (:meth:`Program.watch`, :meth:`Program.on_call_progress`), the main request aborted
  when the probes agree (:mod:`dynasim.workloads.cot_run`).
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
        workload: the workload the program comes from (a mix serves several; "" when
            unnamed).
        trajectory: a ``cot`` program's logged chain of thought with its probes
            (:class:`~dynasim.workloads.cot.CotTrajectory`; run by
            :class:`~dynasim.workloads.cot_run.CotRun`), or ``None``.
    """

    question_id: str
    algorithm: str
    samples: tuple[Call, ...] = ()
    difficulty: int = 2
    tree: object | None = None
    equivalent: Equivalence = exact_match
    workload: str = ""
    trajectory: object | None = None

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
        aborted: calls cancelled by eager dispatch after the detect step (they never
            vote; their partial tokens are the requests' ``num_generated``).
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
    aborted: list[Call] = field(default_factory=list)
    _cancel: list[Call] = field(default_factory=list)  # to abort, not yet taken
    _cot: object | None = None  # CotRun of a program with a logged trajectory
    _eager_pending: bool = False  # eager: the detect step has not decided yet
    _stage: int = 0  # SC: waves issued so far; ToT: 2 x steps issued (+1 mid-step)
    _stopped: bool = False  # SC: the policy issued no more samples after a wave
    _tree_widths: list[int] = field(default_factory=list)
    _tree_run: object | None = None  # the search at the current widths (cached)

    # ------------------------------------------------------------- driving
    def start(self) -> list[Call]:
        """The first wave of calls (issued together at arrival).

        Raises:
            InputError: the intra-program policy does not serve this program's algorithm
                (field ``policy``; e.g. an SC early-stopping baseline on a ToT search),
                or eager dispatch of a non-SC program (field ``dispatch``).
        """
        if getattr(self.intra, "dispatch", "waves") == "eager" and self.spec.algorithm != "sc":
            raise InputError(f"eager dispatch serves sc programs only; program "
                             f"{self.spec.question_id} is {self.spec.algorithm}",
                             field="dispatch")
        allowed = getattr(self.intra, "algorithms", ALGORITHMS)
        if self.spec.algorithm not in allowed:
            raise InputError(f"intra-program policy {getattr(self.intra, 'name', '?')} "
                             f"serves {'/'.join(allowed)} programs only; program "
                             f"{self.spec.question_id} is {self.spec.algorithm}",
                             field="policy")
        if self.spec.trajectory is not None:
            from dynasim.workloads.cot_run import CotRun

            self._cot = CotRun(self.spec, self.intra)
            self.knob = 1
            return self._issue(self._cot.first())
        return self._issue(self._next_wave())

    def spec_main(self) -> Call | None:
        """A CoT program's main call (its chain of thought), else ``None``."""
        return None if self._cot is None else self._cot.main  # type: ignore[attr-defined]

    def watch(self, call: Call, generated: int) -> int:
        """Tokens ``call``'s request must have generated before the driver calls
        :meth:`on_call_progress` (0: never): a CoT program's next probe position."""
        if self._cot is None or call is not self._cot.main:
            return 0
        return self._cot.watch(generated)

    def on_call_progress(self, call: Call, generated: int) -> list[Call]:
        """``call``'s request has generated ``generated`` tokens (its watch): the calls
        to issue now (a Dynasor-CoT probe), already counted as issued."""
        if self._cot is None:
            return []
        return self._issue(self._cot.on_progress(call, generated))

    def on_call_done(self, call: Call) -> None:
        """Record a finished call (its answer and output tokens count towards the
        program). A call eager dispatch cancelled is ignored (it finished before its
        abort reached the server; offline runs finish every call of a wave)."""
        if (self._cancel or self.aborted) and any(
                call is c for c in (*self._cancel, *self.aborted)):
            return
        self.calls_done += 1
        self.output_tokens_done += call.output_tokens
        self.answered.append(call)
        if self._cot is not None:
            self._cancel += self._cot.on_done(call)  # type: ignore[attr-defined]
        if self._eager_pending and len(self.answered) >= self._eager_detect():
            self._eager_decide()

    def take_cancelled(self) -> list[Call]:
        """Calls the program no longer needs (eager dispatch decided to stop or shrink):
        the driver aborts each one's request and reports it with
        :meth:`on_call_aborted`. Returns them once, in issue order; ``[]`` otherwise."""
        out, self._cancel = self._cancel, []
        return out

    def on_call_aborted(self, call: Call, generated: int = 0) -> None:
        """Record a call whose request was aborted after ``generated`` tokens (it never
        votes nor counts as a sample used). A CoT program's main request counts its
        generated tokens: they are the chain of thought its answer came from."""
        self.aborted.append(call)
        if self._cot is not None and call is self._cot.main:  # type: ignore[attr-defined]
            self.output_tokens_done += generated

    def _eager_detect(self) -> int:
        return min(self.intra.detect_at, len(self.issued))  # type: ignore[attr-defined]

    def _eager_decide(self) -> None:
        """The detect step of eager dispatch: the policy's total n over the first
        finished samples; the unfinished calls beyond n are cancelled, the last issued
        first kept out (the earliest issued have run longest)."""
        self._eager_pending = False
        done = list(self.answered)
        n = self.intra.decide(self, done)  # type: ignore[attr-defined]
        n = max(len(done), min(n, len(self.issued)))
        self.knob = n
        finished = {id(c) for c in done}
        waiting = [c for c in self.issued if id(c) not in finished]
        self._cancel = waiting[n - len(done):]

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
        if self._cot is not None:
            return self._cot.next_wave()  # type: ignore[attr-defined]
        if self.spec.algorithm == "cot":
            if self._stage == 0:
                self._stage, self.knob = 1, 1
                return [samples[0]]
            return []
        cap = min(intra.cap, len(samples))  # type: ignore[attr-defined]
        if self._stage == 0:
            self._stage = 1
            first = min(intra.first_wave(cap), cap)  # type: ignore[attr-defined]
            if getattr(intra, "dispatch", "waves") == "eager" and first < cap:
                first, self._stopped, self._eager_pending = cap, True, True
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
        if self._cot is not None:
            return self._cot.answer, self._cot.correct  # type: ignore[attr-defined]
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
