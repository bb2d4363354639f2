"""``replay.testing.vllm_server.VLLMServer`` starts a real vLLM server that does what the replay
harness relies on. Skipped only when no vLLM environment exists; never faked."""

from __future__ import annotations

import os

import pytest

from tests.vllm_fixture import request_json


def _complete(server, **fields):
    body = {"model": server.model, "prompt": "Use 4 6 8 2 to make 24.", "max_tokens": 16,
            "ignore_eos": True, **fields}
    return request_json(f"{server.base_url}/v1/completions", body)


def test_health_and_models(vllm_server):
    status, _ = request_json(f"{vllm_server.base_url}/health")
    assert status == 200
    status, models = request_json(f"{vllm_server.base_url}/v1/models")
    assert status == 200
    assert [m["id"] for m in models["data"]] == ["tiny-llama"] == [vllm_server.model]


def test_completion_token_counts(vllm_server):
    status, out = _complete(vllm_server)
    assert status == 200, out
    assert out["usage"]["completion_tokens"] == 16  # ignore_eos: exactly max_tokens
    assert "cached_tokens" in out["usage"]["prompt_tokens_details"]


def test_priority_accepted(vllm_server):
    status, out = _complete(vllm_server, priority=3)
    assert status == 200, out
    status, out = _complete(vllm_server, priority=1.5)  # vLLM wants an integer
    assert status == 400, out


def test_token_id_prompt(vllm_server):
    status, out = _complete(vllm_server, prompt=[(7 * i) % 900 + 5 for i in range(100)],
                            max_tokens=4)
    assert status == 200, out
    assert out["usage"]["prompt_tokens"] == 100  # token ids go in as given
    assert out["usage"]["completion_tokens"] == 4


def test_tokenize(vllm_server):
    status, out = request_json(f"{vllm_server.base_url}/tokenize",
                               {"model": vllm_server.model, "prompt": "(8 - 6) * (4 + 2) = 12"})
    assert status == 200, out
    assert out["count"] == len(out["tokens"]) > 0
    assert all(isinstance(t, int) for t in out["tokens"])


def test_chat_completion(vllm_server):
    status, out = request_json(f"{vllm_server.base_url}/v1/chat/completions",
                               {"model": vllm_server.model, "max_tokens": 8, "ignore_eos": True,
                                "priority": 2,
                                "messages": [{"role": "user", "content": "Solve 4 6 8 2"}]})
    assert status == 200, out
    assert out["usage"]["completion_tokens"] == 8


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_pin_cpus_splits_engine_core_from_the_front_end():
    """pin_cpus on a process group shaped like vLLM's: a leader (the API server) and
    children named VLLM::EngineCore and VLLM::Worker, each with an extra thread; every
    thread lands on its CPUs, and unpin gives every thread back what it had."""
    import subprocess
    import sys
    import time

    from replay.testing.vllm_server import ENGINE_PROCESSES, VLLMServer

    def child(name):
        return ("import threading,time\n"
                f"open('/proc/self/comm','w').write({name!r})\n"
                "threading.Thread(target=time.sleep,args=(30,),daemon=True).start()\n"
                "time.sleep(30)\n")

    leader = "import subprocess,sys,time\n" + "".join(
        f"subprocess.Popen([sys.executable,'-c',{child(n)!r}])\n"
        for n in ("VLLM::EngineCore", "VLLM::Worker")) + "time.sleep(30)\n"
    cpus = sorted(os.sched_getaffinity(0))
    server = VLLMServer()
    server.process = subprocess.Popen([sys.executable, "-c", leader], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            procs = server.group_processes()
            eng = [p for p, c in procs.items() if c.startswith(ENGINE_PROCESSES)]
            if len(eng) == 2 and all(len(os.listdir(f"/proc/{p}/task")) >= 2 for p in eng):
                break
            time.sleep(0.05)
        procs = server.group_processes()
        tids = {int(t): p for p in procs for t in os.listdir(f"/proc/{p}/task")}
        os.sched_setaffinity(next(iter(tids)), {cpus[1]})  # a binding of its own
        before = {t: os.sched_getaffinity(t) for t in tids}
        done = server.pin_cpus({cpus[0]}, {cpus[1]})
        assert len(done) == 3 and server.pinned == done
        for tid, pid in tids.items():
            comm = procs[pid]
            want = {cpus[0]} if comm.startswith(ENGINE_PROCESSES) else {cpus[1]}
            assert os.sched_getaffinity(tid) == want, (comm, tid)
        server.unpin()  # every thread gets back what it had, its own binding included
        assert {t: os.sched_getaffinity(t) for t in tids} == before
        assert server.pinned == {}
    finally:
        os.killpg(server.process.pid, 9)
        server.process.wait()
        server.process = None


def test_unknown_executor_is_refused():
    from replay.testing.vllm_server import VLLMServer

    with pytest.raises(ValueError, match="executor must be 'uni' or 'mp'"):
        VLLMServer(executor="ray")
