"""Eager dispatch in the replay harness: the samples a program no longer needs after its
detect step are aborted (streams closed), recorded as the simulator records them. The
stub streams at a scripted pace, so the timing is checkable; test_replay_vllm.py checks
on the real server that aborted samples stop generating."""

from __future__ import annotations

import asyncio
import time

from dynasim.policies import make_policy
from dynasim.workloads.call import Call
from dynasim.workloads.program import ProgramSpec
from replay.dispatcher import Replay
from replay.journal import Journal, read_records
from replay.prompts import PromptBuilder
from replay.testing.stub import StubServer


def _spec(qid: str) -> ProgramSpec:
    # 8 samples that all agree: 4 short (10 tokens) issued first, 4 long (300 tokens)
    calls = tuple(Call((("t", 16),), 10 if i < 4 else 300, "x", True) for i in range(8))
    return ProgramSpec(qid, "sc", calls, 1)


def test_eager_replay_aborts_the_samples_a_certain_program_no_longer_needs(tmp_path):
    policy = make_policy("fcfs+certaindex@eager", cap=8, detect_at=4, threshold=0.5)

    async def run():
        rep = Replay(url, "stub", policy, Journal(tmp_path, {}, programs=True),
                     PromptBuilder(range(3, 259)))
        t0 = time.perf_counter()
        summary = await rep.run(specs=[_spec("a"), _spec("b")], arrival_times=[0.0, 0.05],
                                deadlines=[10.0, 10.0])
        return summary, time.perf_counter() - t0

    with StubServer(token_delay_ms=5) as url:
        summary, wall = asyncio.run(run())
    req, progs = read_records(tmp_path)
    assert len(req) == 16 and len(progs) == 2
    aborted = req[req["error"] == "aborted"]
    assert len(aborted) == 8 and (aborted["asked_output_tokens"] == 300).all()
    assert (aborted["output_tokens"] < 100).all()  # stopped early, not run to 300
    assert (req.loc[req["error"] == "", "output_tokens"] == 10).all()
    assert progs["aborted_calls"].tolist() == [4, 4] and progs["knob"].tolist() == [4, 4]
    assert (progs["latency"] < 0.6).all() and wall < 1.2  # 300 tokens take 1.5 s
    assert summary["num_programs"] == 2
