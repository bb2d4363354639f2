"""Inter-program policies on tiny hand-built cases, and the engine's prefix cache."""

from __future__ import annotations

import ast

import pytest
import simpy

from dynasim.engine import Engine
from dynasim.policies import FCFS, make_policy
from dynasim.policies.gang import Gang, ProgramQueue
from dynasim.policies.lpm import LPM, LPM_MAX_QUEUE, LPMQueue
from dynasim.policies.sjf import SJF
from dynasim.prefix_cache import PrefixCache, block_hashes
from dynasim.profiles import Profile
from dynasim.request import Request
from tests.helpers import ROOT, make_profile


def unit_profile(max_num_seqs: int = 2, kv: int = 4096, prefix: bool = False) -> Profile:
    """Every step costs exactly 1 ms, whatever is in it."""
    return Profile(name="unit", model="toy", gpu="none", tensor_parallel_size=1,
                   kv_capacity_tokens=kv, block_size=16, max_num_seqs=max_num_seqs,
                   max_num_batched_tokens=4096, scheduling="v1",
                   enable_prefix_caching=prefix,
                   step_time={"form": "distserve", "prefill": (1.0, 0.0, 0.0),
                              "decode_small_batch": (1.0, 0.0, 0.0),
                              "decode_large_batch": (1.0, 0.0, 0.0)})


def run(profile, policy, reqs, at=None):
    """Submit ``reqs`` (at time 0, or at ``at[i]``) and run to the end."""
    env = simpy.Environment()
    done = []
    eng = Engine(env, profile, policy, on_finish=done.append)

    def feed():
        for i, r in enumerate(reqs):
            t = 0.0 if at is None else at[i]
            if t > env.now:
                yield env.timeout(t - env.now)
            eng.submit(r)
    env.process(feed())
    env.run()
    return done, eng


def program_finish(done):
    out = {}
    for r in done:
        out[r.program_id] = max(out.get(r.program_id, 0.0), r.finish_time)
    return out


# ------------------------------------------------------------------- gang
def paper_example():
    # Dynasor App. D.3: programs A (requests of 4 ms) and B (5 ms), batch size 2, queued
    # interleaved A1, B1, A2, B2. One step = 1 ms; a request with O output tokens takes
    # O steps (its prefill step samples the first token).
    def a(i):
        return Request(i, 0.0, 1, 4, program_id=0)

    def b(i):
        return Request(i, 0.0, 1, 5, program_id=1)

    return [a(0), b(1), a(2), b(3)]


def test_paper_gang_example_fcfs_interleaved_mean_9ms():
    done, _ = run(unit_profile(), FCFS(), paper_example())
    fin = program_finish(done)
    assert fin == pytest.approx({0: 0.008, 1: 0.010})
    assert sum(fin.values()) / 2 == pytest.approx(0.009)


def test_paper_gang_example_gang_mean_6_5ms():
    done, _ = run(unit_profile(), Gang(), paper_example())
    fin = program_finish(done)
    assert fin == pytest.approx({0: 0.004, 1: 0.009})
    assert sum(fin.values()) / 2 == pytest.approx(0.0065)


def test_program_queue_groups_and_prepend():
    q = ProgramQueue(key=lambda r: r.program_id)
    rs = [Request(i, 0.0, 1, 1, program_id=p) for i, p in enumerate([1, 0, 1, 0])]
    for r in rs:
        q.push(r)
    assert [r.request_id for r in q.peek()] == [1, 3]  # program 0 first, whole group
    assert len(q.pop()) == 2 and len(q) == 2
    q.prepend(Request(9, 0.0, 1, 1, program_id=5))     # preempted: goes first
    assert [r.request_id for r in q.pop()] == [9]
    assert [r.request_id for r in q.pop()] == [0, 2]
    with pytest.raises(IndexError):
        q.peek()


# -------------------------------------------------------------------- SJF
class FakeProgram:
    def __init__(self, pid, arrival, knob_left, done=0, tokens=0):
        self.program_id, self.arrival_time = pid, arrival
        self._left, self.calls_done, self.output_tokens_done = knob_left, done, tokens

    def knob_allowed(self):
        return self._left + self.calls_done


def test_sjf_orders_by_remaining_knob_times_own_tokens_per_step():
    sjf = SJF()
    # remaining = knob left x own tokens/step: 10 x 100 = 1000 vs 2 x 300 = 600
    sjf.programs = {0: FakeProgram(0, 0.0, 10, done=1, tokens=100),
                    1: FakeProgram(1, 0.5, 2, done=1, tokens=300)}
    assert sjf.estimate(sjf.programs[0]) == 1000 and sjf.estimate(sjf.programs[1]) == 600
    q = sjf.new_queue()
    q.push(Request(0, 0.0, 1, 1, program_id=0))
    q.push(Request(1, 0.5, 1, 1, program_id=1))
    sjf.on_step(1.0)
    q.refresh()
    assert q.peek()[0].program_id == 1  # shorter job first despite arriving later


def test_sjf_aging_promotes_a_starving_program():
    sjf = SJF(aging_s=30.0)
    sjf.programs = {0: FakeProgram(0, 0.0, 50, done=1, tokens=100),   # long, old
                    1: FakeProgram(1, 25.0, 1, done=1, tokens=10)}   # short, new
    q = sjf.new_queue()
    q.push(Request(0, 0.0, 1, 1, program_id=0))
    q.push(Request(1, 25.0, 1, 1, program_id=1))
    sjf.on_step(29.9)
    q.refresh()
    assert q.peek()[0].program_id == 1  # SJF order while nobody starves
    sjf.on_step(30.0)
    q.refresh()
    assert q.peek()[0].program_id == 0  # waited 30 s: served first
    assert sjf.priority(q.peek()[0]) == 0


def test_sjf_before_any_finish_uses_run_mean_tokens():
    sjf = SJF()
    p = FakeProgram(0, 0.0, 4)
    assert sjf.estimate(p) == 4.0  # 1 token/step prior when nothing finished
    r = Request(0, 0.0, 1, 30)
    r.status = "finished"
    sjf.on_finish(r, 1.0)
    assert sjf.estimate(p) == 120.0


# ------------------------------------------------------ preemption victims
def victim_case(policy):
    """Running in admission order: a0, b1, a2, b3 of programs A (id 0, arrived 0 s,
    50 calls left) and B (id 1, arrived 1 s, 1 call left). vLLM (FCFS) preempts the last
    admitted, b3."""
    for prog in (FakeProgram(0, 0.0, 50, done=1, tokens=100),
                 FakeProgram(1, 1.0, 1, done=1, tokens=100)):
        policy.on_program_arrival(prog, prog.arrival_time)
    reqs = [Request(i, 0.0, 1, 1, program_id=i % 2) for i in range(4)]
    return {r: None for r in reqs}, reqs


def test_fcfs_victim_is_the_last_admitted():
    running, reqs = victim_case(FCFS())
    assert FCFS().victim(running) is reqs[3]


def test_gang_victim_is_the_latest_program_s_last_admitted():
    gang = Gang()
    running, reqs = victim_case(gang)
    assert gang.victim(running) is reqs[3]  # B arrived last: its last admitted
    gang.programs[0].arrival_time = 2.0     # now A arrived last: a2, not b3
    assert gang.victim(running) is reqs[2]


def test_sjf_victim_is_the_longest_non_starving_program():
    sjf = SJF(aging_s=30.0)
    running, reqs = victim_case(sjf)
    sjf.on_step(10.0)
    assert sjf.victim(running) is reqs[2]  # A: 50 calls left x 100 tokens, the longest
    sjf.on_step(30.0)                      # A has waited 30 s: starving, kept running
    assert sjf.victim(running) is reqs[3]


def test_gang_preempts_the_later_program_through_the_engine():
    # 4 blocks; program 0 (arrived first) and program 1 each run one 16-token request;
    # when both need a third block, gang preempts program 1's request although it was
    # admitted first (FCFS would preempt program 0's, the last admitted)
    prof = unit_profile(max_num_seqs=4, kv=64)
    gang, fcfs = Gang(), FCFS()
    for pol in (gang, fcfs):
        pol.on_program_arrival(FakeProgram(0, 0.0, 1), 0.0)
        pol.on_program_arrival(FakeProgram(1, 0.5, 1), 0.5)
    runs = {}
    for pol in (gang, fcfs):
        reqs = [Request(0, 0.0, 16, 40, program_id=1), Request(1, 0.0, 16, 40, program_id=0)]
        run(prof, pol, reqs)
        runs[pol.name] = [r.num_preemptions for r in reqs]
    assert runs == {"gang": [1, 0], "fcfs": [0, 1]}


# -------------------------------------------------------------------- LPM
def test_lpm_serves_longest_cached_prefix_first_ties_in_arrival_order():
    match = {0: 0, 1: 64, 2: 64, 3: 16}
    q = LPMQueue(lambda r: match[r.request_id])
    for i in range(4):
        q.push(Request(i, 0.0, 100, 1))
    assert [q.pop()[0].request_id for _ in range(4)] == [1, 2, 3, 0]


def test_lpm_through_the_engine_prefix_cache():
    # one seat: X0 (prefix "a") runs; Y (prefix "b") then X1 (prefix "a") wait. When X0
    # finishes, the cache holds "a": LPM serves X1 before Y; FCFS serves Y first.
    prof = unit_profile(max_num_seqs=1, prefix=True)
    order = {}
    for pol in (LPM(), FCFS()):
        reqs = [Request(0, 0.0, 72, 5, prompt=(("a", 64), ("q0", 8))),
                Request(1, 0.001, 72, 5, prompt=(("b", 64), ("q1", 8))),
                Request(2, 0.002, 72, 5, prompt=(("a", 64), ("q2", 8)))]
        run(prof, pol, reqs, at=[r.arrival_time for r in reqs])
        order[pol.name] = [r.request_id for r in sorted(reqs, key=lambda r:
                                                          r.first_token_time)]
        if pol.name == "lpm":
            assert reqs[2].num_cached_tokens == 64
    assert order == {"lpm": [0, 2, 1], "fcfs": [0, 1, 2]}


def test_lpm_falls_back_to_fcfs_above_128_waiting():
    q = LPMQueue(lambda r: r.request_id)  # later requests match more
    for i in range(LPM_MAX_QUEUE + 1):
        q.push(Request(i, 0.0, 100, 1))
    assert q.peek()[0].request_id == 0
    q.pop()
    assert q.peek()[0].request_id == LPM_MAX_QUEUE  # back to matching


def test_policy_names():
    assert make_policy("certaindex").label == "sjf+certaindex"
    assert make_policy("gang+certaindex").label == "gang+certaindex"
    assert make_policy("certaindex+lpm").label == "lpm+certaindex"
    assert make_policy("certaindex", inter="gang").label == "gang+certaindex"
    from dynasim.errors import InputError
    for bad in ("lpm+gang", "nope", "certaindex+curve"):
        with pytest.raises(InputError):
            make_policy(bad)


# ----------------------------------------------------------- prefix cache
def test_block_hashes_share_only_equal_prefixes():
    a = block_hashes((("tmpl", 40), ("q1", 8)), None, 48, 16)
    b = block_hashes((("tmpl", 40), ("q2", 8)), None, 48, 16)
    assert len(a) == 3 and a[:2] == b[:2] and a[2] != b[2]
    m = block_hashes(None, (7, 8), 600, 16)
    assert len(m) == 37 and m[31] == (7, 31) and m[32] == (8, 32)


def test_prefix_cache_refcounts_and_program_aware_lru_eviction():
    busy = {1}
    c = PrefixCache(lambda p: p in busy)
    for h, p in (("a", 1), ("b", 2), ("c", 2)):
        assert c.insert(h, p)
    assert not c.insert("a", 3)
    c.release(["a"], now=1.0)
    c.release(["b"], now=2.0)
    c.release(["c"], now=3.0)
    assert c.num_evictable == 3 and c.match(["a", "b", "x"]) == (2, 2)
    c.acquire(["c"])
    assert c.num_evictable == 2
    assert c.evict(1) == 1  # "b": its program is idle, though "a" is older
    assert c.match(["b"]) == (0, 0) and c.match(["a"]) == (1, 1)


def test_engine_prefix_hits_skip_prefill_and_count():
    # prefill costs 10 ms + 0.1 ms/token (tests.helpers.make_profile), so a skipped
    # prefill shows in the TTFT: the first request computes 72 tokens (17.2 ms); the
    # others, alone later, hit the 4 full blocks (64 tokens) and compute 8 (10.8 ms)
    prof = make_profile("v1", max_num_seqs=8).model_copy(
        update={"enable_prefix_caching": True})
    prompt = (("tmpl", 64), ("q", 8))
    reqs = [Request(i, 0.0, 72, 2, program_id=0, prompt=prompt) for i in range(3)]
    done, eng = run(prof, FCFS(), reqs, at=[0.0, 0.100, 0.200])
    assert [r.num_cached_tokens for r in reqs] == [0, 64, 64]
    assert [r.first_token_time - t for r, t in zip(reqs, (0.0, 0.1, 0.2))] \
        == pytest.approx([0.0172, 0.0108, 0.0108])
    assert eng.prefix_query_tokens == 216 and eng.prefix_hit_tokens == 128
    # all requests gone: cached blocks are idle (free), no private block leaked
    assert eng.free_blocks + eng.cache.num_evictable == eng.total_blocks
    assert eng.used_blocks() == 0


def test_engine_same_step_siblings_share_blocks():
    prof = unit_profile(max_num_seqs=8, prefix=True)
    prompt = (("tmpl", 64),)
    reqs = [Request(i, 0.0, 64, 3, program_id=0, prompt=prompt) for i in range(4)]
    done, eng = run(prof, FCFS(), reqs)
    # vLLM caches blocks as they are allocated: siblings admitted later in the same
    # step hit all but the last block (hit capped at num_tokens - 1)
    assert sorted(r.num_cached_tokens for r in done) == [0, 48, 48, 48]


def test_eviction_under_pressure_frees_idle_blocks():
    # 8 blocks in all: each request needs 5 (4 prompt + 1 decode); distinct prefixes
    prof = unit_profile(max_num_seqs=1, kv=128, prefix=True)
    reqs = [Request(i, 0.0, 64, 2, prompt=((f"p{i}", 64),)) for i in range(3)]
    done, eng = run(prof, FCFS(), reqs)
    assert len(done) == 3 and all(r.status == "finished" for r in done)
    assert eng.cache.num_evicted >= 4
    assert eng.free_blocks + eng.cache.num_evictable == eng.total_blocks


# --------------------------------------------------------- no SimPy there
POLICY_MODULES = ("policies/base", "policies/fcfs", "policies/gang", "policies/sjf",
                  "policies/lpm", "policies/plas", "policies/priority", "policies/intra_program", "policies/registry",
                  "certaindex",
                  "workloads/program", "workloads/call", "experiments/calibration",
                  "experiments/batch")


@pytest.mark.parametrize("module", POLICY_MODULES)
def test_policy_modules_do_not_import_simpy(module):
    src = (ROOT / "dynasim" / f"{module}.py").read_text()
    names = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
            if node.module in ("dynasim.engine", "dynasim.simulation"):
                names.add("simpy")
    assert "simpy" not in names
