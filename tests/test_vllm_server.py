"""``replay.server.VLLMServer`` starts a real vLLM server that does what the replay
harness relies on. Skipped only when no vLLM environment exists; never faked."""

from __future__ import annotations

from tests.vllm_fixture import request_json
from tests.vllm_fixture import vllm_server  # noqa: F401  (session fixture)


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
