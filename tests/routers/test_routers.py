"""Routers: each rule on hand-made replica views (no SimPy), the registry's errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from dynasim.errors import InputError
from dynasim.request import Request
from dynasim.routers import ROUTERS, make_router


@dataclass
class View:
    """A replica as a router sees it: fixed numbers (prefix match per request id)."""

    outstanding: int = 0
    used: int = 0
    total: int = 100
    match: dict = field(default_factory=dict)

    def num_outstanding(self) -> int:
        return self.outstanding

    def kv_blocks_used(self) -> int:
        return self.used

    def kv_blocks_total(self) -> int:
        return self.total

    def prefix_match(self, req: Request) -> int:
        return self.match.get(req.request_id, 0)


def req(i: int = 0, prompt: int = 100, program: int | None = None) -> Request:
    return Request(i, 0.0, prompt, 10, program_id=program)


def test_round_robin_cycles_blind_to_load():
    r = make_router("round-robin")
    views = [View(outstanding=50), View(), View()]
    assert [r.route(req(i), views) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_least_outstanding_lowest_index_on_ties():
    r = make_router("least-outstanding")
    assert r.route(req(), [View(3), View(1), View(1)]) == 1
    assert r.route(req(), [View(0), View(0)]) == 0


def test_least_kv_uses_fractions_then_load():
    r = make_router("least-kv")
    # 30/100 = 0.3 against 50/200 = 0.25: the bigger cache wins though it holds more
    assert r.route(req(), [View(used=30), View(used=50, total=200)]) == 1
    # equal usage: fewer requests in flight
    assert r.route(req(), [View(4, used=10), View(2, used=10), View(2, used=10)]) == 1


def test_prefix_affinity_longest_prefix_above_threshold():
    r = make_router("prefix-affinity", cache_threshold=0.5)
    views = [View(0, used=0), View(5, used=40, match={1: 64}), View(5, used=20, match={1: 32})]
    assert r.route(req(1, prompt=100), views) == 1   # 64 >= 0.5 * 100
    # the best match covers too little of a long prompt: the replica with most free KV
    assert r.route(req(1, prompt=1000), views) == 0
    assert r.route(req(2), views) == 0  # no match anywhere


def test_prefix_affinity_load_cap_sends_to_least_loaded():
    r = make_router("prefix-affinity", balance_abs_threshold=4, balance_rel_threshold=1.5)
    hot = [View(10, match={1: 90}), View(3)]
    assert r.route(req(1), hot) == 1          # 10 - 3 > 4 and 10 > 1.5 * 3
    mild = [View(6, match={1: 90}), View(3)]
    assert r.route(req(1), mild) == 0         # 6 - 3 <= 4: the cache wins


def test_program_affinity_pins_programs_with_a_cap():
    r = make_router("program-affinity", balance_abs_threshold=2, balance_rel_threshold=1.0)
    views = [View(1), View(0)]
    assert r.route(req(0, program=7), views) == 1       # first call: least loaded
    views[1].outstanding = 3
    assert r.route(req(1, program=7), views) == 1       # pinned: 3 - 1 <= 2
    assert r.route(req(2, program=8), views) == 0       # another program: least loaded
    views[1].outstanding = 5
    assert r.route(req(3, program=7), views) == 0       # over the cap: overflow
    assert r.home(7) == 1                                # ... but stays pinned
    views[1].outstanding = 2
    assert r.route(req(4, program=7), views) == 1
    assert r.route(req(5), views) == 0                  # no program: least loaded


@pytest.mark.parametrize("name", list(ROUTERS))
def test_every_router_is_deterministic_and_in_range(name):
    views = [View(i % 3, used=7 * i % 50, match={j: 16 * ((i + j) % 4) for j in range(20)})
             for i in range(4)]
    picks = [[make_router(name).route(req(j, program=j % 3), views) for j in range(20)]
             for _ in range(2)]
    assert picks[0] == picks[1]
    assert all(0 <= i < 4 for i in picks[0])


def test_unknown_router_and_knob_are_input_errors():
    with pytest.raises(InputError) as exc:
        make_router("random")
    assert exc.value.field == "router" and "least-outstanding" in str(exc.value)
    with pytest.raises(InputError) as exc:
        make_router("round-robin", cache_threshold=0.5)
    assert exc.value.field == "cache_threshold"
    with pytest.raises(InputError) as exc:
        make_router("prefix-affinity", cache_threshold=1.5)
    assert exc.value.field == "cache_threshold"
    with pytest.raises(InputError) as exc:
        make_router("program-affinity", balance_rel_threshold=0.5)
    assert exc.value.field == "balance_rel_threshold"
