"""``dynasim serve``: a digital twin of vLLM's OpenAI-compatible server.

The twin answers ``/v1/completions`` and ``/v1/chat/completions`` like vLLM, but no model
runs: a dynasim engine (:class:`~dynasim.engine.Engine`, or a
:class:`~dynasim.cluster.Cluster` of replicas behind a router) simulates the requests,
and each answer streams its tokens at the times the engine computes them, in real time
(simulated second ``s`` is wall-clock second ``s`` after the server started). Replaying a
trace against it with ``dynasim replay`` gives what ``dynasim simulate`` gives for the same
trace and profile (tests/serve/test_closed_loop.py), so the replay harness, routers and
dashboards can be exercised against any profile without a GPU.

Modules: :mod:`dynasim.serve.twin` (the real-time engine driver),
:mod:`dynasim.serve.app` (HTTP), :mod:`dynasim.serve.requests` (request bodies and
answers), :mod:`dynasim.serve.tokens` (the tokenizer rule and generated text),
:mod:`dynasim.serve.metrics` (``/metrics``).

Endpoints:

* ``POST /v1/completions`` -- ``prompt`` is a text or a list of token ids (what the
  replay harness sends; a batch of one is accepted, of several refused);
  ``POST /v1/chat/completions`` -- ``messages``. Both honour ``stream``,
  ``stream_options.include_usage``, ``max_tokens`` (chat: or ``max_completion_tokens``;
  default: the room left under ``max_model_len``), ``priority`` (with ``--policy
  priority``; otherwise a non-zero one is vLLM's HTTP 400) and ``return_token_ids``
  (each chunk carries ``token_ids``, the first one also ``prompt_token_ids``, as
  vLLM's). **Output length**: the twin has no model and so no EOS: every answer is
  exactly ``max_tokens`` tokens long (``finish_reason: "length"``), i.e. as vLLM
  behaves with ``ignore_eos: true``; ``ignore_eos`` and ``min_tokens`` (0 to
  ``max_tokens``) are accepted and change nothing. Generated text is filler words
  (:data:`dynasim.serve.tokens.FILLER`), one per token.
* ``GET /v1/models`` (the served model with ``max_model_len``), ``POST /tokenize``
  (``{"count", "max_model_len", "tokens"}``), ``GET /metrics`` (vLLM's Prometheus
  names: running/waiting gauges, KV usage, token and preemption counters, TTFT, E2E,
  queue, prefill and decode histograms), ``GET /health``, ``GET /version``.
* Errors have vLLM's shape ``{"error": {"message", "type", "param", "code"}}`` and
  status: a prompt + ``max_tokens`` over ``max_model_len`` is HTTP 400 with vLLM's
  message (:mod:`dynasim.serve.requests`), another model name 404, a request the engine
  rejects (it could never fit the KV cache) 400.
* **Token counting** of text prompts: one token per word (run of letters, digits and
  underscores) and per other non-space character, leading whitespace attached;
  chat messages are rendered ``"role: content\\n"`` each plus ``"assistant:"``
  (:mod:`dynasim.serve.tokens`); ``/tokenize`` gives the same ids.
* **Cancellation**: a client that disconnects has its request aborted in the engine
  (:meth:`~dynasim.engine.Engine.abort`): it leaves the queue at once or the batch at
  the next step boundary, and its seat and KV blocks are freed.

Fidelity: requests reach the engine as ``dynasim simulate`` submits trace requests
(arrival + the profile's ``frontend_latency_ms``) and the engine is the simulator's own,
so a replay differs from the simulation only by the HTTP round trip and the event loop's
lateness (under a millisecond per token on an idle machine); profiles whose steps take
tens of milliseconds keep that well under 1% of a request's latency.
"""
