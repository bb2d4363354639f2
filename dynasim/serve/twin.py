"""The real-time driver: a dynasim engine (or fleet) whose simulated clock follows the
wall clock, so that an HTTP server can stream its tokens when the engine makes them.

SimPy stays in charge of time. Simulated second ``s`` is wall time ``t0 + s`` on the
event loop's monotonic clock (``t0``: :meth:`Twin.start`). One asyncio task
(:meth:`Twin.run`) repeats: sleep until the wall time of the next SimPy event
(``env.peek()``) or until woken by a submit or an abort, run the environment up to the
current wall time (``env.run(until=now)``), then look at every live request and tell its
:class:`Stream` about new tokens and its end. An HTTP request is handed in by
:meth:`Twin.submit`: the environment is first run up to now, then the request is created
with ``arrival_time = now`` and reaches the engine after the profile's
``frontend_latency_ms``, exactly as :func:`dynasim.simulation.simulate` submits a trace
request (``arrival_node``; on a fleet, :class:`dynasim.cluster.Cluster` routes it as
:func:`dynasim.cluster.simulate_cluster` does). A client that goes away is aborted with
:meth:`Engine.abort` (vLLM's ``abort_request``): a waiting request leaves the queue
at once, a running one at the next step boundary, freeing its seat and KV blocks.

Per-token times: the engine runs step by step (``max_decode_run = 1``, the reference
behaviour its tests prove equal to the default runs of decode steps), so every step
boundary is a SimPy event and each token is seen at the wall time of the step that
sampled it (late by the event loop's wake-up delay, typically under a millisecond, and by
whatever else the loop is doing). The time a request was first scheduled (for the
queue-time histogram) is the first step boundary at which it is seen running.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable, Generator, Sequence

import simpy

from dynasim.engine import Engine
from dynasim.policies.base import Policy
from dynasim.profiles import Profile
from dynasim.request import ABORTED, FINISHED, REJECTED, RUNNING, Request
from dynasim.routers.base import Router
from dynasim.serve.metrics import ServerMetrics
from dynasim.serve.tokens import prompt_segments

#: Request states after which a stream gets no more tokens.
_ENDED = (FINISHED, REJECTED, ABORTED)


class Stream:
    """What one HTTP request sees of its engine request.

    Attributes:
        req: the engine's :class:`~dynasim.request.Request`.
        tokens: tokens generated so far (as of the last look).
        changed: set when ``tokens`` grows or the request ends; the HTTP handler clears
            it before waiting on it again.
        ended: the request finished, was rejected or aborted (``req.status`` says which,
            ``req.error`` why).
        scheduled: simulated time (s) it was first seen running (NaN before).
    """

    __slots__ = ("req", "tokens", "changed", "ended", "scheduled")

    def __init__(self, req: Request) -> None:
        self.req = req
        self.tokens = 0
        self.changed = asyncio.Event()
        self.ended = False
        self.scheduled = math.nan


class Twin:
    """A simulated vLLM replica (or fleet behind a router) served in real time.

    Args:
        profiles: one profile per replica (one: a single :class:`Engine`; several: a
            :class:`~dynasim.cluster.Cluster` behind ``router``).
        policy_factory: a fresh policy per replica, e.g.
            ``lambda: make_policy("fcfs")``.
        router: the fleet's router (required with several profiles, unused with one).
        clock: the wall clock in seconds (default: the running loop's ``time``).

    Raises:
        ValueError: no profile, or several without a router.
    """

    def __init__(self, profiles: Sequence[Profile], policy_factory: Callable[[], Policy],
                 router: Router | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        if not profiles:
            raise ValueError("the twin needs at least one replica profile")
        self.env = simpy.Environment()
        self.profiles = list(profiles)
        if len(self.profiles) == 1:
            self.engine = Engine(self.env, self.profiles[0], policy_factory())
            self.engines = [self.engine]
        else:
            from dynasim.cluster import Cluster

            if router is None:
                raise ValueError("a fleet of replicas needs a router")
            self.engine = Cluster(self.env, self.profiles, policy_factory, router)
            self.engines = self.engine.engines
        self.engine.max_decode_run = 1  # every step boundary is an event (module doc)
        #: seconds from an HTTP arrival to the engine (or router): simulate's rule
        self.frontend_latency = min(p.frontend_latency_ms for p in self.profiles) / 1000.0
        self.policy = self.engines[0].policy
        self.block_size = self.profiles[0].block_size
        self.metrics = ServerMetrics()
        self._clock = clock
        self.t0 = 0.0
        self._ids = itertools.count()
        self.live: dict[Request, Stream] = {}
        self._front: set[Request] = set()  # in the front-end, not yet submitted
        self._wake: asyncio.Event | None = None

    # ------------------------------------------------------------------ clock
    def wall(self) -> float:
        """The wall clock in seconds (monotonic)."""
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time()

    def start(self) -> None:
        """Fix simulated time 0 at the current wall time (call once, in the loop)."""
        self.t0 = self.wall()
        self._wake = asyncio.Event()

    def now(self) -> float:
        """The current simulated time (s): wall seconds since :meth:`start`."""
        return self.wall() - self.t0

    # ----------------------------------------------------------- the driver
    async def run(self) -> None:
        """The driver task (module docstring); runs until cancelled."""
        if self._wake is None:
            self.start()
        wake = self._wake
        assert wake is not None
        while True:
            self.advance()
            wake.clear()
            nxt = self.env.peek()
            if math.isinf(nxt):
                await wake.wait()
                continue
            try:
                async with asyncio.timeout_at(self.t0 + nxt):
                    await wake.wait()
            except TimeoutError:
                pass

    def advance(self) -> None:
        """Run the simulation up to the current wall time, then update every live
        stream (new tokens, ends)."""
        t = self.now()
        if t > self.env.now:
            self.env.run(until=t)
        self._look()

    def _look(self) -> None:
        engine, now = self.engine, self.env.now
        for req, s in list(self.live.items()):
            status = req.status
            if status == RUNNING:
                engine.sync(req)  # decode counters are kept as aggregates
                if math.isnan(s.scheduled):
                    s.scheduled = now
            if req.num_generated > s.tokens:
                if s.tokens == 0:
                    self.metrics.first_token(req)
                self.metrics.generated(req, req.num_generated - s.tokens)
                s.tokens = req.num_generated
                s.changed.set()
            if status in _ENDED:
                s.ended = True
                del self.live[req]
                if status == FINISHED:
                    self.metrics.finished(req, s.scheduled, self.frontend_latency)
                s.changed.set()

    # ------------------------------------------------------------- requests
    def submit(self, prompt_ids: Sequence[int], output_tokens: int,
               priority: int = 0) -> Stream:
        """Hand a request to the engine now (module docstring).

        Args:
            prompt_ids: the prompt's token ids (their count is the prompt length; with
                prefix caching their blocks are the cache keys,
                :func:`~dynasim.serve.tokens.prompt_segments`).
            output_tokens: tokens to generate (``max_tokens``; the twin has no EOS).
            priority: vLLM's request priority (lower first; read by the ``priority``
                policy).

        Returns:
            its :class:`Stream` (tokens and end arrive through it).
        """
        self.advance()
        env = self.env
        req = Request(next(self._ids), env.now, len(prompt_ids), output_tokens,
                      priority=priority)
        if any(p.enable_prefix_caching for p in self.profiles):
            req.prompt = prompt_segments(prompt_ids, self.block_size)
        stream = Stream(req)
        self.live[req] = stream
        if self.frontend_latency > 0:
            self._front.add(req)
            env.process(self._deliver(req))
        else:
            self.engine.submit(req)
        self._poke()
        return stream

    def _deliver(self, req: Request) -> Generator[simpy.Event, object, None]:
        yield self.env.timeout(self.frontend_latency)
        if req in self._front:  # else the client left while it was in the front-end
            self._front.discard(req)
            self.engine.submit(req)

    def abort(self, stream: Stream) -> None:
        """The client went away: abort its request (a no-op once it has ended).

        A request still in the front-end never reaches the engine; one waiting leaves
        the queue now; a running one leaves at the next step boundary (Engine.abort).
        Its seat and blocks are then free and its stream ends (status ``aborted``)."""
        req = stream.req
        if stream.ended or req.status in _ENDED:
            return
        self.advance()
        if req.status in _ENDED:
            return
        self.metrics.aborted()
        if req in self._front:  # never reaches the engine (_deliver skips it)
            self._front.discard(req)
            req.status, req.error, req.finish_time = ABORTED, "aborted", self.env.now
        else:
            self.engine.abort(req)
        self.live.pop(req, None)
        stream.ended = True
        stream.changed.set()
        self._poke()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # ---------------------------------------------------------------- state
    def num_running(self) -> int:
        """Requests running now, summed over the replicas."""
        return sum(len(e.running) for e in self.engines)

    def num_waiting(self) -> int:
        """Requests waiting now (queued in an engine), summed over the replicas."""
        return sum(len(e.waiting) for e in self.engines)
