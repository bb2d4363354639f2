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
  ``num_tokens − 1``); blocks a request computes are registered as they are allocated;
  unreferenced cached blocks count as free and are evicted on demand.
* **CPU overheads** (V1 ``EngineCore.step``: ``Scheduler.schedule``, the forward pass,
  ``Scheduler.update_from_output``; the API server detokenizes and streams in another
  process): a step pays the model's per-step term (``step_ms`` / ``step_overhead_ms``)
  and per-sequence term (``seq_ms`` / ``overhead_ms_per_seq``) on top of the GPU work;
  a request reaches the waiting queue ``frontend_latency_ms`` after it was sent (HTTP,
  tokenization, the hop to the engine core; :mod:`dynasim.simulation`).
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
next step boundary; so does a change of the policy's order with time alone
(:meth:`~dynasim.policies.base.Policy.order_changes_at`, SJF aging), and, for an order
that reads the prefix cache (LPM), the first step that evicts a cached block. No Python
work is done per token.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Generator, Sequence

import simpy

from dynasim.policies.base import Policy
from dynasim.prefix_cache import PrefixCache, block_hashes
from dynasim.profiles import Profile
from dynasim.request import ABORTED, FINISHED, REJECTED, RUNNING, WAITING, Request

#: Seconds within which an arrival (or abort) after the start of a decode run counts as
#: coming at its start: the run's end is a closed-form sum whose float rounding differs
#: from step-by-step sums by ~1e-16 s, so an arrival exactly on a step boundary must not
#: depend on which side the rounding falls.
TIE_S = 1e-9


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class Engine:
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
        self.cache = PrefixCache(self._program_busy) if profile.enable_prefix_caching \
            else None
        self._program_running: dict[int, int] = {}
        #: prompt tokens looked up in / found in the prefix cache at first admission
        self.prefix_query_tokens = 0
        self.prefix_hit_tokens = 0
        self.waiting = policy.new_queue(prefix_match=self.prefix_match)
        self._refresh = getattr(self.waiting, "refresh", None)  # order may change per step
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
        self._preempted = False  # a preemption in this step's schedule
        #: cap on decode steps advanced in one timeout (None: no cap); 1 gives the
        #: step-by-step reference behaviour the tests compare against
        self.max_decode_run: int | None = None
        self.num_steps = 0
        self.num_preemptions = 0
        self.num_aborted = 0
        self._aborts: list[Request] = []  # running requests to abort at the next boundary
        self.process = env.process(self.run())

    # ----------------------------------------------------------------- public
    def submit(self, req: Request) -> None:
        """Hand a request to the engine at the current simulated time.

        A request that cannot ever be served is rejected at once (see module docstring):
        its ``status`` is ``rejected`` and ``error`` says why.
        """
        now = self.env.now
        p = self.profile
        limit = p.max_model_len
        if limit is not None and req.prompt_tokens + req.output_tokens > limit:
            return self._reject(req, f"prompt + output = {req.prompt_tokens + req.output_tokens}"
                                     f" tokens exceeds max_model_len {limit}")
        need = _cdiv(req.prompt_tokens + req.output_tokens - 1, self.block_size)
        if need > self.total_blocks - self.watermark_blocks:
            return self._reject(req, f"needs {need} KV blocks, the cache has "
                                     f"{self.total_blocks}")
        if not self.v1 and req.prompt_tokens + req.output_tokens - 1 > self.max_num_batched_tokens:
            return self._reject(req, "a recompute prefill would exceed "
                                     "max_num_batched_tokens (v0 cannot chunk)")
        if self.cache is not None:
            if req.output_key is not None and req.prompt:  # output known: hash it too
                req._hashes = block_hashes((*req.prompt, (req.output_key, req.output_tokens)),
                                           None, req.prompt_tokens + req.output_tokens,
                                           self.block_size)
            else:
                req._hashes = block_hashes(req.prompt, req.hash_ids, req.prompt_tokens,
                                           self.block_size)
        self.policy.on_arrival(req, now)
        req.status = WAITING
        self.waiting.push(req)
        if self._idle is not None:
            if not self._idle.triggered:
                self._idle.succeed()
        elif self._leaping and len(self.running) < self.max_num_seqs:
            self._leaping = False
            self.process.interrupt()

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
                self._leaping = False  # a new head of the queue may fit: end the run
                self.process.interrupt()
        elif req.status == RUNNING and req not in self._aborts:
            self._aborts.append(req)
            if self._leaping:  # cut the decode run at the next step boundary
                self._leaping = False
                self.process.interrupt()

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

    def used_blocks(self) -> int:
        """KV blocks referenced by requests now (cached-but-idle blocks count as free)."""
        return self.total_blocks - self._free()

    @property
    def prefix_cache_hit_rate(self) -> float:
        """Prompt tokens found in the prefix cache at first admission / prompt tokens
        looked up, over every request admitted (one that names no shared content is
        looked up and misses: vLLM's ``PrefixCacheStats`` counts every lookup); 0.0
        before any lookup or without a prefix cache."""
        if not self.prefix_query_tokens:
            return 0.0
        return self.prefix_hit_tokens / self.prefix_query_tokens

    def prefix_match(self, req: Request) -> int:
        """Prompt tokens of ``req`` cached now (0 without a prefix cache); LPM's key."""
        if self.cache is None or not req._hashes:
            return 0
        return self.cache.match(req._hashes)[0] * self.block_size

    def _program_busy(self, program_id: int | None) -> bool:
        return program_id is not None and self._program_running.get(program_id, 0) > 0

    def _free(self) -> int:
        """Blocks available to allocate: free plus cached-but-unreferenced."""
        return self.free_blocks + (self.cache.num_evictable if self.cache else 0)

    def _alloc(self, n: int) -> None:
        """Take ``n`` blocks, evicting idle cached blocks when the free ones run out."""
        if n > self.free_blocks and self.cache is not None:
            self.free_blocks += self.cache.evict(n - self.free_blocks)
        self.free_blocks -= n

    def _plan(self, req: Request, left: int, pending: set) -> tuple[int, int, int, int]:
        """Admission plan of a waiting request with ``left`` budget tokens:
        (hit blocks, chunk tokens, new blocks, idle cached blocks it would pin).
        ``pending`` holds blocks registered by earlier members of the same group."""
        hit = idle = 0
        hashes = req._hashes
        if hashes:
            cache = self.cache
            limit = (req.num_known_tokens - 1) // self.block_size
            for h in hashes[:limit]:
                if h in pending:
                    hit += 1
                    continue
                got, was_idle = cache.match((h,))  # type: ignore[union-attr]
                if not got:
                    break
                hit += 1
                idle += was_idle
        c0 = hit * self.block_size
        n = min(req.num_known_tokens - c0, left)
        new = _cdiv(c0 + n, self.block_size) - hit
        for h in hashes[hit:(c0 + n) // self.block_size]:
            pending.add(h)
        return hit, n, new, idle

    # ------------------------------------------------------------ the process
    def run(self) -> Generator[simpy.Event, object, None]:
        """The SimPy process: schedule, wait the step time, apply; forever."""
        env = self.env
        stalls = 0
        while True:
            if self._aborts:
                self._apply_aborts()
            if not self.running and not len(self.waiting):
                self._idle = env.event()
                yield self._idle
                self._idle = None
                continue
            self._preempted = False
            self.policy.on_step(env.now)
            if self._refresh is not None:
                self._refresh()
            chunks, decode = self._schedule_v1() if self.v1 else self._schedule_v0()
            if not chunks and not decode:
                stalls += 1
                if stalls > 10_000 or not self.running:
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
            dt = self.model.step_time(self._prefill_shape(chunks), n_dec,
                                      self.sum_decode_ctx() if n_dec else 0)
            yield env.timeout(dt)
            self.num_steps += 1
            if decode:
                self._advance_decode(1)
                if self._watch_heap:
                    self._collect_watches()
            self._apply_chunks(chunks)
            self._collect_finished()

    # -------------------------------------------------------------- schedule
    def _schedule_v1(self) -> tuple[dict[Request, int], bool]:
        self._reserve_decode_blocks()
        budget = self.max_num_batched_tokens - self.num_decoding
        chunks: dict[Request, int] = {}
        for req in list(self.prefilling):
            if req.status != RUNNING:
                continue
            if budget <= 0:
                break
            n = min(req.num_known_tokens - req.num_computed, budget)
            while True:
                need = (_cdiv(req.num_computed + n, self.block_size) - req.num_blocks
                        - req._shared)
                if need <= self._free() - self._due_blocks():
                    break
                victim = self.policy.victim(self.running)
                if victim._decoding:
                    budget += 1
                budget += chunks.pop(victim, 0)
                self._preempt(victim)
                if victim is req:
                    break
            if req.status != RUNNING:
                break
            self._alloc(need)
            req.num_blocks += need
            self._register(req, req.num_computed + n)
            chunks[req] = n
            budget -= n
        if not self._preempted:
            self._admit(chunks, budget)
        return chunks, self.num_decoding > 0

    def _admit(self, chunks: dict[Request, int], budget: int) -> None:
        """V1 admission of waiting groups with a first chunk each (module docstring); a
        group that could never fit whole is admitted in pieces (:meth:`_fits_empty`)."""
        while len(self.waiting) and budget > 0:
            group = self.waiting.peek()
            fits = False
            if len(self.running) + len(group) <= self.max_num_seqs:
                plan, need, left = self._plan_v1(group, budget)
                fits = need <= self._free() - self._due_blocks()
            if fits:
                self.waiting.pop()
            elif len(group) > 1 and not self._fits_empty(group):
                plan, left = self._piece_v1(group, budget)
                for req, *_ in plan:
                    self.waiting.remove(req)
                if not plan:
                    break
            else:
                break
            for req, hit, n, blocks in plan:
                self._start(req, hit, blocks, n)
                if n:
                    chunks[req] = n
            budget = left
            if len(plan) < len(group):
                break  # the rest of a split group stays at the head

    def _plan_v1(self, group: Sequence[Request], budget: int
                 ) -> tuple[list[tuple[Request, int, int, int]], int, int]:
        """(plan, blocks needed, budget left) to admit ``group`` whole with ``budget``
        tokens: per request (request, hit blocks, chunk tokens, new blocks)."""
        plan, need, pending = [], 0, set()
        for req in group:
            hit, n, blocks, idle = self._plan(req, budget, pending)
            budget -= n
            need += blocks + idle
            plan.append((req, hit, n, blocks))
        return plan, need, budget

    def _piece_v1(self, group: Sequence[Request], budget: int
                  ) -> tuple[list[tuple[Request, int, int, int]], int]:
        """The leading members of ``group`` that fit now, as (plan, budget left)."""
        plan, need, pending = [], 0, set()
        free = self._free() - self._due_blocks()
        seats = self.max_num_seqs - len(self.running)
        for req in group[:seats]:
            if budget <= 0:
                break
            hit, n, blocks, idle = self._plan(req, budget, set(pending))
            if need + blocks + idle > free:
                break
            self._plan(req, budget, pending)
            need += blocks + idle
            budget -= n
            plan.append((req, hit, n, blocks))
        return plan, budget

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

    def _v0_check(self, group: Sequence[Request], tokens: int, lens: list[int],
                  seats: int, free: int) -> list[tuple[int, int, int, int]] | None:
        """The v0 plans of ``group`` if it fits whole next to a prefill batch of
        ``tokens`` tokens and whole lengths ``lens``, with ``seats`` seats and ``free``
        blocks above the watermark; ``None`` if it does not.

        With ``max_paddings`` the batch is padded: vLLM 0.2/0.3 ``Scheduler._schedule``
        measures ``len(seq_lens) * max(seq_lens)`` and the padding over whole sequence
        lengths (``seq.get_len()``), prefix-cached tokens included, so a gang of equal
        prompts never counts as padding however much of it the cache holds."""
        if len(group) > seats:
            return None
        pending: set = set()
        plan = [self._plan(req, req.num_known_tokens, pending) for req in group]
        if self.max_paddings is None:
            if tokens + sum(p[1] for p in plan) > self.max_num_batched_tokens:
                return None
        else:
            new = [*lens, *(r.num_known_tokens for r in group)]
            padded = len(new) * max(new)
            if padded > self.max_num_batched_tokens or padded - sum(new) > self.max_paddings:
                return None
        if sum(p[2] + p[3] for p in plan) > free:
            return None
        return plan

    def _schedule_v0(self) -> tuple[dict[Request, int], bool]:
        chunks: dict[Request, int] = {}
        tokens, lens = 0, []
        while len(self.waiting):
            group = self.waiting.peek()
            whole = self._v0_take(group, tokens, lens)
            if whole is not None:
                self.waiting.pop()
                self._v0_start(group, whole, chunks)
                tokens += sum(p[1] for p in whole)
                lens.extend(r.num_known_tokens for r in group)
                continue
            if len(group) > 1 and not self._fits_empty(group):
                for req in group:  # admit the leading members that fit, one by one
                    plan = self._v0_take((req,), tokens, lens)
                    if plan is None:
                        break
                    self.waiting.remove(req)
                    self._v0_start((req,), plan, chunks)
                    tokens += plan[0][1]
                    lens.append(req.num_known_tokens)
            break
        if chunks:
            return chunks, False
        self._reserve_decode_blocks()
        return chunks, self.num_decoding > 0

    def _v0_take(self, group: Sequence[Request], tokens: int, lens: list[int]
                 ) -> list[tuple[int, int, int, int]] | None:
        """:meth:`_v0_check` against this step's batch so far and the engine's state."""
        seats = self.max_num_seqs - len(self.running)
        if len(group) > seats:
            return None
        return self._v0_check(group, tokens, lens, seats, self._free() - self.watermark_blocks)

    def _v0_start(self, group: Sequence[Request], plan: list[tuple[int, int, int, int]],
                  chunks: dict[Request, int]) -> None:
        for req, (hit, n, blocks, _) in zip(group, plan):
            self._start(req, hit, blocks, n)
            chunks[req] = n

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
    def _start(self, req: Request, hit: int, blocks: int, n: int) -> None:
        """Admit ``req``: share ``hit`` cached blocks, allocate ``blocks`` new ones for a
        first chunk of ``n`` tokens."""
        req.status = RUNNING
        self.running[req] = None
        self.prefilling.append(req)
        pid = req.program_id
        if pid is not None:
            self._program_running[pid] = self._program_running.get(pid, 0) + 1
        if self.cache is not None:
            if req._hashes:
                self.cache.acquire(req._hashes[:hit])
                req._shared = hit
                req.num_computed = hit * self.block_size
            if req.num_preemptions == 0:  # every lookup counts, hit or not (vLLM)
                self.prefix_query_tokens += req.prompt_tokens
                self.prefix_hit_tokens += req.num_computed
                req.num_cached_tokens = req.num_computed
        self._alloc(blocks)
        req.num_blocks += blocks
        self._register(req, req.num_computed + n)

    def _register(self, req: Request, upto: int) -> None:
        """Move the request's newly full prompt blocks (tokens < ``upto``) from private
        to cached, in order (a block another request cached meanwhile is shared)."""
        hashes = req._hashes
        if self.cache is None or not hashes:
            return
        cache = self.cache
        end = min(len(hashes), upto // self.block_size)
        while req._shared < end:
            h = hashes[req._shared]
            if not cache.insert(h, req.program_id):
                cache.acquire((h,))  # computed meanwhile by another request: share it
                self.free_blocks += 1  # and give back the private copy
            req._shared += 1
            req.num_blocks -= 1

    def _release(self, req: Request) -> None:
        """Free a leaving request's private blocks and unreference its cached ones."""
        pid = req.program_id
        if pid is not None:
            self._program_running[pid] -= 1
        if req._shared:
            self.cache.release(req._hashes[:req._shared], self.env.now)  # type: ignore
            req._shared = 0
        self.free_blocks += req.num_blocks
        req.num_blocks = 0

    def _preempt(self, req: Request) -> None:
        if req._decoding:
            self._leave_decode(req)
            if req.output_key is not None:  # its full generated blocks stay cached
                self._register(req, req.num_computed)
        else:
            self.prefilling.remove(req)
        del self.running[req]
        self._release(req)
        req.num_computed = 0
        req.num_preemptions += 1
        req.status = WAITING
        self.num_preemptions += 1
        self._preempted = True
        self.waiting.prepend(req)

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
        """Call ``on_progress`` for the decoding requests that reached their watch."""
        heap = self._watch_heap
        while heap and heap[0][0] <= self.clock:
            _, _, epoch, req = heapq.heappop(heap)
            if epoch != req._epoch or not req._decoding:
                continue
            self.sync(req)
            if req.num_generated == req.watch:
                self.on_progress(req)  # type: ignore[misc]
                self._seq += 1
                self._push_watch(req)

    def cache_generated(self, req: Request) -> None:
        """Register the full blocks a running request has computed so far in the prefix
        cache (its prompt blocks are registered at admission; blocks of generated
        tokens only when ``output_key`` gave them identities). vLLM caches each block as
        it fills (``KVCacheManager.cache_blocks`` after every step); dynasim registers
        them when another request is about to look them up (a Dynasor-CoT probe) and
        when the request is preempted, the two moments a hit on them can happen."""
        if self.cache is None or req.status != RUNNING or not req._hashes:
            return
        self.sync(req)
        self._register(req, req.num_computed)

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
        return full * self.num_decoding + sum(self._phase[(self.clock + i) % bs]
                                              for i in range(rest))

    def _steps_fitting(self, free: int) -> int:
        """Largest number of decode steps whose new blocks fit in ``free`` blocks."""
        n, bs = self.num_decoding, self.block_size
        full = free // n
        k, used = full * bs, full * n
        while used + self._phase[(self.clock + k) % bs] <= free:
            used += self._phase[(self.clock + k) % bs]
            k += 1
        return k

    def _advance_decode(self, k: int) -> None:
        self._alloc(self._blocks_due(k))
        self.clock += k

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

    def _collect_finished(self) -> None:
        heap = self._finish_heap
        while heap and heap[0][0] <= self.clock:
            _, _, epoch, req = heapq.heappop(heap)
            if epoch == req._epoch:
                self._leave_decode(req)
                self._finish(req)

    def _finish(self, req: Request) -> None:
        del self.running[req]
        self._release(req)
        if self._aborts and req in self._aborts:  # the client gave up first: no answer
            self._aborts.remove(req)
            return self._aborted(req)
        req.status = FINISHED
        req.finish_time = self.env.now
        self.policy.on_finish(req, self.env.now)
        if self.on_finish is not None:
            self.on_finish(req)

    def _reject(self, req: Request, why: str) -> None:
        req.status = REJECTED
        req.error = why
        req.finish_time = self.env.now
        self.policy.on_finish(req, self.env.now)
        if self.on_finish is not None:
            self.on_finish(req)

    # ---------------------------------------------------------- decode runs
    def _decode_run(self):
        """Advance up to the next finish or KV exhaustion in one timeout (see module
        docstring); an admissible arrival interrupts at the next step boundary. After a
        preemption only one step is taken, since the victim may be readmitted then;
        otherwise a waiting group that could not be admitted at the start of the run
        cannot be admitted during it (seats and budget are unchanged, free blocks only
        shrink, a head's need never shrinks as its cached blocks are evicted) as long
        as the queue's head stays the same: the run therefore also ends at the first
        step boundary at or after ``policy.order_changes_at(now)`` (SJF aging) and, when
        the order reads the prefix cache (LPM), after the first step that evicts."""
        heap = self._finish_heap
        while heap[0][2] != heap[0][3]._epoch:
            heapq.heappop(heap)
        k = heap[0][0] - self.clock
        watches = self._watch_heap
        while watches and watches[0][2] != watches[0][3]._epoch:
            heapq.heappop(watches)
        if watches:  # stop where a request reaches its watch
            k = max(1, min(k, watches[0][0] - self.clock))
        if self._preempted:  # the victim may be readmitted at the next step boundary
            k = 1
        if self.max_decode_run is not None:
            k = min(k, self.max_decode_run)
        n = self.num_decoding
        free = self._free()
        if self._blocks_due(k) > free:  # largest k whose new blocks fit
            k = self._steps_fitting(free)
        if self._cache_orders and self.cache is not None:
            # LPM re-matches every step: stop after the first step that evicts
            k = min(k, self._steps_fitting(self.free_blocks) + 1)
        s0 = self.sum_decode_ctx()
        alpha = self.model.step_time([], n, s0)
        beta = self.model.step_time([], n, s0 + n) - alpha
        total = k * alpha + beta * k * (k - 1) / 2
        change = self.policy.order_changes_at(self.env.now)
        if change is not None and self.env.now + total > change:
            # the order may change with time alone: stop at the first step boundary
            # at or after that time (where a step-by-step engine would see it)
            k = _steps_covering(alpha, beta, change - self.env.now, k)
            total = k * alpha + beta * k * (k - 1) / 2
        start = self.env.now
        self._leaping = True
        try:
            yield self.env.timeout(total)
            self._leaping = False
        except simpy.Interrupt:
            elapsed = self.env.now - start
            if elapsed < TIE_S:  # it came at the run's start: schedule again with it
                return  # (the same tie resolved the same way step by step)
            j = _steps_covering(alpha, beta, elapsed - TIE_S, k)  # a boundary tie: at it
            rest = j * alpha + beta * j * (j - 1) / 2 - elapsed
            yield self.env.timeout(max(rest, 0.0))
            k = j
        self.num_steps += k
        self._advance_decode(k)
        if self._watch_heap:
            self._collect_watches()
        self._collect_finished()


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
