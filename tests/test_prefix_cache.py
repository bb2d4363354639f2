"""The prefix cache's eviction order: idle programs' blocks first, least recently used
first (ties: deeper blocks first), busy programs' blocks only when those run out."""

from __future__ import annotations

import random

import pytest

from dynasim.prefix_cache import PrefixCache


@pytest.mark.parametrize("trial", range(200))
def test_eviction_picks_what_the_sorted_rule_picks(trial):
    """The lazy heap evicts exactly the blocks ``sorted(idle, key=(busy, LRU key))[:n]``
    names, through random releases, re-references and evictions."""
    rng = random.Random(trial)
    busy = set(rng.sample(range(6), rng.randint(0, 5)))
    cache = PrefixCache(lambda p: p in busy)
    for i in range(60):
        cache.insert((("k", i), i), rng.randrange(6))
    t = 0.0
    for _ in range(40):
        t += 1.0
        op = rng.random()
        held = [h for h, r in cache._refs.items() if r > 0]
        if op < 0.5 and held:
            cache.release(rng.sample(held, min(len(held), rng.randint(1, 5))), t)
        elif op < 0.7 and cache._idle:
            cache.acquire([rng.choice(sorted(cache._idle))])
        else:
            n = rng.randint(1, 6)
            want = sorted(cache._idle, key=lambda h: (cache._busy(cache._owner[h]),
                                                      cache._idle[h]))[:n]
            before = set(cache._idle)
            assert cache.evict(n) == len(want)
            assert before - set(cache._idle) == set(want)
            assert set(cache._idle) <= set(cache._refs)
