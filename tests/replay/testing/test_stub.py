"""The fault-injecting vLLM stand-in (replay/testing/stub.py), driven over HTTP with httpx."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

httpx = pytest.importorskip("httpx")

from replay.testing.stub import FAULT_KINDS, StubServer, fault_for, fault_status, tokenize  # noqa: E402
from tests.helpers import ROOT  # noqa: E402

SEED = 7
STALL_S = 3.0
SLOW_S = 0.4


def _body(max_tokens=4, prompt=(11, 12, 13, 14, 15), stream=True, usage=True, **extra):
    body = {"model": "stub", "prompt": list(prompt) if not isinstance(prompt, str) else prompt,
            "max_tokens": max_tokens, "stream": stream, "ignore_eos": True, **extra}
    if stream:
        body["stream_options"] = {"include_usage": usage}
    return body


def _events(lines):
    """The data payloads of SSE lines (blank separator lines dropped)."""
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


def _id_for(kind, rate=1.0, kinds=FAULT_KINDS, seed=SEED, start=0):
    for i in range(start, start + 10_000):
        rid = f"req-{i}"
        if fault_for(rid, seed, rate, kinds) == kind:
            return rid
    raise AssertionError(f"no id gets {kind}")


@pytest.fixture(scope="module")
def stub():
    with StubServer() as base_url:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            yield client


@pytest.fixture(scope="module")
def faulty():
    """Every completion request gets a fault, chosen by fault_for(id, SEED, 1.0, FAULT_KINDS)."""
    server = StubServer(fault_rate=1.0, seed=SEED, stall_s=STALL_S, slow_first_byte_s=SLOW_S)
    with server as base_url:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            yield server, client


def test_cli_prints_listening_line_first():
    root = ROOT
    proc = subprocess.Popen([sys.executable, "-m", "replay.testing.stub", "--port", "0"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert re.fullmatch(r"listening on http://127\.0\.0\.1:\d+\n", line)
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        proc.stdout.close()
        proc.stderr.close()


def test_health_models_tokenize(stub):
    health = stub.get("/health")
    assert health.status_code == 200 and health.content == b""
    models = stub.get("/v1/models").json()
    assert models["object"] == "list"
    assert models["data"][0]["id"] == "stub" and models["data"][0]["max_model_len"] == 4096
    tok = stub.post("/tokenize", json={"model": "stub", "prompt": "ab é"}).json()
    assert tok == {"count": 5, "max_model_len": 4096, "tokens": [100, 101, 35, 198, 172]}
    assert tok["tokens"] == tokenize("ab é")


def test_streaming_completion_format(stub):
    prompt = list(range(3, 40))
    with stub.stream("POST", "/v1/completions", json=_body(max_tokens=6, prompt=prompt),
                     headers={"X-Request-Id": "stream-1"}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-request-id"] == "stream-1"
        events = _events(list(resp.iter_lines()))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    tokens, usage = chunks[:-1], chunks[-1]
    assert len(tokens) == 6
    for i, chunk in enumerate(tokens):
        assert chunk["id"] == "cmpl-stream-1" and chunk["object"] == "text_completion"
        assert chunk["model"] == "stub" and chunk["usage"] is None
        (choice,) = chunk["choices"]
        assert choice["text"] == " t" and choice["index"] == 0
        assert choice["finish_reason"] == ("length" if i == 5 else None)
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 6
    assert usage["usage"]["prompt_tokens"] == len(prompt)
    assert usage["usage"]["total_tokens"] == len(prompt) + 6


def test_streaming_without_usage_and_keep_alive(stub):
    # Many streams on one pooled connection: chunked bodies end cleanly.
    for _ in range(20):
        with stub.stream("POST", "/v1/completions",
                         json=_body(max_tokens=3, usage=False)) as resp:
            events = _events(list(resp.iter_lines()))
        assert len(events) == 4 and events[-1] == "[DONE]"
        assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"


def test_non_streaming_completion(stub):
    resp = stub.post("/v1/completions", json=_body(max_tokens=5, prompt="héllo", stream=False),
                     headers={"X-Request-Id": "plain-1"})
    assert resp.status_code == 200
    out = resp.json()
    assert out["id"] == "cmpl-plain-1" and out["object"] == "text_completion"
    assert out["choices"][0]["text"] == " t" * 5
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"] == {"prompt_tokens": 6, "total_tokens": 11, "completion_tokens": 5,
                            "prompt_tokens_details": None}


@pytest.mark.parametrize("body, status", [
    ({"model": "stub", "prompt": [1, 2], "max_tokens": 0}, 400),
    ({"model": "stub", "prompt": [1, 2], "max_tokens": 4, "priority": "high"}, 400),
    ({"model": "stub", "prompt": [1, 2], "max_tokens": 4096}, 400),
    ({"model": "other", "prompt": [1, 2], "max_tokens": 4}, 404),
    ({"model": "stub", "prompt": [1, 2], "max_tokens": 4, "stream_options": {}}, 400),
])
def test_bad_requests_get_vllm_errors(stub, body, status):
    resp = stub.post("/v1/completions", json=body)
    assert resp.status_code == status
    err = resp.json()
    assert err["object"] == "error" and err["code"] == status and err["message"]


def test_priority_policy_accepts_priorities(stub):
    resp = stub.post("/v1/completions", json=_body(stream=False, priority=-3))
    assert resp.status_code == 200


def test_fcfs_policy_rejects_priority():
    with StubServer(scheduling_policy="fcfs") as base_url:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            resp = client.post("/v1/completions", json=_body(priority=1))
            assert resp.status_code == 400
            assert resp.json() == {
                "object": "error", "message": "Got priority 1 but Priority scheduling is not "
                "enabled.", "type": "BadRequestError", "param": None, "code": 400}
            ok = client.post("/v1/completions", json=_body(stream=False, priority=0))
            assert ok.status_code == 200


def test_request_log_records_ids_and_priorities(stub):
    stub.delete("/stub/log")
    for i, priority in enumerate([None, 0, 5]):
        extra = {} if priority is None else {"priority": priority}
        body = _body(max_tokens=2 + i, prompt=[9] * (i + 1), **extra)
        with stub.stream("POST", "/v1/completions", json=body,
                         headers={"X-Request-Id": f"log-{i}"}) as resp:
            resp.read()
    stub.post("/v1/completions", json={"prompt": [1], "max_tokens": 1, "priority": 1.5})
    log = stub.get("/stub/log").json()
    assert log[:3] == [
        {"request_id": f"log-{i}", "fault": None, "status": 200, "prompt_tokens": i + 1,
         "max_tokens": 2 + i, "priority": p} for i, p in enumerate([None, 0, 5])]
    assert log[3]["status"] == 400 and log[3]["request_id"].startswith("stub-")


def test_timing_follows_delays():
    with StubServer(token_delay_ms=20, first_token_delay_ms=100) as base_url:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            t0 = time.monotonic()
            arrivals = []
            with client.stream("POST", "/v1/completions", json=_body(max_tokens=5)) as resp:
                for line in resp.iter_lines():
                    if line.startswith("data: "):
                        arrivals.append(time.monotonic() - t0)
            assert len(arrivals) == 7
            assert 0.1 <= arrivals[0] < 0.5
            assert arrivals[4] - arrivals[0] >= 4 * 0.02 - 0.005
            t0 = time.monotonic()
            client.post("/v1/completions", json=_body(max_tokens=5, stream=False))
            assert time.monotonic() - t0 >= 0.1 + 4 * 0.02 - 0.005


def test_fault_for_is_deterministic_and_near_rate():
    ids = [f"request-{i}" for i in range(2000)]
    first = [fault_for(rid, 3, 0.2, FAULT_KINDS) for rid in ids]
    assert first == [fault_for(rid, 3, 0.2, FAULT_KINDS) for rid in ids]
    assert first != [fault_for(rid, 4, 0.2, FAULT_KINDS) for rid in ids]
    faulty = [k for k in first if k is not None]
    assert 0.16 <= len(faulty) / len(ids) <= 0.24
    for kind in FAULT_KINDS:
        assert 40 <= faulty.count(kind) <= 130
    assert all(fault_for(rid, 3, 0.0, FAULT_KINDS) is None for rid in ids)
    assert all(fault_for(rid, 3, 1.0, ("stall",)) == "stall" for rid in ids)
    assert all(fault_for(rid, 3, 1.0, ()) is None for rid in ids)
    # The same id keeps its kind as the rate grows (the draw is shared).
    assert all(fault_for(rid, 3, 0.5, FAULT_KINDS) == k for rid, k in zip(ids, first) if k)


def test_fault_5xx(faulty):
    server, client = faulty
    seen = set()
    start = 0
    while seen != {500, 503}:
        rid = _id_for("5xx", start=start)
        start = int(rid.split("-")[1]) + 1
        resp = client.post("/v1/completions", json=_body(), headers={"X-Request-Id": rid})
        assert resp.status_code == fault_status(rid, SEED)
        err = resp.json()
        assert err["object"] == "error" and err["code"] == resp.status_code
        seen.add(resp.status_code)


def test_fault_reset_breaks_the_stream_midway(faulty):
    server, client = faulty
    rid = _id_for("reset")
    events = []
    with pytest.raises(httpx.TransportError):
        with client.stream("POST", "/v1/completions", json=_body(max_tokens=8),
                           headers={"X-Request-Id": rid}) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
    assert 1 <= len(events) < 8
    assert all(e["choices"][0]["finish_reason"] is None for e in events)


def test_fault_malformed_sends_unparsable_line(faulty):
    server, client = faulty
    rid = _id_for("malformed")
    with client.stream("POST", "/v1/completions", json=_body(max_tokens=8),
                       headers={"X-Request-Id": rid}) as resp:
        assert resp.status_code == 200
        events = _events(list(resp.iter_lines()))
    assert "[DONE]" not in events
    json.loads(events[0])
    with pytest.raises(json.JSONDecodeError):
        json.loads(events[-1])


def test_fault_stall_trips_the_read_timeout(faulty):
    server, client = faulty
    rid = _id_for("stall")
    t0 = time.monotonic()
    with httpx.Client(base_url=str(client.base_url),
                      timeout=httpx.Timeout(10, read=1.0)) as short:
        with pytest.raises(httpx.ReadTimeout):
            with short.stream("POST", "/v1/completions", json=_body(max_tokens=8),
                              headers={"X-Request-Id": rid}) as resp:
                assert resp.status_code == 200
                for _ in resp.iter_lines():
                    pass
    assert 1.0 <= time.monotonic() - t0 < STALL_S


def test_fault_slow_succeeds_late(faulty):
    server, client = faulty
    rid = _id_for("slow")
    t0 = time.monotonic()
    with client.stream("POST", "/v1/completions", json=_body(max_tokens=4),
                       headers={"X-Request-Id": rid}) as resp:
        first = None
        lines = []
        for line in resp.iter_lines():
            first = first or time.monotonic() - t0
            lines.append(line)
    assert first >= SLOW_S
    events = _events(lines)
    assert events[-1] == "[DONE]" and len(events) == 6
    assert json.loads(events[-2])["usage"]["completion_tokens"] == 4


def test_fault_log_matches_fault_for(faulty):
    server, client = faulty
    client.delete("/stub/log")
    ids = [_id_for("5xx"), _id_for("slow")]
    for rid in ids:
        client.post("/v1/completions", json=_body(stream=False, priority=2),
                    headers={"X-Request-Id": rid})
    log = server.request_log()
    assert [(e["request_id"], e["fault"], e["priority"]) for e in log] == [
        (ids[0], "5xx", 2), (ids[1], "slow", 2)]
    assert log[0]["status"] == fault_status(ids[0], SEED) and log[1]["status"] == 200


def test_faults_on_non_streaming_requests(faulty):
    server, client = faulty
    with httpx.Client(base_url=str(client.base_url),
                      timeout=httpx.Timeout(10, read=1.0)) as short:
        def post(kind):
            return short.post("/v1/completions", json=_body(stream=False),
                              headers={"X-Request-Id": _id_for(kind)})

        with pytest.raises(httpx.TransportError):
            post("reset")
        with pytest.raises(httpx.ReadTimeout):
            post("stall")
        broken = post("malformed")
        assert broken.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            broken.json()
        assert post("slow").json()["usage"]["completion_tokens"] == 4
