"""Long chain of thought online: one logged trajectory as a program of requests.

A CoT program is one trajectory of ``governor_cot_probes`` (:mod:`dynasim.workloads.cot`):

* the **main request**: the problem's prompt (P tokens, shared by the samples of one
  problem), decoding the trajectory's logged length (L tokens). Its output is known in
  advance, so it carries an ``output_key`` and its generated blocks have identities in
  the prefix cache (vLLM caches full blocks of generated tokens too);
* under Dynasor-CoT (:class:`~dynasim.policies.dynasor_cot.DynasorCoT`), every T
  generated tokens a **probe request** whose prompt is the main prompt + the tokens
  generated so far + the probe text (so only the probe text misses the cache), decoding
  the logged probe's output length; its answer is the logged one. When the stop rule
  (:func:`dynasim.policies.cot.should_stop` over the probe answers received, in
  position order) fires, the program stops: its main request and any probe still in
  flight are aborted (``Engine.abort``, vLLM's ``abort_request``);
* under the token budget (:class:`~dynasim.policies.dynasor_cot.TokenBudget`), the main
  request decodes min(L, B) tokens, then a trajectory cut short is asked one probe at
  the last logged position <= B;
* under any other policy, the main request runs to its logged end.

The answer is the stopping probe's, the budget probe's, or the logged final answer; it
is graded with :func:`dynasim.certaindex.math_equal` against the target.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from dynasim.certaindex import math_equal
from dynasim.policies.cot import probe_answer, should_stop
from dynasim.workloads.call import Call

if TYPE_CHECKING:
    from dynasim.workloads.cot import CotTrajectory

#: Content key of the probe text appended to a probe's prompt.
PROBE_KEY = "dynasor-cot-probe"


def problem_key(t: CotTrajectory) -> str:
    """``model:dataset:problem_id``: the content key of a problem's prompt."""
    return f"{t.model}:{t.dataset}:{t.problem_id}"


class CotRun:
    """The state of one CoT program under its intra-program policy (module docstring).

    Driven by :class:`~dynasim.workloads.program.Program`: :meth:`first` at arrival,
    :meth:`watch`/:meth:`on_progress` while the main request decodes,
    :meth:`on_done` when a call finishes (returns the calls to abort), :meth:`next_wave`
    when none is left in flight.
    """

    def __init__(self, spec: object, intra: object) -> None:
        self.t: CotTrajectory = spec.trajectory  # type: ignore[attr-defined]
        name = getattr(intra, "name", "")
        self.mode = name if name in ("dynasor-cot", "budget") else "full"
        self.intra = intra
        self.gen_key = f"cot-gen:{problem_key(self.t)}#{self.t.seed}"
        length = self.t.tokens
        if self.mode == "budget":
            length = min(length, intra.tokens)  # type: ignore[attr-defined]
        base = spec.samples[0]  # type: ignore[attr-defined]
        self.main = Call(base.prompt, length, base.answer, base.correct)
        self._index = {p: i for i, p in enumerate(self.t.positions)}
        self._probe_pos: dict[int, int] = {}  # id(probe call) -> position
        self._answers: dict[int, str | None] = {}  # position -> rule answer, received
        self._in_flight: list[Call] = []
        self._main_done = False
        self._budget_probed = False
        self.answer: str | None = None
        self.decided = False
        self.stopped = False  # stopped before the logged end
        self.probes = 0

    # ---------------------------------------------------------------- calls
    def first(self) -> list[Call]:
        """The main request."""
        self._in_flight.append(self.main)
        return [self.main]

    def _probe(self, pos: int) -> Call:
        t, i = self.t, self._index[pos]
        text = max(1, t.probe_prompt_tokens[i] - t.prompt_tokens - pos)
        prompt = (*self.main.prompt, (self.gen_key, pos), (PROBE_KEY, text))
        answer = t.answers[i]
        call = Call(prompt, max(1, t.probe_tokens[i]), answer,
                    answer is not None and math_equal(answer, t.target))
        self._probe_pos[id(call)] = pos
        self._in_flight.append(call)
        self.probes += 1
        return call

    def watch(self, generated: int) -> int:
        """Main-request tokens generated at which the next probe is due (0: none)."""
        if self.mode != "dynasor-cot" or self.decided:
            return 0
        step = self.intra.probe_interval  # type: ignore[attr-defined]
        nxt = (generated // step + 1) * step
        while nxt < self.main.output_tokens:
            if nxt in self._index:
                return nxt
            nxt += step
        return 0

    def on_progress(self, call: Call, generated: int) -> list[Call]:
        """The probe due now that the main request has ``generated`` tokens."""
        if call is not self.main or self.decided or generated not in self._index:
            return []
        return [self._probe(generated)]

    def on_done(self, call: Call) -> list[Call]:
        """A call finished; returns the calls in flight to abort (the program decided)."""
        self._in_flight = [c for c in self._in_flight if c is not call]
        if self.decided:
            return []
        if call is self.main:
            self._main_done = True
            if self.main.output_tokens >= self.t.tokens:  # ran to its logged end
                self._decide(self.t.final_answer, stopped=False)
                return self._cancel_all()
            return []  # a budget cut: next_wave asks the probe
        pos = self._probe_pos[id(call)]
        i = self._index[pos]
        if self.mode == "budget":  # the forced answer of a cut trajectory
            self._decide(self.t.answers[i], stopped=True)
            return []
        self._answers[pos] = probe_answer(self.t.answers[i], self.t.hesitant[i])
        seq = [self._answers[p] for p in sorted(self._answers)]
        if should_stop(seq, self.intra.certainty_window,  # type: ignore[attr-defined]
                       self.intra.threshold):  # type: ignore[attr-defined]
            self._decide(seq[-1], stopped=True)
            return self._cancel_all()
        return []

    def next_wave(self) -> list[Call]:
        """After every call finished: the budget probe of a cut trajectory, else none."""
        if self.mode == "budget" and not self.decided and not self._budget_probed:
            self._budget_probed = True
            last = bisect.bisect_right(self.t.positions, self.main.output_tokens) - 1
            if last >= 0:
                return [self._probe(self.t.positions[last])]
            self._decide(None, stopped=True)
        if not self.decided:  # e.g. the main request was rejected
            self._decide(None, stopped=False)
        return []

    def _decide(self, answer: str | None, stopped: bool) -> None:
        self.decided, self.answer, self.stopped = True, answer, stopped

    def _cancel_all(self) -> list[Call]:
        out, self._in_flight = self._in_flight, []
        return out

    # --------------------------------------------------------------- result
    @property
    def correct(self) -> bool:
        """The program's answer graded against the target (``math_equal``)."""
        return self.answer is not None and math_equal(self.answer, self.t.target)
