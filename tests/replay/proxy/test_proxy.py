"""The Dynasor-CoT proxy (replay/proxy/server.py) against a scripted upstream
(tests/scripted_upstream.py: token i is " x<i>", probes answered by a script), and the
probing rules (replay/proxy/probe.py, Dynasor §2.1). Fast: no model, no vLLM."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from dynasim.cli import build_parser, main
from replay.journal import read_records
from replay.proxy import probe as cot_probe
from replay.proxy.config import DynasorConfig
from replay.proxy.server import make_app
from tests.helpers import ROOT
from tests.scripted_upstream import BackgroundApp, ScriptedUpstream

MODEL = "scripted"
FINAL = cot_probe.final_answer_text


# ----------------------------------------------------------------- the rules alone
def test_extract_answer_up_to_first_unmatched_brace():
    assert cot_probe.extract_answer("42} \\]") == "42"
    assert cot_probe.extract_answer(" \\frac{1}{2} } \\] and {more}") == "\\frac{1}{2}"
    assert cot_probe.extract_answer("42 \\] no closing brace") is None
    assert cot_probe.extract_answer("} \\]") is None  # an empty box is no answer


def test_hesitation_is_matched_as_whole_words():
    for text in ("Wait, 42}", "42} HMM", "hold on: 41}", "42}, but", "no. 7}"):
        assert cot_probe.hesitates(text), text
    for text in ("not a number}", "nobody butters nothing}", "holds 42}", "42} \\]"):
        assert not cot_probe.hesitates(text), text
    assert cot_probe.hesitates("perhaps 42}", ["perhaps"])
    assert not cot_probe.hesitates("wait 42}", [])


def test_answers_compared_by_value_and_never_executed(tmp_path):
    eq = cot_probe.answers_equal
    assert eq("0.5", "\\frac{1}{2}") and eq("2/4", "1/2") and eq("x + 1", "x+1")
    assert eq("\\dfrac{3}{6}", "(3 - 2) / 2") and eq("1,000", "1000")
    assert not eq("42", "41") and not eq(None, None) and not eq("", "")
    marker = tmp_path / "pwned"
    evil = f"__import__('os').system('touch {marker}')"
    assert not eq(evil, "0") and eq(evil, evil)  # equal as strings, never run
    assert not marker.exists()


@pytest.mark.parametrize("answers, w, tau, stop", [
    (["1", "2"], 2, 1.0, False),        # disagreement never stops (public issue #25)
    (["1", "1"], 2, 1.0, True),
    (["1"], 2, 1.0, False),             # window not full
    ([None, None], 2, 1.0, False),      # no answers never agree
    (["1", None], 2, 0.5, False),       # the latest probe has no answer
    (["1", "2", "2"], 2, 1.0, True),
    (["2", "1", "2"], 3, 1.0, False),
    (["2", "1", "2"], 3, 2 / 3, True),  # C_k = 2/3
])
def test_stop_rule(answers, w, tau, stop):
    assert cot_probe.should_stop(answers, w, tau) is stop


# ---------------------------------------------------------------- proxy fixtures
class Rig:
    """A scripted upstream with a proxy in front, both in background threads."""

    def __init__(self, defaults: DynasorConfig | None = None, **upstream) -> None:
        self.up = ScriptedUpstream(**upstream)
        self._up = BackgroundApp(self.up.app())
        self.defaults = defaults

    def __enter__(self) -> Rig:
        self.upstream_url = self._up.__enter__().base_url
        self._proxy = BackgroundApp(make_app(self.upstream_url, self.defaults),
                                    handler_cancellation=True)
        self.url = self._proxy.__enter__().base_url
        self.sdk = openai.OpenAI(base_url=self.url + "/v1", api_key="sk-test",
                                 max_retries=0, timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        self.sdk.close()
        self._proxy.__exit__(*exc)
        self._up.__exit__(*exc)

    def wait_stream_closed(self, i: int = 0, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.up.streams) > i and (self.up.streams[i]["cancelled"]
                                             or self.up.streams[i]["finished"]):
                return self.up.streams[i]
            time.sleep(0.01)
        raise AssertionError(f"upstream stream {i} still open: {self.up.streams}")


def answer_after(n0: int, early: str = "41", late: str = "42"):
    """Probe output: ``early`` before n0 tokens, ``late`` from n0 on."""
    return lambda n: (early if n < n0 else late) + "} \\]"


def ask(rig: Rig, chat: bool, stream: bool, dynasor: dict | None, **kw):
    """One request through the openai SDK; returns (text, finish_reason, report, usage)."""
    extra = {"extra_body": {"dynasor": dynasor}} if dynasor is not None else {}
    if chat:
        args = dict(model=MODEL, messages=[{"role": "user", "content": "Solve it"}], **kw)
    else:
        args = dict(model=MODEL, prompt="Solve it", **kw)
    create = rig.sdk.chat.completions.create if chat else rig.sdk.completions.create
    if not stream:
        r = create(**args, **extra).to_dict()
        c = r["choices"][0]
        text = c["message"]["content"] if chat else c["text"]
        return text, c["finish_reason"], r.get("dynasor"), r["usage"]
    text, finish, report, usage = "", None, None, None
    for chunk in create(**args, stream=True, stream_options={"include_usage": True},
                        **extra):
        d = chunk.to_dict()
        for c in d["choices"]:
            text += (c["delta"].get("content") or "") if chat else c["text"]
            finish = c.get("finish_reason") or finish
        report = d.get("dynasor") or report
        usage = d.get("usage") or usage
    return text, finish, report, usage


MODES = [(c, s) for c in (False, True) for s in (False, True)]
MODE_IDS = [f"{'chat' if c else 'completions'}-{'stream' if s else 'json'}" for c, s in MODES]


# --------------------------------------------------------------------- stopping
@pytest.mark.parametrize("chat, stream", MODES, ids=MODE_IDS)
def test_stops_exactly_when_the_rule_says(chat, stream):
    """Probes at 32, 64, 96 answer 41, 42, 42: with w = 2, τ = 1 the rule first holds at
    the third probe (96 tokens), not at the second (41 != 42)."""
    with Rig(n_tokens=400, answers=answer_after(64)) as rig:
        text, finish, rep, usage = ask(rig, chat, stream, {"probe_interval": 32,
                                                           "certainty_window": 2})
        assert rep["stopped_early"] and rep["stop_token"] == 96 and rep["probes"] == 3
        assert rep["answer"] == "42" and rep["probes_skipped"] == 0
        assert finish == "stop" and text.endswith(FINAL("42"))
        assert text.startswith("".join(f" x{i}" for i in range(1, 97)))
        assert 96 <= rep["tokens_generated"] < 400
        assert usage["completion_tokens"] == rep["tokens_generated"]
        closed = rig.wait_stream_closed()
        assert closed["cancelled"] and closed["sent"] < 400  # upstream request cancelled
        probes = rig.up.probe_requests()
        assert len(probes) == rep["probes_sent"] >= 3


@pytest.mark.parametrize("chat, stream", [(False, True), (True, False)],
                         ids=["completions-stream", "chat-json"])
def test_never_stops_when_answers_disagree(chat, stream):
    with Rig(n_tokens=200, answers=lambda n: f"{n}}} \\]") as rig:
        text, finish, rep, usage = ask(rig, chat, stream, {"probe_interval": 32})
        assert not rep["stopped_early"] and rep["stop_token"] == -1
        assert rep["probes_sent"] == 6 and rep["tokens_generated"] == 200
        assert finish == "stop" and text == "".join(f" x{i}" for i in range(1, 201))
        assert rig.wait_stream_closed()["finished"]


def test_never_stops_on_a_hesitating_probe():
    """Probe 64 hesitates ("Hmm"), so 64 and 96 cannot form the window; 96 and 128 do."""
    out = {64: "Hmm, 42} \\]"}
    with Rig(n_tokens=400, answers=lambda n: out.get(n, "42} \\]")) as rig:
        _, _, rep, _ = ask(rig, False, False, {"probe_interval": 32})
        assert rep["stop_token"] == 128 and rep["probes"] == 4
        assert rep["probes_skipped"] == 1
    with Rig(n_tokens=160, answers=lambda n: "42} \\] Wait, let me check") as rig:
        text, finish, rep, _ = ask(rig, True, True, {"probe_interval": 32})
        assert not rep["stopped_early"] and rep["probes_skipped"] == rep["probes"] >= 4
        assert not text.endswith(FINAL("42"))


def test_probes_are_evaluated_in_order_and_do_not_pause_the_stream():
    """Probe 1 takes 0.3 s, probe 2 returns at once: the stop waits for probe 1 and comes
    at probe 2 (64 tokens); meanwhile the stream keeps flowing."""
    with Rig(n_tokens=400, token_delay=0.002,
             probe_delay=lambda n: 0.3 if n == 32 else 0.0) as rig:
        times = []
        stream = rig.sdk.completions.create(model=MODEL, prompt="Q", stream=True,
                                            extra_body={"dynasor": {"probe_interval": 32}})
        rep = None
        for chunk in stream:
            times.append(time.monotonic())
            rep = chunk.to_dict().get("dynasor") or rep
        assert rep["stop_token"] == 64 and rep["probes"] == 2
        assert rep["tokens_generated"] > 64  # generated on while probe 1 was out
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert max(gaps) < 0.25, max(gaps)  # never waited for the 0.3 s probe


# ---------------------------------------------------------- settings and params
def test_per_request_settings_are_honoured():
    text = "\nFINAL ANSWER: \\boxed{"
    with Rig(n_tokens=400, probe_suffixes=(text,)) as rig:
        body = {"model": MODEL, "prompt": "Q", "max_tokens": 400, "dynasor": {
            "probe_interval": 10, "certainty_window": 3, "probe_text": text,
            "probe_max_tokens": 7, "probe_temperature": 0.2, "probe_top_p": 0.5}}
        rep = httpx.post(rig.url + "/v1/completions", json=body, timeout=30).json()["dynasor"]
        assert rep["stop_token"] == 30 and rep["probes"] == 3  # top-level field works
        probe = rig.up.probe_requests()[0]["body"]
        assert probe["prompt"].endswith(" x10" + text)
        assert (probe["max_tokens"], probe["temperature"], probe["top_p"]) == (7, 0.2, 0.5)
    with Rig(n_tokens=400, answers=lambda n: f"{n}}}") as rig:  # τ = 0.5, w = 2: one
        _, _, rep, _ = ask(rig, False, False, {"threshold": 0.5})  # match (itself) is
        assert rep["stop_token"] == 64                              # enough at probe 2


def test_server_defaults_by_flag_and_request_overrides():
    with Rig(defaults=DynasorConfig(probe_interval=20, certainty_window=3),
             n_tokens=400) as rig:
        _, _, rep, _ = ask(rig, False, False, {})
        assert rep["stop_token"] == 60
        _, _, rep, _ = ask(rig, False, False, {"certainty_window": 2})
        assert rep["stop_token"] == 40
        text, _, rep, _ = ask(rig, False, False, None, max_tokens=50)
        assert rep is None and text == "".join(f" x{i}" for i in range(1, 51))


def test_pass_through_forwards_everything_unchanged():
    body = {"model": MODEL, "prompt": [72, 105], "max_tokens": 9, "temperature": 0.7,
            "top_p": 0.9, "seed": 5, "stop": ["x7"], "ignore_eos": True, "priority": 3,
            "stream": True, "stream_options": {"include_usage": True}, "logprobs": 2}
    with Rig() as rig:
        direct = httpx.post(rig.upstream_url + "/v1/completions", json=body).text
        via = httpx.post(rig.url + "/v1/completions", json=body,
                         headers={"Authorization": "Bearer sk-abc"})
        assert via.status_code == 200  # byte for byte, but for the upstream's own id
        assert via.text.replace('"cmpl-2"', '"cmpl-1"') == direct
        assert via.headers["content-type"].startswith("text/event-stream")
        got = rig.up.main_requests()[-1]
        assert got["body"] == body and got["headers"]["Authorization"] == "Bearer sk-abc"
        models = rig.sdk.models.list()
        assert [m.id for m in models.data] == [MODEL]
        echo = httpx.put(rig.url + "/echo?a=1&b=2", content=b"raw", headers={
            "Authorization": "Bearer k2", "X-Custom": "v"}).json()
        assert (echo["method"], echo["query"], echo["body"]) == ("PUT", "a=1&b=2", "raw")
        assert echo["headers"]["Authorization"] == "Bearer k2"
        assert echo["headers"]["X-Custom"] == "v"


def test_dynasor_mode_forwards_sampling_params_and_auth():
    with Rig(n_tokens=400) as rig:
        params = dict(max_tokens=300, temperature=0.8, top_p=0.9, seed=11,
                      stop=["zzz"], presence_penalty=0.1)
        rig.sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Q"}], **params,
            extra_body={"dynasor": {}, "priority": 2, "top_k": 5,
                        "chat_template_kwargs": {"enable_thinking": True}})
        main_req = rig.up.main_requests()[0]
        for k, v in dict(params, priority=2, top_k=5).items():
            assert main_req["body"][k] == v, k
        assert "dynasor" not in main_req["body"] and main_req["body"]["stream"] is True
        assert main_req["headers"]["Authorization"] == "Bearer sk-test"
        probes = rig.up.probe_requests()
        assert len(probes) >= 2
        for i, p in enumerate(probes):
            b = p["body"]
            assert p["headers"]["Authorization"] == "Bearer sk-test"
            assert b["priority"] == 2 and b["seed"] == 12 + i
            assert b["chat_template_kwargs"] == {"enable_thinking": True}
            assert (b["temperature"], b["top_p"], b["max_tokens"]) == (0.6, 0.95, 32)
            assert b["continue_final_message"] is True and b["add_generation_prompt"] is False
            assert b["messages"][:-1] == [{"role": "user", "content": "Q"}]
            last = b["messages"][-1]
            assert last["role"] == "assistant"
            assert last["content"].endswith(f" x{32 * (i + 1)}" + cot_probe.DEFAULT_PROBE_TEXT)


def test_token_id_prompts_are_probed_through_tokenize():
    with Rig(n_tokens=400) as rig:
        prompt = [ord(c) for c in "Question?"]
        r = httpx.post(rig.url + "/v1/completions", json={
            "model": MODEL, "prompt": prompt, "max_tokens": 300, "ignore_eos": True,
            "dynasor": {"probe_interval": 16}}, timeout=30).json()
        assert r["dynasor"]["stop_token"] == 32
        probe = rig.up.probe_requests()[0]["body"]["prompt"]
        expected = "Question?" + "".join(f" x{i}" for i in range(1, 17)) \
            + cot_probe.DEFAULT_PROBE_TEXT
        assert probe[:len(prompt)] == prompt and "".join(map(chr, probe)) == expected
        tok = [e for e in rig.up.log if e["kind"] == "tokenize"][0]["body"]
        assert tok["add_special_tokens"] is False


def test_report_headers_on_json_responses():
    with Rig(n_tokens=400) as rig:
        raw = rig.sdk.completions.with_raw_response.create(
            model=MODEL, prompt="Q", extra_body={"dynasor": {"probe_interval": 8}})
        h = raw.headers
        assert h["x-dynasor-stopped-early"] == "true" and h["x-dynasor-stop-token"] == "16"
        assert h["x-dynasor-probes"] == "2" and int(h["x-dynasor-tokens-generated"]) >= 16


# -------------------------------------------------------------- cancellation
@pytest.mark.parametrize("dynasor", [None, {"probe_interval": 1000}],
                         ids=["pass-through", "dynasor"])
def test_client_disconnect_cancels_the_upstream(dynasor):
    with Rig(n_tokens=2000, token_delay=0.005) as rig:
        body = {"model": MODEL, "prompt": "Q", "stream": True, "max_tokens": 2000}
        if dynasor:
            body["dynasor"] = dynasor
        with httpx.stream("POST", rig.url + "/v1/completions", json=body) as r:
            for i, _ in enumerate(r.iter_lines()):
                if i > 10:
                    break
        closed = rig.wait_stream_closed()
        assert closed["cancelled"] and closed["sent"] < 2000


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("dynasor, param", [
    ({"probe_interval": 0}, "dynasor.probe_interval"),
    ({"probe_interval": "32"}, "dynasor.probe_interval"),
    ({"certainty_window": True}, "dynasor.certainty_window"),
    ({"threshold": 1.5}, "dynasor.threshold"),
    ({"threshold": 0}, "dynasor.threshold"),
    ({"probe_text": ""}, "dynasor.probe_text"),
    ({"probe_max_tokens": -1}, "dynasor.probe_max_tokens"),
    ({"probe_top_p": 0}, "dynasor.probe_top_p"),
    ({"hesitation_words": "wait"}, "dynasor.hesitation_words"),
    ({"window": 2}, "dynasor.window"),
    ("fast", "dynasor"),
    ({"probe_max_tokens": 10**9}, "dynasor.probe_max_tokens"),  # issue 15 item 9
    ({"probe_max_tokens": cot_probe.MAX_PROBE_MAX_TOKENS + 1}, "dynasor.probe_max_tokens"),
    ({"probe_temperature": -0.1}, "dynasor.probe_temperature"),
])
def test_bad_dynasor_fields_get_400(dynasor, param):
    with Rig() as rig:
        with pytest.raises(openai.BadRequestError) as err:
            rig.sdk.completions.create(model=MODEL, prompt="Q",
                                       extra_body={"dynasor": dynasor})
        assert err.value.status_code == 400
        assert err.value.body["param"] == param and param in err.value.body["message"]
        assert not rig.up.log  # nothing reached the upstream


@pytest.mark.parametrize("body, param", [
    ({"prompt": "Q", "n": 2}, "n"), ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": "Q", "echo": True}, "echo"), ({"prompt": "Q", "logprobs": 1}, "logprobs"),
])
def test_requests_probing_cannot_serve_get_400(body, param):
    with Rig() as rig:
        r = httpx.post(rig.url + "/v1/completions",
                       json=dict(body, model=MODEL, dynasor={}))
        assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_upstream_errors():
    with Rig() as rig:  # the upstream's own error is forwarded as it is
        r = httpx.post(rig.url + "/v1/completions",
                       json={"model": "nope", "prompt": "Q", "dynasor": {}})
        assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    from replay.testing.vllm_server import free_port
    from tests.scripted_upstream import BackgroundApp as B
    with B(make_app(f"http://127.0.0.1:{free_port()}"), True) as proxy:
        for body in ({"model": MODEL, "prompt": "Q"},
                     {"model": MODEL, "prompt": "Q", "dynasor": {}, "stream": True}):
            r = httpx.post(proxy.base_url + "/v1/completions", json=body)
            assert r.status_code == 502, r.text
            err = r.json()["error"]
            assert "cannot reach the upstream" in err["message"] and "Traceback" not in r.text


@pytest.mark.parametrize("field, value", [
    ("probe_temperature", "Infinity"), ("probe_temperature", "NaN"),
    ("probe_top_p", "-Infinity"), ("threshold", "NaN"), ("probe_temperature", "1e999"),
])
def test_non_finite_numbers_get_400(field, value):
    """Python's JSON reader accepts Infinity/NaN (and 1e999 overflows to inf): the
    sampling settings must still be finite numbers (issue 15 item 9)."""
    with Rig() as rig:
        body = f'{{"model": "{MODEL}", "prompt": "Q", "dynasor": {{"{field}": {value}}}}}'
        r = httpx.post(rig.url + "/v1/completions", content=body,
                       headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == f"dynasor.{field}"
        assert "finite" in r.json()["error"]["message"] and not rig.up.log


def test_probe_max_tokens_must_fit_the_upstreams_context():
    """The scripted upstream serves max_model_len 4096 (GET /v1/models, as vLLM lists
    it): a probe of 4096 tokens could never run (its prompt takes at least one more)."""
    with Rig() as rig:
        with pytest.raises(openai.BadRequestError) as err:
            rig.sdk.completions.create(model=MODEL, prompt="Q", extra_body={
                "dynasor": {"probe_max_tokens": 4096}})
        assert err.value.body["param"] == "dynasor.probe_max_tokens"
        assert "max_model_len 4096" in err.value.body["message"]
        assert not rig.up.log
        ok = rig.sdk.completions.create(model=MODEL, prompt="Q", max_tokens=8, extra_body={
            "dynasor": {"probe_max_tokens": 4000}})
        assert ok.choices[0].text


def test_access_log_one_line_per_request_and_refusals(caplog):
    """One INFO line per request (method, path, status, seconds, probes sent, stopped
    early or not) and a WARNING for a refused dynasor object (issue 15 item 9)."""
    caplog.set_level("INFO", logger="replay.proxy")
    with Rig(n_tokens=400, answers=answer_after(0)) as rig:
        ask(rig, chat=False, stream=True, dynasor={"probe_interval": 8})
        httpx.get(rig.url + "/v1/models")
        httpx.post(rig.url + "/v1/completions", json={
            "model": MODEL, "prompt": "Q", "dynasor": {"probe_max_tokens": 10**9}})
    access = [r.getMessage() for r in caplog.records if r.name == "replay.proxy.access"]
    assert len(access) == 3, access
    probed, models, refused = access
    assert re.fullmatch(r"POST /v1/completions 200 \d+\.\d{3}s probes_sent=2 "
                        r"stopped_early=yes", probed), probed
    assert re.fullmatch(r"GET /v1/models 200 \d+\.\d{3}s probes_sent=0 "
                        r"stopped_early=no", models), models
    assert refused.startswith("POST /v1/completions 400 ")
    warn = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warn) == 1 and "refused" in warn[0].getMessage()
    assert "dynasor.probe_max_tokens" in warn[0].getMessage()


def test_failed_probes_are_logged(caplog):
    """A probe the upstream cannot answer in time counts as failed, and says so."""
    caplog.set_level("INFO", logger="replay.proxy")
    up = ScriptedUpstream(n_tokens=60, probe_delay=5.0, token_delay=0.02)
    with BackgroundApp(up.app()) as u, BackgroundApp(make_app(u.base_url, None, 0.2),
                                                     True) as proxy:
        r = httpx.post(proxy.base_url + "/v1/completions", timeout=30, json={
            "model": MODEL, "prompt": "Q", "max_tokens": 40, "dynasor": {
                "probe_interval": 16}}).json()
    assert r["dynasor"]["probes_failed"] >= 1
    warn = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("probe 0" in w and "failed" in w and "timeout" in w for w in warn), warn


# --------------------------------------------------------------- replay through it
def test_replay_through_the_proxy_records_its_reports(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"timestamp": 50 * i, "input_length": 20,
                                         "output_length": 60 + i}) + "\n"
                             for i in range(4)))
    with Rig(n_tokens=400) as rig:
        out = tmp_path / "run"
        assert main(["replay", "--base-url", rig.url, "--model", MODEL, "--trace",
                     str(trace), "--dynasor", '{"probe_interval": 8}',
                     "--output-dir", str(out), "--no-progress"]) == 0
        req, _ = read_records(out)
        assert (req["error"] == "").all()
        assert (req["dynasor_probes"] == 2).all() and req["dynasor_stopped_early"].all()
        assert (req["dynasor_stop_token"] == 8 * 2).all()
        assert (req["dynasor_tokens"] == req["output_tokens"]).all()
        assert (req["output_tokens"] < req["asked_output_tokens"]).all()
        assert json.loads((out / "summary.json").read_text())["dynasor"] == {
            "probe_interval": 8}
        sent = rig.up.main_requests()
        assert all(s["body"]["ignore_eos"] and isinstance(s["body"]["prompt"], list)
                   for s in sent if s["body"].get("stream"))
        plain = tmp_path / "plain"  # without --dynasor: no report, default columns
        assert main(["replay", "--base-url", rig.url, "--model", MODEL, "--trace",
                     str(trace), "--output-dir", str(plain), "--no-progress"]) == 0
        req, _ = read_records(plain)
        assert (req["dynasor_probes"] == -1).all() and not req["dynasor_stopped_early"].any()
        assert (req["output_tokens"] == req["asked_output_tokens"]).all()
    assert main(["replay", "--base-url", "http://x", "--model", MODEL, "--trace",
                 str(trace), "--dynasor", "[1]", "--output-dir", str(tmp_path / "b"),
                 "--no-progress"]) == 2


# ------------------------------------------------------------------------ CLI
def test_cli_flags_and_a_real_proxy_process(tmp_path):
    args = build_parser().parse_args(["proxy", "--target-base-url", "http://u:1"])
    assert (args.host, args.port, args.probe_interval) == ("127.0.0.1", 8001, None)
    assert main(["proxy", "--target-base-url", "http://u:1", "--probe-interval", "0"]) == 2
    for flags in (["--probe-max-tokens", str(10**9)], ["--probe-temperature", "inf"],
                  ["--probe-top-p", "nan"], ["--port", "99999"], ["--port", "-1"]):
        assert main(["proxy", "--target-base-url", "http://u:1", *flags]) == 2, flags
    from replay.testing.vllm_server import free_port

    with Rig(n_tokens=400) as rig:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "dynasim", "proxy", "--target-base-url",
             rig.upstream_url, "--port", str(port), "--probe-interval", "16"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=ROOT, env=dict(os.environ))
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready and "dynasor proxy on" in proc.stdout.readline()
            r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={
                "model": MODEL, "prompt": "Q", "dynasor": {}}, timeout=30).json()
            assert r["dynasor"]["stop_token"] == 32  # the --probe-interval default
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0


def test_port_in_use_is_one_line_and_closes_the_client_session(tmp_path):
    """A taken port: one error line, exit 2, and no "Unclosed client session" after
    it (the app's upstream session is closed on that path too)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "dynasim", "proxy", "--target-base-url",
             "http://127.0.0.1:9", "--port", str(port)], capture_output=True, text=True,
            cwd=ROOT, env=dict(os.environ), timeout=60)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert err[0].startswith("dynasim: error: ") and "field 'port'" in err[0]
