"""How the replay harness drives reasoning programs (a mixin of
:class:`replay.dispatcher.Replay`): waves of calls as requests, the samples eager
dispatch no longer needs aborted (streams closed), a long chain of thought's probes sent
as it streams, and whole programs cancelled on demand. The state machines are the
simulator's own (:class:`dynasim.workloads.program.Program`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from dynasim.request import Request
from replay.client import Outcome

if TYPE_CHECKING:
    from dynasim.workloads.call import Call
    from dynasim.workloads.program import Program


class ProgramDriver:
    """The program half of :class:`replay.dispatcher.Replay`: it reads and writes the
    replay's attributes and calls its ``_arrive``, ``_record``, ``_finished`` and
    ``clock``."""

    def _chain_progress(self, req: Request, n: int, out: Outcome) -> None:
        """A long chain of thought (a ``cot-*`` program's main request) has streamed
        ``n`` tokens: send the probes due (Dynasor-CoT), each prompted with the main
        prompt + the token ids generated up to its position + the probe text, so vLLM's
        prefix cache holds all but the probe text (``return_token_ids`` gives the ids;
        without them the generated part is a stand-in of the same length)."""
        owner = self._owner.get(req)
        if owner is None:
            return
        prog, call = owner
        while req.watch and n >= req.watch:
            pos = req.watch
            probes = prog.on_call_progress(call, pos)
            req.watch = prog.watch(call, pos)
            main_ids = self._chain_ids.get(req, [])
            gen = out.token_ids[:pos] if len(out.token_ids) >= pos else \
                self.prompts.build(((f"cot-gen:{req.request_id}", pos),))
            for probe in probes:
                text = probe.prompt[-1]
                preq = Request(next(self._ids), self.clock(), probe.prompt_tokens,
                               probe.output_tokens, program_id=prog.program_id,
                               prompt=probe.prompt)
                self._ids_prompt[preq] = [*main_ids, *gen, *self.prompts.build((text,))]
                self._owner[preq] = (prog, probe)
                self._outstanding[prog.program_id] += 1
                self._arrive(preq, self.clock())

    def _start_wave(self, prog: Program, wave: list[Call]) -> None:
        now = self.clock()
        if prog.program_id in self._cancelled and wave:
            prog.finish_time = now  # a cancelled program issues no further wave
            wave = []
        if not wave:
            self.policy.on_program_finish(prog, now)
            self.programs_done += 1
            from dynasim.data_record import programs_frame

            self.journal.add_program(programs_frame([prog]).iloc[0].to_dict())
            return
        self._outstanding[prog.program_id] = len(wave)
        for call in wave:
            req = Request(next(self._ids), now, call.prompt_tokens, call.output_tokens,
                          program_id=prog.program_id, prompt=call.prompt)
            req.watch = prog.watch(call, 0)  # a chain of thought's first probe
            self._owner[req] = (prog, call)
            self._arrive(req, now)

    def _abort_calls(self, prog: Program, calls: list[Call]) -> None:
        """Eager dispatch stopped (or shrank) ``prog``: abort the requests of ``calls``
        -- a queued one is dropped unsent, an in-flight one has its stream closed,
        which makes vLLM abort it (``AsyncLLM.abort`` on disconnect). Both are recorded
        with error ``aborted``, as the simulator's ``Engine.abort``."""
        if not calls:
            return
        ids = {id(c) for c in calls}
        mine = [r for r, (p, c) in self._owner.items() if p is prog and id(c) in ids]
        for req in mine:
            self._aborting.add(req)
            if req in self.in_flight:
                self.in_flight[req].cancel()
            elif req in self._due:  # queued client-side, never sent
                self.queue.remove(req)
                scheduled, queued_at = self._due.pop(req)
                out = Outcome(error="aborted")
                self._record(req, out, scheduled, queued_at, queued_at, None)
                self._finished(req, out)

    def cancel_program(self, program_id: int) -> int:
        """Abort every queued and in-flight request of a program (in-flight ones end
        with error ``cancelled``; vLLM aborts a request whose stream is closed).
        Returns how many requests were cancelled."""
        n = 0
        self._cancelled.add(program_id)
        for req in [r for r in self.queue if r.program_id == program_id]:
            self.queue.remove(req)
            scheduled, queued_at = self._due.pop(req, (math.nan, math.nan))
            out = Outcome(error="cancelled before send")
            self._record(req, out, scheduled, queued_at, queued_at, None)
            self._finished(req, out)
            n += 1
        for req, task in list(self.in_flight.items()):
            if req.program_id == program_id:
                task.cancel()
                n += 1
        return n
