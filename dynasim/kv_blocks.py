"""KV-block bookkeeping of :class:`dynasim.engine.Engine` (a mixin it inherits; rules in
the engine's module docstring: *KV cache*, *prefix cache*): block identities, admission
plans against the prefix cache, allocation with eviction, registering computed blocks,
releasing a leaving request's blocks, and the counters the routers and summaries read.

Source: vLLM V1 ``vllm/v1/core/kv_cache_manager.py`` (``get_computed_blocks``,
``allocate_slots``, ``free``) and ``vllm/v1/core/block_pool.py`` (``cache_full_blocks``,
the free-block queue).
"""

from __future__ import annotations

from dynasim.decode_set import _cdiv
from dynasim.prefix_cache import block_hashes
from dynasim.request import RUNNING, Request


class KVBlocks:
    """Block accounting of :class:`dynasim.engine.Engine`: it reads and writes the
    engine's ``free_blocks``, ``cache`` (a :class:`~dynasim.prefix_cache.PrefixCache` or
    ``None``), ``block_size``, ``running``, ``prefilling`` and per-request block
    fields."""

    def _block_hashes(self, req: Request) -> tuple:
        """The request's full-block identities (:func:`~dynasim.prefix_cache.block_hashes`;
        with ``output_key``, its generated blocks too). Requests of a program that share
        a prompt share one tuple (a bounded memo keyed by the prompt: less time and
        memory per request; the same values)."""
        prompt = req.prompt
        if req.output_key is not None and prompt:  # output known: hash it too
            key = (prompt, req.prompt_tokens, req.output_key, req.output_tokens)
        elif prompt:
            key = (prompt, req.prompt_tokens)
        else:  # Mooncake hash_ids or nothing: rarely shared, not memoised
            return block_hashes(None, req.hash_ids, req.prompt_tokens, self.block_size)
        memo = self._hash_memo
        got = memo.get(key)
        if got is None:
            if len(memo) >= 1 << 14:
                memo.clear()
            if len(key) == 4:
                got = block_hashes((*prompt, (req.output_key, req.output_tokens)), None,
                                   req.prompt_tokens + req.output_tokens, self.block_size)
            else:
                got = block_hashes(prompt, None, req.prompt_tokens, self.block_size)
            memo[key] = got
        return got

    def used_blocks(self) -> int:
        """KV blocks referenced by requests as of the last applied step (cached-but-idle
        blocks count as free); :meth:`used_blocks_now` also counts the steps of a decode
        run completed by now."""
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
        hashes = req._hashes
        if not hashes:  # fast path: nothing to look up or register
            n = min(req.num_known_tokens, left)
            return 0, n, -(-n // self.block_size), 0
        cache = self.cache
        known = req.num_known_tokens
        limit = (known - 1) // self.block_size
        if not pending:  # one lookup of the cached leading run
            hit, idle = cache.match(hashes[:limit])  # type: ignore[union-attr]
        else:  # blocks earlier members of the group will register count as hits;
            # the others must be cached: one lookup per run of them
            hit = idle = 0
            lead = hashes[:limit]
            i, end = 0, len(lead)
            while i < end:
                if lead[i] in pending:
                    hit += 1
                    i += 1
                    continue
                j = i + 1
                while j < end and lead[j] not in pending:
                    j += 1
                got, was_idle = cache.match(lead[i:j])  # type: ignore[union-attr]
                hit += got
                idle += was_idle
                if got < j - i:
                    break
                i = j
        c0 = hit * self.block_size
        n = min(known - c0, left)
        new = _cdiv(c0 + n, self.block_size) - hit
        pending.update(hashes[hit:(c0 + n) // self.block_size])
        return hit, n, new, idle

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
        to cached, in order; a block another request cached meanwhile is referenced
        and, while another request uses it, this request's copy stays allocated
        (``_dups``) until it leaves."""
        hashes = req._hashes
        if self.cache is None or not hashes:
            return
        cache = self.cache
        end = min(len(hashes), upto // self.block_size)
        while req._shared < end:
            h = hashes[req._shared]
            if not cache.insert(h, req.program_id):
                # cached meanwhile (prefix_cache module docstring): in use by another
                # request, both copies stay allocated, as in vLLM; idle, this request
                # takes it over and frees its copy (the same free count as vLLM's idle
                # old copy beside the request's own)
                if cache.in_use(h):
                    req._dups += 1
                else:
                    self.free_blocks += 1
                cache.acquire((h,))
            req._shared += 1
            req.num_blocks -= 1

    def _release(self, req: Request) -> None:
        """Free a leaving request's private blocks and unreference its cached ones."""
        pid = req.program_id
        if pid is not None:
            self._program_running[pid] -= 1
        if req._shared:
            now = self.env.now if self._now_at is None else self._now_at  # type: ignore
            self.cache.release(req._hashes[:req._shared], now)  # type: ignore
            req._shared = 0
        self.free_blocks += req.num_blocks + req._dups
        req.num_blocks = req._dups = 0

    def _cache_own_blocks(self, req: Request) -> None:
        """At preemption (prefix cache on): give the request's full blocks of known
        tokens (prompt and the tokens it sampled) identities where they have none, and
        cache those it has computed, so that they stay as idle cached blocks and the
        request hits them when it is readmitted (unless evicted meanwhile).

        Source: vLLM V1 hashes every full block of every request from its token ids,
        generated tokens included (``Request.block_hashes``, extended as tokens are
        appended; ``BlockPool.cache_full_blocks``), and ``Scheduler._preempt_request``
        frees the blocks through ``KVCacheManager.free``, which leaves them cached in
        the free queue; readmission finds them with ``get_computed_blocks``. Content
        that no trace names (no prompt segments, no Mooncake ids, tokens not known in
        advance) is the request's own, so only the request itself can hit it, and only
        after a preemption: dynasim names such blocks ``(("#request", request_id),
        index)`` then, not at arrival (the same hits, no work for the requests that
        are never preempted)."""
        hashes = req._hashes
        full = req.num_known_tokens // self.block_size
        if len(hashes) < full:
            key = ("#request", req.request_id)
            req._hashes = hashes = (*hashes, *((key, j) for j in range(len(hashes), full)))
        self._register(req, req.num_computed)

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
