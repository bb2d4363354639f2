"""Aborts of :class:`dynasim.engine.Engine` (a mixin it inherits; rules in the engine's
module docstring: *Abort*, *Client timeouts*): a caller's abort (a program stopped, a
stream closed) and a client timeout, both taking the request out of the queue at once
or out of the batch at the next step boundary.

Source: vLLM V1 ``Scheduler.finish_requests(..., RequestStatus.FINISHED_ABORTED)``,
called by ``EngineCore.abort_requests`` when the OpenAI server sees the client go.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy

from dynasim.request import ABORTED, RUNNING, WAITING

if TYPE_CHECKING:
    from dynasim.request import Request


class Aborts:
    """Abort bookkeeping of :class:`dynasim.engine.Engine`: it reads and writes the
    engine's ``waiting``, ``running``, ``prefilling``, ``_aborts``, ``_timed_out`` and
    counters, and calls its ``_cut_run``, ``_leave_decode`` and ``_release``."""

    def abort(self, req: Request) -> None:
        """Abort ``req`` (its client gave up: a program stopped, a stream closed).

        A waiting request leaves the queue now; a running one leaves at the next step
        boundary (vLLM aborts between engine steps; the step in flight completes, and
        if it samples the last token the request still ends aborted: the client has
        closed its stream). Either way its status becomes ``aborted``,
        ``error`` ``aborted``, ``finish_time`` the time it left, ``num_generated`` the
        tokens it had sampled,
        its seat and blocks are freed and ``policy.on_finish`` is called; the engine's
        ``on_finish`` callback is *not* called (the caller asked for the abort). A
        request that already finished, was rejected or aborted is left alone.

        Source: vLLM V1 ``Scheduler.finish_requests(..., RequestStatus.FINISHED_ABORTED)``
        (removes from ``waiting`` or ``running`` and frees its KV blocks).
        """
        if req.status == WAITING:
            self.waiting.remove(req)
            self._aborted(req)
            if self._leaping and len(self.waiting) and len(self.running) < self.max_num_seqs:
                self._cut_run()  # a new head of the queue may fit: end the run
        elif req.status == RUNNING and req not in self._aborts:
            self._aborts.append(req)
            if self._leaping:  # cut the decode run at the next step boundary
                self._cut_run()

    def _client_timeout(self, req: Request) -> Generator[simpy.Event, object, None]:
        """SimPy process: abort ``req`` ``timeout_s`` after its arrival (module
        docstring, client timeouts) unless it has left by then."""
        yield self.env.timeout(max(0.0, req.arrival_time + req.timeout_s - self.env.now))
        if req.status in (WAITING, RUNNING) and req not in self._aborts:
            self._timed_out.add(req)
            self.abort(req)

    def _apply_aborts(self) -> None:
        """Take aborted running requests out of the batch (at a step boundary)."""
        aborts, self._aborts = self._aborts, []
        for req in aborts:
            if req.status == WAITING:  # preempted since the abort was asked
                self.waiting.remove(req)
                self._aborted(req)
                continue
            if req.status != RUNNING:
                continue  # finished in the step that was in flight
            if req._decoding:
                self._leave_decode(req)
            else:
                self.prefilling.remove(req)
            del self.running[req]
            self._release(req)
            self._aborted(req)

    def _aborted(self, req: Request) -> None:
        req.status = ABORTED
        req.error = "aborted"
        req.finish_time = self.env.now
        self.num_aborted += 1
        self.policy.on_finish(req, self.env.now)
        if req in self._timed_out:  # the server saw the client go: report it
            self._timed_out.discard(req)
            req.error = f"client timeout ({req.timeout_s:g} s)"
            if self.on_finish is not None:
                self.on_finish(req)
