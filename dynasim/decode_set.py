"""The decoding requests as aggregates, and runs of decode steps in one SimPy timeout:
the half of :class:`dynasim.engine.Engine` that makes it fast (a mixin it inherits).

A pure decode step changes nothing but counters, so the engine keeps the decoding
requests as aggregates: their count, the sum of their contexts (``_ctx_base`` + count ×
``clock``), how many need a new KV block at each step phase (``_phase``), and heaps of
the decode steps at which each finishes (``_finish_heap``) or reaches its ``watch``
(``_watch_heap``), so that :meth:`DecodeSet._decode_run` advances a whole run of steps up
to the next finish, watch or KV exhaustion in one timeout, with no Python work per token.
An arrival or abort that may change the batch interrupts the run at the next step
boundary (:func:`_steps_covering`); a run that the next arrival (``next_arrival``, told by
:func:`dynasim.simulation.start_arrivals`) will cut waits for it on an event instead.
:meth:`DecodeSet.used_blocks_now` counts the blocks of the run's steps completed so far.
Under :func:`dynasim.simulation.simulate` (one engine or a fleet) a run may also look
ahead past finishes while nothing can reach the engine (``Engine.lookahead``,
``quiet_until``): several runs and their finishes in one SimPy event. Everything here is
exactly equal to taking one step per timeout (``Engine.max_decode_run = 1``; the tests
compare the two, and the fast paths bit for bit against the plain ones).
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING

import simpy

if TYPE_CHECKING:
    from dynasim.request import Request

#: Seconds within which an arrival (or abort) after the start of a decode run counts as
#: coming at its start: the run's end is a closed-form sum whose float rounding differs
#: from step-by-step sums by ~1e-16 s, so an arrival exactly on a step boundary must not
#: depend on which side the rounding falls.
TIE_S = 1e-9


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class DecodeSet:
    """Decode-set bookkeeping and decode runs of :class:`dynasim.engine.Engine` (module
    docstring); it reads and writes the engine's attributes and calls its ``_alloc``,
    ``_free``, ``_finish`` and ``_release_lingering``."""

    def sum_decode_ctx(self) -> int:
        """Sum over decoding requests of (computed tokens + 1), at the current clock."""
        return self._ctx_base + self.num_decoding * self.clock

    def sync(self, req: Request) -> None:
        """Bring a decoding request's ``num_computed``/``num_generated``/``num_blocks``
        (private blocks: all but the ``_shared`` cached ones) up to the current clock
        (they are kept as aggregates while decoding)."""
        if req._decoding:
            d = self.clock - req._clock0
            req.num_computed += d
            req.num_generated += d
            req._clock0 = self.clock
            req.num_blocks = _cdiv(req.num_computed, self.block_size) - req._shared

    def _join_decode(self, req: Request) -> None:
        req._decoding = True
        req._clock0 = self.clock
        self.num_decoding += 1
        self._ctx_base += req.num_computed + 1 - self.clock
        self._phase[(self.clock - req.num_computed) % self.block_size] += 1
        finish_at = self.clock + req.output_tokens - req.num_generated
        self._seq += 1
        heapq.heappush(self._finish_heap, (finish_at, self._seq, req._epoch, req))
        self._push_watch(req)

    def _push_watch(self, req: Request) -> None:
        if req.num_generated < req.watch < req.output_tokens and self.on_progress:
            heapq.heappush(self._watch_heap, (self.clock + req.watch - req.num_generated,
                                              self._seq, req._epoch, req))

    def _collect_watches(self) -> None:
        """Call ``on_progress`` for the decoding requests that reached their watch, except
        those whose abort is pending (their client has gone; vLLM streams nothing to an
        aborted request)."""
        heap = self._watch_heap
        while heap and heap[0][0] <= self.clock:
            _, _, epoch, req = heapq.heappop(heap)
            if epoch != req._epoch or not req._decoding or req in self._aborts:  # type: ignore[attr-defined]
                continue
            self.sync(req)
            if req.num_generated == req.watch:
                self.on_progress(req)  # type: ignore[misc]
                self._seq += 1
                self._push_watch(req)

    def _leave_decode(self, req: Request) -> None:
        self.sync(req)
        req._decoding = False
        req._epoch += 1
        self.num_decoding -= 1
        self._ctx_base -= req.num_computed + 1 - self.clock
        self._phase[(self.clock - req.num_computed) % self.block_size] -= 1

    def _blocks_due(self, k: int) -> int:
        """New blocks the decoding requests need over the next ``k`` steps."""
        bs = self.block_size
        full, rest = divmod(k, bs)
        due = full * self.num_decoding
        if rest:  # the phases of the next ``rest`` steps, a slice (wrapping around)
            phase, c = self._phase, self.clock % bs
            end = c + rest
            due += sum(phase[c:end]) if end <= bs else sum(phase[c:]) + sum(phase[:end - bs])
        return due

    def used_blocks_now(self) -> int:
        """KV blocks referenced by requests at the current simulated time, exactly as a
        step-by-step engine has them (``max_decode_run = 1``): during a run of decode
        steps taken in one timeout, :meth:`~dynasim.engine.Engine.used_blocks` is as of
        the run's start; this adds the new blocks of the run's steps completed by now
        (a step's blocks are taken when it completes; a time within :data:`TIE_S` of a
        step boundary counts as before it, as an arrival there is scheduled with the
        step that starts at it). Read by the ``least-kv`` router
        (:class:`dynasim.cluster.EngineView`)."""
        used = self.total_blocks - self._free()
        run = self._run
        if run is None:
            return used
        start, alpha, beta, k = run
        elapsed = self.env.now - start
        if elapsed < TIE_S:
            return used
        done = _steps_covering(alpha, beta, elapsed - TIE_S, k) - 1
        return used + self._blocks_due(done) if done > 0 else used

    def _steps_fitting(self, free: int) -> int:
        """Largest number of decode steps whose new blocks fit in ``free`` blocks."""
        n, bs = self.num_decoding, self.block_size
        full = free // n
        k, used = full * bs, full * n
        while used + self._phase[(self.clock + k) % bs] <= free:
            used += self._phase[(self.clock + k) % bs]
            k += 1
        return k

    def _advance_decode(self, k: int, due: int | None = None) -> None:
        """Take ``k`` decode steps' new blocks (``due``: :meth:`_blocks_due` of ``k``
        when the caller has it) and move the clock."""
        self._alloc(self._blocks_due(k) if due is None else due)
        self.clock += k

    def _async_piece(self, n: int, s0: int, k: int) -> tuple[float, float, int]:
        """``(alpha, beta, k)`` of a decode run under async scheduling: each step takes
        ``max(GPU, CPU)``, affine only on one side of where the growing GPU time
        crosses the (constant) CPU time, so the run stops at the crossing."""
        g0, cpu = self.model.split([], n, s0)
        g1, _ = self.model.split([], n, s0 + n)
        return _max_piece(g0, g1 - g0, cpu, k)

    def _collect_finished(self) -> None:
        heap = self._finish_heap
        while heap and heap[0][0] <= self.clock:
            _, _, epoch, req = heapq.heappop(heap)
            if epoch == req._epoch:
                self._leave_decode(req)
                self._finish(req)

    def _plan_run(self, start: float) -> tuple[int, float, float, float, int | None, bool]:
        """The next run of decode steps from ``start`` (seconds) and the engine's state:
        ``(steps, alpha, beta, seconds, due, at_finish)``: step ``i`` takes ``alpha +
        beta*i`` s; ``due`` is :meth:`_blocks_due` of ``steps`` (None where not computed);
        ``at_finish``: the run ends exactly at the next finish (nothing else cut it)."""
        heap = self._finish_heap
        while heap[0][2] != heap[0][3]._epoch:
            heapq.heappop(heap)
        k = to_finish = heap[0][0] - self.clock
        watches = self._watch_heap
        while watches and watches[0][2] != watches[0][3]._epoch:
            heapq.heappop(watches)
        if watches:  # stop where a request reaches its watch
            k = max(1, min(k, watches[0][0] - self.clock))
        if self._preempted or self._late_release:
            k = 1  # the victim or a waiting request may be admitted at the next boundary
        if self.max_decode_run is not None:
            k = min(k, self.max_decode_run)
        n = self.num_decoding
        free = self._free()
        due = self._blocks_due(k)
        if due > free:  # largest k whose new blocks fit
            k = self._steps_fitting(free)
            due = self._blocks_due(k)
        due_k = k
        if self._cache_orders and self.cache is not None:
            # LPM re-matches every step: stop after the first step that evicts
            k = min(k, self._steps_fitting(self.free_blocks) + 1)
        s0 = self._ctx_base + n * self.clock  # sum_decode_ctx()
        if self.async_scheduling:
            alpha, beta, k = self._async_piece(n, s0, k)
        else:
            alpha = self.model.step_time([], n, s0)
            beta = self.model.step_time([], n, s0 + n) - alpha
        total = k * alpha + beta * k * (k - 1) / 2
        change = None if self._order_changes_at is None else self._order_changes_at(start)
        if change is not None and start + total > change:
            # the order may change with time alone: stop at the first step boundary
            # at or after that time (where a step-by-step engine would see it)
            k = _steps_covering(alpha, beta, change - start, k)
            total = k * alpha + beta * k * (k - 1) / 2
        return k, alpha, beta, total, due if k == due_k else None, k == to_finish

    def _at(self, t: float) -> simpy.Event:
        """An event at exactly the instant ``t`` (seconds, >= now), as a timeout started
        at an earlier step boundary would have it (``boundary + seconds`` in floats)."""
        env = self.env
        now = env.now
        delay = t - now
        while now + delay < t:
            delay = math.nextafter(delay, math.inf)
        while delay > 0 and now + delay > t:
            delay = math.nextafter(delay, 0.0)
        if now + delay < t:  # no float lands exactly on t: the next one after it,
            delay = math.nextafter(delay, math.inf)  # never before (a step never ends early)
        ev = simpy.Event(env)
        ev._ok, ev._value = True, None
        env.schedule(ev, delay=delay)
        return ev

    def _decode_run(self):
        """Advance up to the next finish or KV exhaustion in one timeout (see module
        docstring); an admissible arrival interrupts at the next step boundary. After a
        preemption only one step is taken, since the victim may be readmitted then;
        otherwise a waiting group that could not be admitted at the start of the run
        cannot be admitted during it (seats and budget are unchanged, free blocks only
        shrink, a head's need never shrinks as its cached blocks are evicted) as long
        as the queue's head stays the same: the run therefore also ends at the first
        step boundary at or after ``policy.order_changes_at(now)`` (SJF aging) and, when
        the order reads the prefix cache (LPM), after the first step that evicts.

        Looking ahead (``_ahead``: :func:`~dynasim.simulation.simulate`, whose finishes
        nobody watches but the record list and, in a fleet, a router that looks only at
        arrivals): while the queue is empty and no request reaches the engine before
        the end of a run that ends at a finish (``quiet_until``), that run and its
        finishes are taken now (finish times and cache releases at the run's end,
        ``_now_at``) and the next run planned from its end, as the engine loop would
        schedule it there (an empty queue admits nothing: the step is decode only);
        one SimPy event then covers several finishes."""
        env = self.env
        start = env.now
        while True:
            k, alpha, beta, total, due, at_finish = self._plan_run(start)
            end = start + total
            if not (self._ahead and at_finish and self.quiet_until > end
                    and not len(self.waiting) and len(self.running) == self.num_decoding):
                break
            self.num_steps += k
            self._advance_decode(k, due)
            self._now_at = end
            before = len(self.running)
            self._collect_finished()
            self.num_finished_ahead += before - len(self.running)
            self._now_at = None
            if not self.num_decoding or self._due_blocks() > self._free():
                yield self._at(end)  # idle, or the next step preempts: the loop's turn
                return
            start = end
        self._leaping = True
        self._run = (start, alpha, beta, k)
        planned = k
        nxt = self.next_arrival
        if (nxt is not None and nxt[0] < end
                and len(self.running) < self.max_num_seqs and self._admissible(nxt[1])):
            # the next arrival, already scheduled, will cut this run: wait for it
            # instead of a timeout it would interrupt (the same instants, fewer events)
            self._wake = simpy.Event(env)
            yield self._wake
            cut = True
        else:
            try:
                yield env.timeout(total) if start == env.now else self._at(end)
                self._leaping = False
                cut = False
            except simpy.Interrupt:
                cut = True
        if cut:
            elapsed = env.now - start
            if elapsed < TIE_S:  # it came at the run's start: schedule again with it
                self._run = None
                return  # (the same tie resolved the same way step by step)
            j = _steps_covering(alpha, beta, elapsed - TIE_S, k)  # a boundary tie: at it
            rest = j * alpha + beta * j * (j - 1) / 2 - elapsed
            self._run = (start, alpha, beta, j)
            yield env.timeout(max(rest, 0.0))
            k = j
        self._run = None
        self.num_steps += k
        self._advance_decode(k, due if k == planned else None)
        if self._watch_heap:
            self._collect_watches()
        heap = self._finish_heap
        if heap and heap[0][0] <= self.clock:
            self._collect_finished()


def _max_piece(a: float, b: float, c: float, k: int) -> tuple[float, float, int]:
    """Steps ``i = 0..k-1`` take ``max(a + b*i, c)``: the leading steps on one side of
    the crossing, as ``(alpha, beta, steps)`` with step ``i`` taking ``alpha + beta*i``."""
    if a >= c:
        if b < 0:
            k = min(k, int((a - c) / -b) + 1)
        return a, b, max(k, 1)
    if b > 0:
        k = min(k, int((c - a) / b) + 1)
    return c, 0.0, max(k, 1)


def _steps_covering(alpha: float, beta: float, elapsed: float, kmax: int) -> int:
    """Smallest j in [1, kmax] with j*alpha + beta*j*(j-1)/2 >= elapsed (steps of time
    alpha + beta*i): the step in progress at ``elapsed`` always completes."""
    if beta == 0:
        j = math.ceil(elapsed / alpha)
    else:
        a, b = beta / 2, alpha - beta / 2
        disc = b * b + 4 * a * elapsed
        j = math.ceil((-b + math.sqrt(max(disc, 0.0))) / (2 * a))
    j = min(max(j, 1), kmax)
    while j > 1 and (j - 1) * alpha + beta * (j - 1) * (j - 2) / 2 >= elapsed:
        j -= 1
    while j < kmax and j * alpha + beta * j * (j - 1) / 2 < elapsed:
        j += 1
    return j
