"""The engine's prefix cache: KV blocks of shared prompt prefixes, reused not recomputed.

Model (vLLM automatic prefix caching, ``vllm/v1/core/kv_cache_manager.py``; SGLang's radix
cache for the eviction order):

* A full prompt block has an identity: the content of every token up to its end. dynasim
  names it by the prompt's segment keys up to that block plus the block index
  (:func:`block_hashes`), or by Mooncake's ``hash_ids`` (each id = 512 tokens, split into
  engine blocks). Equal identities mean equal KV.
* At admission a request looks up its leading blocks; the hits are *shared* (reference
  counted) and their tokens count as computed. At least one prompt token is always
  computed (vLLM caps the hit at ``num_tokens − 1`` so the step can sample).
* A full prompt block is registered in the cache when the request computes it (vLLM
  caches blocks as they are allocated for computed tokens, so a request admitted later in
  the same step already hits them).
* A block nobody references stays cached and counts as free: it is evicted only when an
  allocation needs it. Eviction order, plain LRU (the default): least recently released
  first, and of one release the deepest block first (vLLM's free-block queue,
  ``vllm/v1/core/block_pool.py``: a finished request's blocks are freed in reverse order,
  so its tail goes before its head, as a radix tree evicts leaves before their parents).
  Program-aware (Dynasor's prefix-cache manager, ``busy`` given): blocks of programs with
  no running request first, then that LRU order.
* Identical blocks computed concurrently (a request computes a block another one
  cached after it was admitted, or past a gap in its cached prefix): vLLM keeps both
  copies (no de-duplication: ``BlockPool.cache_full_blocks`` only adds the block to the
  hash's entry; the request's block table keeps its own block). dynasim's engine keeps
  the cache's one identity and counts the second copy as the request's own block until
  it leaves (``KVBlocks._register``, ``Request._dups``), so KV use is vLLM's. Where the
  cached copy is idle, the request takes it over and frees its own: the same count of
  free-or-evictable blocks as vLLM's idle old copy beside the request's new one.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence

from dynasim.workloads.call import Segment

BlockHash = tuple


def block_hashes(prompt: Sequence[Segment] | None, hash_ids: Sequence[int] | None,
                 prompt_tokens: int, block_size: int) -> tuple[BlockHash, ...]:
    """Identities of the full prompt blocks of a request (``prompt_tokens // block_size``
    of them at most), from prompt segments or Mooncake ``hash_ids`` (512 tokens each).

    Returns an empty tuple when the request names no shared content.
    """
    full = prompt_tokens // block_size
    out: list[BlockHash] = []
    if prompt:
        keys: list[str] = []
        seg_end, it = 0, iter(prompt)
        for j in range(full):
            end = (j + 1) * block_size
            while seg_end < end:
                try:
                    key, n = next(it)
                except StopIteration:
                    return tuple(out)
                keys.append(key)
                seg_end += n
            out.append((tuple(keys), j))
    elif hash_ids:
        per = max(1, 512 // block_size)
        for j in range(full):
            i = j // per
            if i >= len(hash_ids):
                break
            out.append((hash_ids[i], j))
    return tuple(out)


class PrefixCache:
    """Reference-counted cached blocks with LRU or program-aware eviction.

    Args:
        busy: ``busy(program_id) -> bool``, True while the program has a running request;
            given, eviction is program-aware; ``None`` (default): plain LRU (module
            docstring).

    Counts are in blocks. ``num_evictable`` blocks are cached but unreferenced (free to
    reuse); referenced blocks are in use.
    """

    def __init__(self, busy: Callable[[int | None], bool] | None = None) -> None:
        self._refs: dict[BlockHash, int] = {}
        self._owner: dict[BlockHash, int | None] = {}
        self._idle: dict[BlockHash, tuple[float, int, int]] = {}  # hash -> LRU key
        self._heap: list[tuple[tuple[float, int, int], BlockHash]] = []  # lazy LRU order
        self._busy = busy
        self._seq = 0
        self.num_evicted = 0

    @property
    def num_evictable(self) -> int:
        """Cached blocks that no request references."""
        return len(self._idle)

    @property
    def num_cached(self) -> int:
        """All cached blocks (referenced or not)."""
        return len(self._refs)

    def match(self, hashes: Sequence[BlockHash]) -> tuple[int, int]:
        """(hit blocks, of which unreferenced): length of the cached leading run."""
        hit = idle = 0
        for h in hashes:
            if h not in self._refs:
                break
            hit += 1
            idle += h in self._idle
        return hit, idle

    def acquire(self, hashes: Sequence[BlockHash]) -> None:
        """Reference cached blocks (a request's hit prefix)."""
        for h in hashes:
            self._refs[h] += 1
            self._idle.pop(h, None)

    def in_use(self, h: BlockHash) -> bool:
        """Whether the cached block ``h`` is referenced by a request."""
        return self._refs.get(h, 0) > 0

    def insert(self, h: BlockHash, program_id: int | None) -> bool:
        """Register a freshly computed block, referenced once. False if already cached
        (the engine then references the cached one: module docstring)."""
        if h in self._refs:
            return False
        self._refs[h] = 1
        self._owner[h] = program_id
        return True

    def release(self, hashes: Sequence[BlockHash], now: float) -> None:
        """Drop one reference from each block; unreferenced ones become evictable with
        last-use time ``now`` (seconds)."""
        for depth, h in enumerate(hashes):
            r = self._refs[h] - 1
            self._refs[h] = r
            if r == 0:
                self._seq += 1
                key = (now, -depth, self._seq)
                self._idle[h] = key
                heapq.heappush(self._heap, (key, h))

    def evict(self, n: int) -> int:
        """Evict up to ``n`` unreferenced blocks (module docstring order); returns the
        number evicted."""
        if n <= 0 or not self._idle:
            return 0
        # the order of sorted(idle, key=(busy(owner), LRU key)), taken from a lazy heap
        # of LRU keys: blocks of busy programs are set aside and used only if the idle
        # programs' blocks run out (then in LRU order), and pushed back otherwise
        heap, idle, busy_of = self._heap, self._idle, self._busy
        gone: list[BlockHash] = []
        busy: list[tuple[tuple[float, int, int], BlockHash]] = []
        while len(gone) < n and heap:
            key, h = heapq.heappop(heap)
            if idle.get(h) != key:
                continue  # re-referenced or evicted since it was pushed
            if busy_of is not None and busy_of(self._owner[h]):
                busy.append((key, h))
            else:
                gone.append(h)
        if len(gone) < n:
            take, busy = busy[:n - len(gone)], busy[n - len(gone):]
            gone += [h for _, h in take]
        for item in busy:
            heapq.heappush(heap, item)
        if len(heap) > 2 * len(idle) + 4096:  # drop stale entries now and then
            out = set(gone)
            self._heap = [(k, h) for h, k in idle.items() if h not in out]
            heapq.heapify(self._heap)
        for h in gone:
            del self._idle[h], self._refs[h], self._owner[h]
        self.num_evicted += len(gone)
        return len(gone)
