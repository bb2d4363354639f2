"""The engine: a SimPy model of one vLLM replica doing continuous batching.

One SimPy process (:meth:`Engine.run`) repeats vLLM's loop: *schedule* a step, wait the
step time the profile's model gives, *apply* it (tokens computed, tokens sampled, requests
finished). Time is a float in seconds.

Rules, each with its vLLM source:

* **Limits.** A step holds at most ``max_num_seqs`` running requests and
  ``max_num_batched_tokens`` tokens (``SchedulerConfig``).
* **V1 step** (``vllm/v1/core/sched/scheduler.py``, ``Scheduler.schedule``): running
  requests first, in admission order; every decoding request gets 1 token; the rest of
  the budget goes to chunks of partial prefills (prefills are always at the tail of the
  running list, because admissions append, so "decodes first" is exactly vLLM's order);
  then, only if nothing was preempted in this step, waiting requests are admitted in the
  policy's order with a first chunk each, until the first one that does not fit (``break``).
* **v0 step** (``vllm/core/scheduler.py`` 0.2-0.4, ``_schedule``): if waiting requests
  can be admitted whole (sum of their tokens <= budget, seats left, free blocks minus a
  1% watermark, ``BlockSpaceManager.can_allocate``), the step is prefill only; otherwise
  every running request decodes one token.
* **v0 padding** (``max_paddings`` set; vLLM 0.2/0.3 ``Scheduler._schedule`` and
  ``ModelRunner._prepare_prompt``): admission measures whole sequence lengths
  (``seq.get_len()``, prefix-cached tokens included): it stops when ``len(seqs) *
  max(lengths)`` exceeds ``max_num_batched_tokens`` or that minus ``sum(lengths)`` (the
  padding) exceeds ``max_paddings``. The step costs the padded batch of the tokens it
  computes: every prompt's uncached part padded to the longest one.
* **Gangs that cannot fit** (gang, SJF: a group admitted together or not at all): a
  group that an idle engine could not admit whole (more requests than
  ``max_num_seqs``, more first-chunk blocks than the KV cache, a v0 batch over the token
  budget or ``max_paddings``) is admitted in pieces, its leading members that fit
  first, the rest staying at the head of the queue (Parrot dispatches an application's
  tasks singly when no engine fits the group); otherwise it would wait forever.
* **Tokens.** A step that computes every known token of a request samples one more
  (prefill yields the first token in the step that computes the last prompt chunk).
* **KV cache.** Blocks of ``block_size`` tokens; a request holds ``ceil(computed /
  block_size)`` blocks; a decode step needs a new block when ``computed`` is a multiple of
  the block size. V1 keeps no watermark (``KVCacheManager.allocate_slots``).
* **Preemption** (recompute only): when blocks run out, the policy's victim (FCFS: the
  last admitted, ``self.running.pop()``) loses all its blocks and computed tokens and goes
  to the head of the waiting queue (``prepend_request`` / ``waiting.appendleft``); it
  keeps its sampled tokens and recomputes prompt + output as a prefill when readmitted.
* **Prefix cache** (``enable_prefix_caching``; :mod:`dynasim.prefix_cache`): at admission
  the leading cached prompt blocks are shared and count as computed (at most
  ``num_tokens − 1``); blocks a request computes are registered as they are allocated
  (one that a running request already cached is kept twice, as vLLM keeps both copies);
  unreferenced cached blocks count as free and are evicted on demand. A preempted
  request's full computed blocks, generated tokens included, stay cached, so it
  re-hits them when readmitted (:meth:`~dynasim.kv_blocks.KVBlocks._cache_own_blocks`).
* **CPU overheads** (V1 ``EngineCore.step``: ``Scheduler.schedule``, the forward pass,
  ``Scheduler.update_from_output``; the API server detokenizes and streams in another
  process): a step pays the model's per-step term (``step_ms`` / ``step_overhead_ms``)
  and per-sequence term (``seq_ms`` / ``overhead_ms_per_seq``) on top of the GPU work
  (overlapping it under async scheduling, below);
  a request reaches the waiting queue ``frontend_latency_ms`` after it was sent (HTTP,
  tokenization, the hop to the engine core; :mod:`dynasim.simulation`).
* **Async scheduling** (profile ``async_scheduling``, V1 ``--async-scheduling``:
  ``vllm/v1/core/sched/async_scheduler.py`` ``AsyncScheduler`` and
  ``EngineCore.step_with_batch_queue``): step N+1 is scheduled while step N runs on
  the GPU and step N's output is processed while step N+1 runs, so a step takes
  ``max(GPU, CPU)`` of the model's split (:meth:`StepTimeModel.split`: the per-step and
  per-sequence overhead terms are the CPU part) instead of their sum; and a request
  that finishes in step N stays in ``running`` with its blocks until
  ``update_from_output`` of step N, which comes after step N+1 was scheduled: its seat
  and blocks are released only after the next schedule (a waiting request cannot take
  them in that step).
* **Full-prompt admission** (profile ``admit_full_prompt``; newer V1's full-sequence
  reservation in ``KVCacheManager.allocate_slots`` called from the waiting loop of
  ``Scheduler.schedule``): a waiting request is admitted only if the blocks for its
  whole known tokens (prompt + generated) fit beside the cached ones it hits, not only
  those of its first chunk; only the first chunk's blocks are allocated.
* **Client timeouts** (profile ``client_timeouts``; inference-perf's request timeout;
  the OpenAI server aborts a request whose client disconnected,
  ``EngineCore.abort_requests``): a request with a finite ``timeout_s`` is aborted
  (:meth:`Engine.abort`) ``timeout_s`` after its arrival if it is still waiting or
  running; unlike a caller's abort, the engine's ``on_finish`` is called for it (its
  record has error ``client timeout (T s)``).
* **Rejection.** A request with prompt + output > ``max_model_len`` is rejected at arrival
  (the OpenAI server's HTTP 400), as is one that could never fit the KV cache.
* **Abort** (V1 ``Scheduler.finish_requests`` with ``FINISHED_ABORTED``, called by
  ``EngineCore.abort_requests`` when the client closes the stream): a waiting request
  leaves the queue at once; a running one leaves the batch at the next step boundary
  (the step in flight completes), freeing its seat and its blocks (full cached blocks
  stay in the prefix cache as idle blocks). :meth:`Engine.abort`.

Speed: a pure decode step changes nothing but counters, so the engine keeps the decoding
requests as aggregates (count, sum of context, blocks due per step phase, a heap of
finish steps) and advances a whole run of decode steps in one SimPy timeout, up to the
next finish or KV exhaustion. An arrival that could be admitted interrupts the run at the
next step boundary (under :func:`~dynasim.simulation.simulate` the engine knows the next
arrival's instant, :attr:`Engine.next_arrival`, and a run it will cut waits for it
instead of a timeout, saving two SimPy events per arrival with the same instants); so does a change of the policy's order with time alone
(:meth:`~dynasim.policies.base.Policy.order_changes_at`, SJF aging), and, for an order
that reads the prefix cache (LPM), the first step that evicts a cached block. Under
:func:`~dynasim.simulation.simulate` a run may also look ahead past finishes while the
queue is empty and no request can arrive first (:attr:`Engine.lookahead`): several runs
and their finishes in one event, the same records. No Python work is done per token.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence

import simpy
from simpy.events import URGENT

from dynasim.aborts import Aborts
from dynasim.decode_set import DecodeSet, _cdiv
from dynasim.kv_blocks import KVBlocks
from dynasim.policies.base import Policy
from dynasim.prefix_cache import PrefixCache
from dynasim.profiles import Profile
from dynasim.request import FINISHED, REJECTED, WAITING, Request
from dynasim.schedule_v0 import V0Scheduler
from dynasim.schedule_v1 import V1Scheduler


class Engine(Aborts, KVBlocks, DecodeSet, V0Scheduler, V1Scheduler):
    """One vLLM replica in a SimPy environment.

    Args:
        env: the SimPy environment (time in seconds).
        profile: limits and step-time model (:class:`~dynasim.profiles.profile.Profile`).
        policy: the scheduling policy (:class:`~dynasim.policies.base.Policy`).
        on_finish: called with each request when it finishes or is rejected.
        on_progress: called with a running request at the step boundary where it has
            generated ``req.watch`` tokens (``num_generated`` current); it may set the
            next ``watch`` (Dynasor-CoT probes every T tokens).

    Use :meth:`submit` to hand it requests; the engine process starts at construction.
    """

    def __init__(self, env: simpy.Environment, profile: Profile, policy: Policy,
                 on_finish: Callable[[Request], None] | None = None,
                 on_progress: Callable[[Request], None] | None = None) -> None:
        self.env = env
        self.on_progress = on_progress
        self._watch_heap: list[tuple[int, int, int, Request]] = []
        self.profile = profile
        self.model = profile.step_time
        self.policy = policy
        self.on_finish = on_finish
        self.cache = PrefixCache(self._program_busy if policy.eviction == "program" else None) \
            if profile.enable_prefix_caching else None
        self._program_running: dict[int, int] = {}
        self._hash_memo: dict[tuple, tuple] = {}
        #: prompt tokens looked up in / found in the prefix cache at first admission
        self.prefix_query_tokens = 0
        self.prefix_hit_tokens = 0
        self.waiting = policy.new_queue(prefix_match=self.prefix_match)
        self._refresh = getattr(self.waiting, "refresh", None)  # order may change per step
        # the policy's per-step hooks, None where it keeps the base class's no-op
        kind = type(policy)
        self._on_step = None if getattr(kind, "on_step", None) is Policy.on_step \
            else policy.on_step
        self._order_changes_at = None if getattr(kind, "order_changes_at", None) is \
            Policy.order_changes_at else policy.order_changes_at
        self._cache_orders = getattr(policy, "order_depends_on_cache", False)
        self.running: dict[Request, None] = {}  # admission order
        self.prefilling: list[Request] = []  # running, not decoding, admission order
        self.block_size = profile.block_size
        self.total_blocks = profile.num_gpu_blocks
        self.free_blocks = self.total_blocks
        self.max_num_seqs = profile.max_num_seqs
        self.max_num_batched_tokens = profile.max_num_batched_tokens
        self.v1 = profile.scheduling == "v1"
        self.watermark_blocks = 0 if self.v1 else int(0.01 * self.total_blocks)
        self.max_paddings = None if self.v1 else profile.max_paddings
        # decoding requests as aggregates (see module docstring)
        self.clock = 0  # decode steps taken so far
        self.num_decoding = 0
        self._ctx_base = 0  # sum(computed0 - clock0 + 1); sum ctx = base + n * clock
        self._phase = [0] * self.block_size  # decoders due a block when clock % bs == i
        self._finish_heap: list[tuple[int, int, int, Request]] = []
        self._seq = 0
        self._idle: simpy.Event | None = None
        self._leaping = False
        #: the decode run in flight: (start time, alpha, beta, steps) (used_blocks_now)
        self._run: tuple[float, float, float, int] | None = None
        #: (instant, request) of the next arrival already scheduled, when the arrival
        #: source tells (:func:`dynasim.simulation.start_arrivals`); a decode run that
        #: this arrival will cut waits on ``_wake`` instead of a timeout
        self.next_arrival: tuple[float, Request] | None = None
        #: no request reaches this engine before this instant (seconds), as its arrival
        #: source tells (:meth:`tell_next_arrival`); -inf: unknown
        self.quiet_until = -math.inf
        self._wake: simpy.Event | None = None
        self._admissible_memo: tuple[Request | None, bool] = (None, False)
        self._preempted = False  # a preemption in this step's schedule
        #: cap on decode steps advanced in one timeout (None: no cap); 1 gives the
        #: step-by-step reference behaviour the tests compare against
        self.max_decode_run: int | None = None
        self.num_steps = 0
        self.num_preemptions = 0
        self.num_aborted = 0
        self._aborts: list[Request] = []  # running requests to abort at the next boundary
        # async scheduling (module docstring): finished requests holding seat + blocks
        # until the next schedule, and whether releasing them may let a waiting one in
        self.async_scheduling = self.v1 and profile.async_scheduling
        self.admit_full_prompt = self.v1 and profile.admit_full_prompt
        self.client_timeouts = profile.client_timeouts
        self._lingering: list[Request] = []
        self._late_release = False
        self._timed_out: set[Request] = set()  # aborted by their client timeout
        #: set by :func:`~dynasim.simulation.simulate` when nothing but the arrival source
        #: watches this engine and its ``on_finish`` only records: decode runs may then
        #: look ahead past finishes (:meth:`~dynasim.decode_set.DecodeSet._decode_run`)
        self.lookahead = False
        self._ahead = False  # lookahead and every other condition for it (run() start)
        self._now_at: float | None = None  # the instant of a finish taken ahead of time
        self.num_finished_ahead = 0  # finishes taken ahead of their instant (a counter)
        self.process = env.process(self.run())

    # ----------------------------------------------------------------- public
    def submit(self, req: Request) -> None:
        """Hand a request to the engine at the current simulated time.

        A request that cannot ever be served is rejected at once (see module docstring):
        its ``status`` is ``rejected`` and ``error`` says why.
        """
        now = self.env.now
        if self._admissible_memo[0] is not req or not self._admissible_memo[1]:
            why = self._rejection(req)
            if why is not None:
                return self._reject(req, why)
        if self.cache is not None:
            req._hashes = self._block_hashes(req)
        self.policy.on_arrival(req, now)
        req.status = WAITING
        self.waiting.push(req)
        if self.client_timeouts and math.isfinite(req.timeout_s):
            self.env.process(self._client_timeout(req))
        if self._idle is not None:
            if not self._idle.triggered:
                self._idle.succeed()
        elif self._leaping and len(self.running) < self.max_num_seqs:
            self._cut_run()

    def tell_next_arrival(self, instant: float, req: Request | None) -> None:
        """The arrival source's promise: the next request to reach this engine is
        ``req`` at ``instant`` (SimPy's event time; ``math.inf``, None: no more).
        Lets decode runs wait for it instead of being interrupted and look ahead
        (:meth:`~dynasim.decode_set.DecodeSet._decode_run`)."""
        self.next_arrival = None if req is None else (instant, req)
        self.quiet_until = instant

    @property
    def num_in_flight(self) -> int:
        """Requests waiting or running (not those async scheduling still holds after
        they finished): what ``least-outstanding`` counts."""
        return len(self.waiting) + len(self.running)

    def _admissible(self, req: Request) -> bool:
        """Whether ``req`` will not be rejected at arrival (:meth:`_rejection`), memoised
        for the one upcoming arrival a decode run asks about."""
        memo = self._admissible_memo
        if memo[0] is not req:
            memo = self._admissible_memo = (req, self._rejection(req) is None)
        return memo[1]

    def _rejection(self, req: Request) -> str | None:
        """Why ``req`` can never be served here (module docstring, rejection), or None."""
        total = req.prompt_tokens + req.output_tokens
        limit = self.profile.max_model_len
        if limit is not None and total > limit:
            return f"prompt + output = {total} tokens exceeds max_model_len {limit}"
        need = _cdiv(total - 1, self.block_size)
        if need > self.total_blocks - self.watermark_blocks:
            return f"needs {need} KV blocks, the cache has {self.total_blocks}"
        if not self.v1 and total - 1 > self.max_num_batched_tokens:
            return "a recompute prefill would exceed max_num_batched_tokens (v0 cannot chunk)"
        return None

    def _cut_run(self) -> None:
        """End the decode run in flight at the next step boundary: wake the run waiting
        for a known arrival (:meth:`~dynasim.decode_set.DecodeSet._decode_run`) or
        interrupt its timeout; either way it resumes now, at urgent priority."""
        self._leaping = False
        wake = self._wake
        if wake is None:
            self.process.interrupt()
            return
        self._wake = None
        wake._ok, wake._value = True, None
        self.env.schedule(wake, URGENT)

    # ------------------------------------------------------------ the process
    def run(self) -> Generator[simpy.Event, object, None]:
        """The SimPy process: schedule, wait the step time, apply; forever."""
        env = self.env
        stalls = 0
        self._ahead = self._can_look_ahead()
        while True:
            if self._aborts:
                self._apply_aborts()
            if self._lingering and not self.running and not len(self.waiting):
                self._release_lingering()  # no next step to schedule: output processed
            if not self.running and not len(self.waiting):
                self._idle = env.event()
                yield self._idle
                self._idle = None
                continue
            self._preempted = False
            self._late_release = False
            if self._on_step is not None:
                self._on_step(env.now)
            if self._refresh is not None:
                self._refresh()
            chunks, decode = self._schedule_v1() if self.v1 else self._schedule_v0()
            released = bool(self._lingering)
            if released:  # step N's output processed after step N+1 was scheduled
                self._release_lingering()
                self._late_release = len(self.waiting) > 0
            if not chunks and not decode:
                stalls += 1
                if stalls > 10_000 or (not self.running and not released):
                    group = self.waiting.peek()
                    raise RuntimeError(f"engine stalled: cannot admit request "
                                       f"{group[0].request_id} (group of {len(group)}) with "
                                       f"{self.free_blocks} free blocks")
                continue
            stalls = 0
            if decode and not chunks:
                yield from self._decode_run()
                continue
            n_dec = self.num_decoding if decode else 0
            dt = self._step_time(self._prefill_shape(chunks), n_dec,
                                 self.sum_decode_ctx() if n_dec else 0)
            yield env.timeout(dt)
            self.num_steps += 1
            if decode:
                self._advance_decode(1)
                if self._watch_heap:
                    self._collect_watches()
            self._apply_chunks(chunks)
            if self._finish_heap and self._finish_heap[0][0] <= self.clock:
                self._collect_finished()

    def _can_look_ahead(self) -> bool:
        """Whether decode runs may take finishes ahead of time (:attr:`lookahead` and
        nothing that a finish could change before the next schedule: no policy hooks or
        time-dependent order, no progress watches, client timeouts or async scheduling,
        no step cap)."""
        kind = type(self.policy)
        return (self.lookahead and self.max_decode_run is None and self.on_progress is None
                and self._on_step is None and self._refresh is None
                and self._order_changes_at is None and not self._cache_orders
                and getattr(kind, "on_finish", None) is Policy.on_finish
                and not self.client_timeouts and not self.async_scheduling)

    def _step_time(self, prefill: list[tuple[int, int]], num_decode: int,
                   sum_decode_ctx: int) -> float:
        """Seconds of one step: the model's time, or with async scheduling the larger
        of its GPU and CPU parts (module docstring)."""
        if not self.async_scheduling:
            return self.model.step_time(prefill, num_decode, sum_decode_ctx)
        return max(self.model.split(prefill, num_decode, sum_decode_ctx))

    def _release_lingering(self) -> None:
        """Free the seats and blocks of requests that finished in the previous step
        (async scheduling)."""
        for req in self._lingering:
            self._release(req)
        self._lingering = []

    # -------------------------------------------------------------- schedule
    def _fits_empty(self, group: Sequence[Request]) -> bool:
        """Whether ``group`` could be admitted whole by an idle engine (all seats, the
        whole token budget, every block but the watermark free; cached blocks as now).

        A gang that never could is admitted in pieces that fit, leading members first
        (Parrot dispatches an application's tasks singly when no engine fits the group);
        otherwise gang/SJF would wait for it forever while FCFS finishes it."""
        if len(group) > self.max_num_seqs:
            return False
        room = self.total_blocks - self.watermark_blocks
        known = [r.num_known_tokens for r in group]
        # cheap sufficient test first (this runs at every step a gang waits): a request
        # never needs more new + pinned blocks than its known tokens fill
        blocks_ok = sum(_cdiv(n, self.block_size) for n in known) <= room
        if self.v1:
            return blocks_ok or self._plan_v1(group, self.max_num_batched_tokens)[1] <= room
        if self.max_paddings is not None:
            padded = len(known) * max(known)
            if padded > self.max_num_batched_tokens or padded - sum(known) > self.max_paddings:
                return False
        elif sum(known) > self.max_num_batched_tokens:
            blocks_ok = False  # cached prefixes may still bring it within the budget
        return blocks_ok or self._v0_check(group, 0, [], self.max_num_seqs, room) is not None

    def _prefill_shape(self, chunks: dict[Request, int]) -> list[tuple[int, int]]:
        """The step's prefill chunks as the step-time model sees them: ``(new tokens,
        computed before)``; with v0 padding every prompt is padded to the longest."""
        if self.max_paddings is None:  # always None for v1 (__init__)
            return [(n, r.num_computed) for r, n in chunks.items()]
        longest = max(chunks.values())
        return [(longest, r.num_computed) for r in chunks]

    def _due_blocks(self) -> int:
        """Blocks the decoding requests need in the coming step."""
        return self._phase[self.clock % self.block_size] if self.num_decoding else 0

    def _reserve_decode_blocks(self) -> None:
        """Preempt victims until the coming decode step's new blocks fit."""
        while self._due_blocks() > self._free():
            self._preempt(self.policy.victim(self.running))

    # ----------------------------------------------------------------- state
    def _preempt(self, req: Request) -> None:
        if req._decoding:
            self._leave_decode(req)
        else:
            self.prefilling.remove(req)
        if self.cache is not None:  # its full computed blocks stay cached (idle)
            self._cache_own_blocks(req)
        del self.running[req]
        self._release(req)
        req.num_computed = 0
        req.num_preemptions += 1
        req.status = WAITING
        self.num_preemptions += 1
        self._preempted = True
        self.waiting.prepend(req)

    def _apply_chunks(self, chunks: dict[Request, int]) -> None:
        now = self.env.now
        for req, n in chunks.items():
            req.num_computed += n
            if req.num_computed == req.num_known_tokens:
                self.prefilling.remove(req)
                req.num_generated += 1
                if req.num_generated == 1:
                    req.first_token_time = now
                if req.num_generated == req.output_tokens:
                    self._finish(req)
                else:
                    self._join_decode(req)

    def _finish(self, req: Request) -> None:
        del self.running[req]
        if self.async_scheduling:  # seat and blocks held until the next schedule
            self._lingering.append(req)
        else:
            self._release(req)
        if self._aborts and req in self._aborts:  # the client gave up first: no answer
            self._aborts.remove(req)
            return self._aborted(req)
        req.status = FINISHED
        now = self.env.now if self._now_at is None else self._now_at
        req.finish_time = now
        self.policy.on_finish(req, now)
        if self.on_finish is not None:
            self.on_finish(req)

    def _reject(self, req: Request, why: str) -> None:
        req.status = REJECTED
        req.error = why
        req.finish_time = self.env.now
        self.policy.on_finish(req, self.env.now)
        if self.on_finish is not None:
            self.on_finish(req)

