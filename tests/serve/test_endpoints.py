"""The twin's HTTP endpoints in-process (:mod:`dynasim.serve.app`): shapes, errors,
cancellation by disconnect and ``/metrics``, on a hand-made profile whose steps take
tens of milliseconds (prefill 20 ms + 0.1 ms/token, decode 20 ms)."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest
from aiohttp import web

from dynasim.cli.main import main
from dynasim.policies import make_policy
from dynasim.profiles import Profile
from dynasim.serve.app import TwinServer
from dynasim.serve.tokens import filler_ids, tokenize
from dynasim.serve.twin import Twin
from replay.client import Outcome, stream_completion
from replay.vllm_metrics import parse_prometheus

MODEL = "toy"


def _profile(max_num_seqs: int = 8, max_model_len: int | None = 512) -> Profile:
    step = (20.0, 0.0, 0.0)
    return Profile(name="hand", model=MODEL, gpu="none", tensor_parallel_size=1,
                   kv_capacity_tokens=16384, block_size=16, max_num_seqs=max_num_seqs,
                   max_num_batched_tokens=2048, max_model_len=max_model_len,
                   scheduling="v1", step_time={"form": "distserve",
                                               "prefill": (20.0, 0.1, 0.0),
                                               "decode_small_batch": step,
                                               "decode_large_batch": step})


def _run(body, policy: str = "fcfs", replicas: int = 1, **profile_args) -> object:
    """Run ``body(session, url, twin)`` against an in-process twin (``replicas`` behind
    round-robin); returns its result."""
    async def go():
        from dynasim.routers import make_router

        twin = Twin([_profile(**profile_args)] * replicas, lambda: make_policy(policy),
                    make_router("round-robin") if replicas > 1 else None)
        server = TwinServer(twin, MODEL, twin.profiles[0].max_model_len,
                            priority_enabled=policy == "priority")
        runner = web.AppRunner(server.app(), handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            async with aiohttp.ClientSession() as session:
                return await body(session, url, twin)
        finally:
            await runner.cleanup()
    return asyncio.run(go())


async def _post(session, url: str, body: dict) -> tuple[int, dict]:
    async with session.post(url, json=body) as r:
        return r.status, await r.json()


async def _events(session, url: str, body: dict) -> list[dict | str]:
    async with session.post(url, json=body) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        text = (await r.read()).decode()
    out = []
    for event in text.strip().split("\n\n"):
        assert event.startswith("data: ")
        data = event[6:]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_models_health_tokenize_and_usage_agree():
    async def body(s, url, twin):
        async with s.get(url + "/health") as r:
            assert r.status == 200
        _, models = await _post(s, url + "/tokenize", {"prompt": "Hello, world!"})
        async with s.get(url + "/v1/models") as r:
            listed = await r.json()
        _, done = await _post(s, url + "/v1/completions",
                              {"model": MODEL, "prompt": "Hello, world!", "max_tokens": 3})
        _, chat_tok = await _post(s, url + "/tokenize",
                                  {"messages": [{"role": "user", "content": "hi"}]})
        _, chat = await _post(s, url + "/v1/chat/completions",
                              {"messages": [{"role": "user", "content": "hi"}],
                               "max_tokens": 2})
        return models, listed, done, chat_tok, chat

    tok, listed, done, chat_tok, chat = _run(body)
    assert tok == {"count": 4, "max_model_len": 512, "tokens": tokenize("Hello, world!"),
                   "token_strs": None}
    assert listed["data"][0]["id"] == MODEL and listed["data"][0]["max_model_len"] == 512
    assert done["object"] == "text_completion"
    assert done["usage"]["prompt_tokens"] == 4 and done["usage"]["completion_tokens"] == 3
    assert done["choices"][0]["text"] == " the twin streams"
    assert done["choices"][0]["finish_reason"] == "length"
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": " the twin"}
    assert chat["usage"]["prompt_tokens"] == chat_tok["count"] == len(
        tokenize("user: hi\nassistant:"))


def test_streams_one_chunk_per_token_with_ids_and_usage():
    async def body(s, url, twin):
        comp = await _events(s, url + "/v1/completions", {
            "prompt": [5, 6, 7], "max_tokens": 4, "stream": True, "ignore_eos": True,
            "min_tokens": 4, "return_token_ids": True,
            "stream_options": {"include_usage": True}})
        chat = await _events(s, url + "/v1/chat/completions", {
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            "stream": True})
        out = Outcome()
        await stream_completion(s, url + "/v1/completions", {
            "prompt": [1, 2, 3, 4], "max_tokens": 5, "return_token_ids": True}, {},
            None, asyncio.get_running_loop().time, out)
        return comp, chat, out

    comp, chat, out = _run(body)
    assert comp[-1] == "[DONE]"
    tokens, usage = comp[:4], comp[4]
    assert [c["choices"][0]["token_ids"] for c in tokens] == [[i] for i in filler_ids(0, 4)]
    assert tokens[0]["choices"][0]["prompt_token_ids"] == [5, 6, 7]
    assert [c["choices"][0]["finish_reason"] for c in tokens] == [None] * 3 + ["length"]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4
    assert chat[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"] for c in chat[1:3]] == [{"content": " the"},
                                                              {"content": " twin"}]
    assert chat[-1] == "[DONE]" and chat[0]["object"] == "chat.completion.chunk"
    # what the replay harness measures: 5 chunks, about one 20 ms decode step apart
    assert out.error == "" and out.output_tokens == 5 and out.prompt_tokens == 4
    assert out.token_ids == filler_ids(0, 5)
    itl = [b - a for a, b in zip(out.chunk_times, out.chunk_times[1:])]
    assert all(0.01 < x < 0.1 for x in itl), itl


def test_errors_have_vllms_status_and_shape():
    async def body(s, url, twin):
        return [await _post(s, url + "/v1/completions", b) for b in (
            {"prompt": [1] * 500, "max_tokens": 20},
            {"prompt": [1] * 600, "max_tokens": 1},
            {"model": "other", "prompt": "x"},
            {"prompt": "x", "max_tokens": 2, "priority": 3},
            {"prompt": [1, 99999999]},
            {"prompt": "x", "max_tokens": 2, "min_tokens": 3})] + [twin.num_waiting()]

    *answers, waiting = _run(body)
    (s1, too_long), (s2, prompt_long), (s3, model), (s4, prio), (s5, vocab), (s6, mn) = answers
    assert s1 == 400 and too_long["error"] == {
        "message": "'max_tokens' or 'max_completion_tokens' is too large: 20. This model's"
                   " maximum context length is 512 tokens and your request has 500 input "
                   "tokens (20 > 512 - 500).",
        "type": "BadRequestError", "param": None, "code": 400}
    assert s2 == 400 and "your request has 600 input tokens" in prompt_long["error"]["message"]
    assert s3 == 404 and model["error"]["type"] == "NotFoundError"
    assert s4 == 400 and "Priority scheduling is not enabled" in prio["error"]["message"]
    assert s5 == 400 and s6 == 400
    assert waiting == 0


def test_a_request_the_kv_cache_can_never_hold_is_http_400():
    async def body(s, url, twin):
        return await _post(s, url + "/v1/completions", {"prompt": [1] * 17000,
                                                        "max_tokens": 1})

    status, doc = _run(body, max_model_len=None)
    assert status == 400 and "KV blocks" in doc["error"]["message"]


def test_replicas_behind_a_router_each_serve_and_report():
    """Two replicas, round-robin: two requests land on replicas 0 and 1, and /metrics
    reports each replica under its own engine label."""
    async def body(s, url, twin):
        await asyncio.gather(*(_post(s, url + "/v1/completions",
                                     {"prompt": [1] * 20, "max_tokens": 3})
                               for _ in range(2)))
        async with s.get(url + "/metrics") as r:
            return parse_prometheus(await r.text())

    m = _run(body, replicas=2)
    per_engine = {lab["engine"]: v for lab, v in m["vllm:generation_tokens_total"]}
    assert per_engine == {"0": 3, "1": 3}


def test_priority_policy_serves_lower_priority_first():
    """One seat: a long request runs; of two that wait, priority 0 starts before 5."""
    async def body(s, url, twin):
        first = asyncio.create_task(_post(s, url + "/v1/completions",
                                          {"prompt": [1], "max_tokens": 10}))
        await asyncio.sleep(0.05)
        late = asyncio.create_task(_post(s, url + "/v1/completions",
                                         {"prompt": [2], "max_tokens": 2, "priority": 5}))
        await asyncio.sleep(0.02)
        urgent = asyncio.create_task(_post(s, url + "/v1/completions",
                                           {"prompt": [3], "max_tokens": 2, "priority": 0}))
        await first
        done = []
        for name, task in (("late", late), ("urgent", urgent)):
            task.add_done_callback(lambda t, n=name: done.append(n))
        await asyncio.gather(late, urgent)
        return done

    assert _run(body, policy="priority", max_num_seqs=1) == ["urgent", "late"]


def test_client_disconnect_aborts_and_frees_the_seat():
    """One seat: a client that closes its stream after 2 tokens frees it at the next
    step boundary; the next request then runs at once."""
    async def body(s, url, twin):
        async with s.post(url + "/v1/completions", json={
                "prompt": [1, 2], "max_tokens": 400, "stream": True}) as r:
            got = 0
            async for line in r.content:
                got += line.startswith(b"data: ")
                if got == 2:
                    break
            victim = next(iter(twin.engine.running))
        await asyncio.sleep(0.1)  # the server sees the close; a step boundary passes
        twin.advance()
        after = (victim.status, victim.num_generated, len(twin.engine.running),
                 twin.engine.free_blocks == twin.engine.total_blocks)
        t0 = asyncio.get_running_loop().time()
        status, _ = await _post(s, url + "/v1/completions", {"prompt": [3], "max_tokens": 2})
        return after, status, asyncio.get_running_loop().time() - t0

    (status, generated, running, all_free), code, wall = _run(body, max_num_seqs=1)
    assert status == "aborted" and generated < 20 and running == 0 and all_free
    assert code == 200 and wall < 1.0  # would wait ~8 s for the 400-token request


def test_metrics_have_vllms_names_and_count_the_requests():
    async def body(s, url, twin):
        await _post(s, url + "/v1/completions", {"prompt": [1] * 30, "max_tokens": 7})
        await _post(s, url + "/v1/completions", {"prompt": [2] * 10, "max_tokens": 3})
        async with s.get(url + "/metrics") as r:
            return r.status, await r.text()

    status, text = _run(body)
    assert status == 200
    m = parse_prometheus(text)

    def total(name):
        return sum(v for _, v in m[name])

    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "vllm:num_preemptions_total",
                 "vllm:time_to_first_token_seconds_bucket",
                 "vllm:e2e_request_latency_seconds_sum",
                 "vllm:request_queue_time_seconds_count",
                 "vllm:request_prefill_time_seconds_sum",
                 "vllm:request_decode_time_seconds_sum"):
        assert name in m, name
    assert total("vllm:prompt_tokens_total") == 40
    assert total("vllm:generation_tokens_total") == 10
    assert total("vllm:e2e_request_latency_seconds_count") == 2
    assert total("vllm:num_requests_running") == 0
    assert m["vllm:cache_config_info"][0][0]["num_gpu_blocks"] == "1024"
    # simulated seconds: prefill 20 ms + 0.1 ms/token, then a 20 ms step per token
    e2e = total("vllm:e2e_request_latency_seconds_sum")
    assert e2e == pytest.approx((0.023 + 6 * 0.02) + (0.021 + 2 * 0.02), abs=1e-9)


def test_bad_flags_give_one_line_errors(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = (["--profile", "no-such-profile"],
                 ["--profile", "vidur-llama3-8b-a100", "--port", "70000"],
                 ["--profile", "vidur-llama3-8b-a100", "--policy", "bogus"],
                 ["--profile", "vidur-llama3-8b-a100", "--replicas", "0"],
                 ["--profile", "vidur-llama3-8b-a100", "--replicas", "2", "--router",
                  "nope"],
                 ["--profile", "vidur-llama3-8b-a100", "--port", str(port)])
        for flags in cases:
            assert main(["serve", *flags]) == 2, flags
            err = capsys.readouterr().err
            assert err.startswith("dynasim: error: ") and err.count("\n") == 1, (flags, err)
