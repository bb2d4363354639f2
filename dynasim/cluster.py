"""A fleet of simulated vLLM replicas behind a router, in one SimPy environment.

:class:`Cluster` holds one :class:`~dynasim.engine.Engine` per profile (a heterogeneous
fleet when the profiles differ), each with its own policy instance, and offers the
interface the simulation code uses on one engine: :meth:`Cluster.submit` routes the
request (:mod:`dynasim.routers`), sets ``req.replica`` and hands it to that engine;
:meth:`Cluster.abort` forwards to the request's engine. Counters (``num_steps``,
``num_preemptions``, ``prefix_cache_hit_rate``) are summed over the fleet.

Front-end latency: a request reaches the router ``frontend_latency`` seconds after it
was sent (the least ``frontend_latency_ms`` of the fleet's profiles) and reaches a
replica whose profile has a larger front-end latency that much later (its own API
server's share). On a homogeneous fleet (and on one replica) routing and submission
happen at the same instant, exactly as :func:`dynasim.simulation.simulate` submits, so
one replica gives the very records ``simulate`` gives.

:func:`simulate_cluster` is :func:`~dynasim.simulation.simulate` for a fleet.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence

import pandas as pd
import simpy

from dynasim.engine import Engine
from dynasim.policies.base import Policy
from dynasim.prefix_cache import block_hashes
from dynasim.profiles import Profile
from dynasim.request import Request
from dynasim.routers.base import Router
from dynasim.simulation import simulate, simulate_programs
from dynasim.trace import Trace


class EngineView:
    """The read-only :class:`~dynasim.routers.base.ReplicaView` of a simulated engine.

    ``num_outstanding``: requests waiting or running on the engine
    (:attr:`~dynasim.engine.Engine.num_in_flight`) plus those routed to it and still in
    its front-end (``in_transit``). ``kv_blocks_used``: the engine's
    :meth:`~dynasim.engine.Engine.used_blocks_now` where it has one (exact during a run
    of decode steps taken in one timeout, so a KV-reading router chooses as against a
    step-by-step engine), else ``used_blocks()``. ``prefix_match``: the engine's
    prefix-cache hit for the request's prompt blocks, capped at ``prompt_tokens - 1``
    as at admission.
    """

    __slots__ = ("engine", "in_transit")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.in_transit = 0

    def num_outstanding(self) -> int:
        """Requests in flight (see class docstring)."""
        return self.engine.num_in_flight + self.in_transit

    def kv_blocks_used(self) -> int:
        """KV blocks referenced now (see class docstring)."""
        e = self.engine
        now = getattr(e, "used_blocks_now", None)
        return now() if now is not None else e.used_blocks()

    def kv_blocks_total(self) -> int:
        """KV blocks of the engine's cache."""
        return self.engine.total_blocks

    def prefix_match(self, req: Request) -> int:
        """Prompt tokens of ``req`` in the engine's prefix cache now (0 without one)."""
        e = self.engine
        if e.cache is None:
            return 0
        hashes = block_hashes(req.prompt, req.hash_ids, req.prompt_tokens, e.block_size)
        limit = (req.prompt_tokens - 1) // e.block_size
        return e.cache.match(hashes[:limit])[0] * e.block_size if hashes else 0


class Cluster:
    """N engines behind a router in one SimPy environment (module docstring).

    Args:
        env: the SimPy environment (time in seconds).
        profiles: one profile per replica (replica i runs ``profiles[i]``); at least one.
        policy_factory: called once per replica for its own policy instance (policies
            keep per-engine state: the waiting queue, program registries).
        router: the :class:`~dynasim.routers.base.Router` choosing each replica.
        on_finish: called with each request when it finishes or is rejected (on any
            replica; ``req.replica`` says which).
        on_progress: the engines' ``on_progress`` (a request reached its ``watch``).

    Raises:
        ValueError: no profiles.
    """

    def __init__(self, env: simpy.Environment, profiles: Sequence[Profile],
                 policy_factory: Callable[[], Policy], router: Router,
                 on_finish: Callable[[Request], None] | None = None,
                 on_progress: Callable[[Request], None] | None = None) -> None:
        if not profiles:
            raise ValueError("a cluster needs at least one replica profile")
        self.env = env
        self.router = router
        self.profiles = list(profiles)
        self.engines = [Engine(env, p, policy_factory(), on_finish=on_finish,
                               on_progress=on_progress) for p in self.profiles]
        self.views = [EngineView(e) for e in self.engines]
        fe = [p.frontend_latency_ms / 1000.0 for p in self.profiles]
        #: seconds from sending to the router (the fleet's least front-end latency)
        self.frontend_latency = min(fe)
        self._extra = [f - self.frontend_latency for f in fe]
        self._any_extra = any(x > 0 for x in self._extra)
        self._in_transit: set[Request] = set()
        self._aborted: set[Request] = set()

    def __len__(self) -> int:
        return len(self.engines)

    def tell_next_arrival(self, instant: float, req: Request | None) -> None:
        """The arrival source's promise that no request reaches the router before
        ``instant`` (seconds; ``math.inf``: no more), forwarded to every engine as its
        ``quiet_until`` when routing and submission are simultaneous (no replica has
        extra front-end latency), so that their decode runs may look ahead
        (:meth:`~dynasim.decode_set.DecodeSet._decode_run`). Which engine ``req`` goes
        to is only known when it arrives, so no engine is told ``req``."""
        if not self._any_extra:
            for e in self.engines:
                e.quiet_until = instant

    @property
    def policies(self) -> list[Policy]:
        """The replicas' policy instances, by replica index."""
        return [e.policy for e in self.engines]

    def submit(self, req: Request) -> None:
        """Route ``req`` now, set ``req.replica`` and hand it to that engine (after the
        replica's extra front-end latency, if any).

        Raises:
            ValueError: the router returned an index outside ``0..N-1`` (a router bug).
        """
        i = self.router.route(req, self.views)
        if not 0 <= i < len(self.engines):
            raise ValueError(f"router {self.router.name} chose replica {i} of "
                             f"{len(self.engines)}")
        req.replica = i
        extra = self._extra[i]
        if extra > 0:
            self.views[i].in_transit += 1
            self._in_transit.add(req)
            self.env.process(self._deliver(req, extra))
        else:
            self.engines[i].submit(req)

    def _deliver(self, req: Request, delay: float) -> Generator[simpy.Event, object, None]:
        yield self.env.timeout(delay)
        self.views[req.replica].in_transit -= 1
        self._in_transit.discard(req)
        self.engines[req.replica].submit(req)
        if req in self._aborted:
            self._aborted.discard(req)
            self.abort(req)

    def abort(self, req: Request) -> None:
        """Abort ``req`` on the engine serving it (``Engine.abort``, vLLM's
        ``abort_request``); a request still in its replica's front-end is aborted the
        moment it reaches the engine.

        Raises:
            NotImplementedError: the engine has no ``abort`` (older engine).
        """
        if req in self._in_transit:
            self._aborted.add(req)
            return
        abort = getattr(self.engines[req.replica], "abort", None)
        if abort is None:
            raise NotImplementedError("this Engine has no abort()")
        abort(req)

    def sync(self, req: Request) -> None:
        """:meth:`Engine.sync` on the request's engine."""
        if req not in self._in_transit:
            self.engines[req.replica].sync(req)

    def cache_generated(self, req: Request) -> None:
        """:meth:`Engine.cache_generated` on the request's engine."""
        if req not in self._in_transit:
            self.engines[req.replica].cache_generated(req)

    # ----------------------------------------------------- fleet counters
    @property
    def num_steps(self) -> int:
        """Engine steps taken, summed over the replicas."""
        return sum(e.num_steps for e in self.engines)

    @property
    def num_preemptions(self) -> int:
        """Preemptions, summed over the replicas."""
        return sum(e.num_preemptions for e in self.engines)

    @property
    def prefix_cache_hit_rate(self) -> float:
        """Prompt tokens found in a prefix cache / prompt tokens looked up, over the
        whole fleet (:attr:`~dynasim.engine.Engine.prefix_cache_hit_rate`); 0.0 before
        any lookup."""
        query = sum(e.prefix_query_tokens for e in self.engines)
        return sum(e.prefix_hit_tokens for e in self.engines) / query if query else 0.0

    @property
    def max_decode_run(self) -> int | None:
        """The engines' cap on decode steps per timeout (see
        :attr:`~dynasim.engine.Engine.max_decode_run`)."""
        return self.engines[0].max_decode_run

    @max_decode_run.setter
    def max_decode_run(self, value: int | None) -> None:
        for e in self.engines:
            e.max_decode_run = value


def simulate_cluster(trace: Trace, profiles: Sequence[Profile],
                     policy_factory: Callable[[], Policy], router: Router,
                     progress: Callable[[int], None] | None = None,
                     max_decode_run: int | None = None) -> tuple[pd.DataFrame, Cluster]:
    """Simulate ``trace`` on a fleet (one replica per profile) behind ``router``;
    deterministic for the same inputs. With one profile the records equal
    :func:`dynasim.simulation.simulate`'s for the same profile and policy.

    Args:
        policy_factory: a fresh policy per replica, e.g. ``lambda: make_policy("fcfs")``.
        progress: called with the number of requests done, now and then.
        max_decode_run: the engines' cap on decode steps per timeout (1: step by step).

    Returns:
        (records, cluster): the record table (:mod:`dynasim.data_record`, ``replica``
        filled in) and the cluster (its engines and summed counters).

    Raises:
        RuntimeError: a request left unfinished (a bug, never silent).
    """
    if not profiles:
        raise ValueError("a cluster needs at least one replica profile")

    def make_engine(env: simpy.Environment, on_finish: Callable) -> Cluster:
        fleet = Cluster(env, profiles, policy_factory, router, on_finish=on_finish)
        for e in fleet.engines:  # on_finish only records; routers look at arrivals
            e.lookahead = True
        return fleet

    first = min(profiles, key=lambda p: p.frontend_latency_ms)  # sends reach the router
    return simulate(trace, first, None, progress, max_decode_run,  # type: ignore
                    make_engine=make_engine)


class FleetPolicy:
    """The program-level face of a fleet's per-replica policies for
    :func:`~dynasim.simulation.simulate_programs`: program arrivals and finishes reach
    every replica's policy (a program's calls may land on any replica), a request's
    priority comes from the first replica's policy (all of them know every program),
    and the intra-program policy is the first replica's."""

    def __init__(self, policies: Sequence[Policy]) -> None:
        self.policies = list(policies)
        self.intra = self.policies[0].intra

    def priority(self, req: Request) -> int:
        """vLLM priority of ``req`` (:meth:`Policy.priority` of replica 0)."""
        return self.policies[0].priority(req)

    def on_program_arrival(self, program: object, now: float) -> None:
        """Register the program with every replica's policy."""
        for p in self.policies:
            p.on_program_arrival(program, now)  # type: ignore[arg-type]

    def on_program_finish(self, program: object, now: float) -> None:
        """Tell every replica's policy the program finished."""
        for p in self.policies:
            p.on_program_finish(program, now)  # type: ignore[arg-type]


def simulate_cluster_programs(specs: Sequence, arrival_times: Sequence[float],
                              profiles: Sequence[Profile],
                              policy_factory: Callable[[], Policy], router: Router,
                              deadlines: Sequence[float] | None = None,
                              max_decode_run: int | None = None
                              ) -> tuple[pd.DataFrame, pd.DataFrame, Cluster]:
    """:func:`~dynasim.simulation.simulate_programs` on a fleet behind ``router``: each
    replica orders its own queue with its own policy instance (gang, SJF and PLAS
    keep working per replica), every call is routed on its own (``program-affinity``
    keeps a program's calls on one replica). Deterministic; one profile gives the
    records of ``simulate_programs`` on that profile.

    Returns:
        (requests, programs, cluster); requests carry ``replica``.
    """
    policies = [policy_factory() for _ in profiles]
    fleet = FleetPolicy(policies)
    made = iter(policies)

    def make_engine(env: simpy.Environment, on_finish: Callable, on_progress: Callable
                    ) -> Cluster:
        return Cluster(env, profiles, made.__next__, router, on_finish=on_finish,
                       on_progress=on_progress)

    first = min(profiles, key=lambda p: p.frontend_latency_ms)  # sends reach the router
    return simulate_programs(specs, arrival_times, first, fleet,  # type: ignore
                             deadlines, max_decode_run=max_decode_run,
                             make_engine=make_engine)
