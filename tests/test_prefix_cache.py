"""The prefix cache's eviction orders: plain LRU (vLLM's free-block queue: least recently
released first, ties deeper blocks first), and program-aware (Dynasor: idle programs'
blocks first, busy programs' blocks only when those run out); which one an engine uses is
its policy's."""

from __future__ import annotations

import random

import pytest

from dynasim.prefix_cache import PrefixCache


@pytest.mark.parametrize("aware", [True, False], ids=["program-aware", "lru"])
@pytest.mark.parametrize("trial", range(100))
def test_eviction_picks_what_the_sorted_rule_picks(trial, aware):
    """The lazy heap evicts exactly the blocks ``sorted(idle, key=(busy, LRU key))[:n]``
    names (plain LRU: ``key=LRU key``), through random releases, re-references and
    evictions."""
    rng = random.Random(trial)
    busy = set(rng.sample(range(6), rng.randint(0, 5)))
    cache = PrefixCache((lambda p: p in busy) if aware else None)
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
            want = sorted(cache._idle, key=lambda h: (aware and cache._owner[h] in busy,
                                                      cache._idle[h]))[:n]
            before = set(cache._idle)
            assert cache.evict(n) == len(want)
            assert before - set(cache._idle) == set(want)
            assert set(cache._idle) <= set(cache._refs)


def test_engine_eviction_order_is_the_policy_s():
    """FCFS and LPM engines evict plain LRU (vLLM, SGLang); gang, SJF and PLAS use
    Dynasor's program-aware order; an instance may switch."""
    import simpy

    from dynasim.engine import Engine
    from dynasim.policies import make_policy
    from tests.helpers import make_profile

    prof = make_profile("v1").model_copy(update={"enable_prefix_caching": True})
    for name, aware in (("fcfs", False), ("lpm", False), ("gang", True), ("sjf", True),
                        ("plas", True), ("priority", False), ("sjf+certaindex", True)):
        eng = Engine(simpy.Environment(), prof, make_policy(name))
        assert (eng.cache._busy is not None) == aware, name
    pol = make_policy("fcfs")
    pol.eviction = "program"
    assert Engine(simpy.Environment(), prof, pol).cache._busy is not None


def test_a_block_computed_twice_keeps_both_copies_while_both_are_in_use():
    """vLLM does not de-duplicate: ``BlockPool.cache_full_blocks`` adds a block whose
    hash is already cached beside the other copy and the request keeps its own block,
    so two running requests that computed the same block hold two blocks. A copy that
    is idle is taken over instead (the request's own copy in use and the idle one
    evictable count as one used block in vLLM too). When the request leaves, its copy
    is freed."""
    import simpy

    from dynasim.engine import Engine
    from dynasim.policies import make_policy
    from dynasim.request import Request
    from tests.helpers import make_profile

    prof = make_profile("v1", kv_capacity_tokens=64 * 16).model_copy(
        update={"enable_prefix_caching": True})
    eng = Engine(simpy.Environment(), prof, make_policy("fcfs"))
    shared, idle, own = ("s", 0), ("i", 1), ("o", 2)
    eng.cache.insert(shared, None)  # in use by another request
    eng.cache.insert(idle, None)
    eng.cache.release([idle], 0.0)  # cached, referenced by nobody
    eng.free_blocks -= 2  # the two cached blocks' memory
    req = Request(0, 0.0, 48, 4)
    req._hashes = (shared, idle, own)
    eng.free_blocks -= 3  # the request computed its three blocks privately
    req.num_blocks = 3
    eng._register(req, 48)
    assert (req._shared, req.num_blocks, req._dups) == (3, 0, 1)
    # used: the other request's block, this request's two copies (shared + own) and
    # the idle block it took over, whose private copy went back: 4 of 64
    assert eng.used_blocks() == 4 and eng.free_blocks == 60
    eng._release(req)
    assert req._dups == 0 and eng.used_blocks() == 1  # only the other request's block
