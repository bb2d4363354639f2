"""The request entity: what the engine and the policies see of one LLM request.

Token bookkeeping follows vLLM: a request has ``prompt_tokens`` (P) and asks for
``output_tokens`` (O, ``max_tokens`` with ``ignore_eos``). ``num_generated`` (g) tokens have
been sampled so far and ``num_computed`` tokens have their KV in the cache. A step that
computes every known token (P + g) samples one more token; the prefill step thus yields
the first token, and the request finishes when g == O, after O - 1 decode steps. KV is
never needed for the last sampled token, so a request holds at most P + O - 1 tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

WAITING, RUNNING, FINISHED, REJECTED = "waiting", "running", "finished", "rejected"
#: the client gave up on the request (stream closed, program stopped): vLLM's
#: ``abort_request`` frees its seat and blocks at once
ABORTED = "aborted"


@dataclass(eq=False, slots=True)
class Request:
    """One LLM request (identity semantics: two requests are never equal).

    Attributes (times in simulated seconds, sizes in tokens):
        request_id: 0-based line index in the input trace.
        arrival_time: when the request reaches the server.
        prompt_tokens, output_tokens: P and O (both >= 1).
        program_id: the reasoning program this request belongs to (``None``: alone).
        priority: vLLM's integer priority (lower runs first), set by the policy.
        hash_ids: ids of shared prefix blocks (Mooncake), or ``None``.
        prompt: the prompt as (content key, tokens) segments (programs), or ``None``.
        num_cached_tokens: prompt tokens found in the prefix cache at first admission
            (vLLM's ``num_cached_tokens``).
        num_computed, num_generated: see the module docstring (kept current by the
            engine when the request is not decoding; see ``Engine.sync``).
        first_token_time, finish_time: NaN until they happen.
        num_preemptions: times the request was preempted (recompute).
        status: waiting, running, finished, rejected or aborted; ``error`` says why
            rejected.
        replica: index of the engine serving the request (0 on one replica).
        output_key: content key of the tokens this request will generate, when they are
            known in advance (a logged chain of thought): its generated blocks then get
            block hashes too, so a request whose prompt continues this output (a
            Dynasor-CoT probe) hits them in the prefix cache (vLLM caches full blocks of
            generated tokens, ``KVCacheManager.cache_blocks``).
        watch: tokens generated at which the engine calls its ``on_progress`` callback
            (0: never); the callback may set the next one.
        timeout_s: the client gives up this many seconds after ``arrival_time``
            (inference-perf's request timeout; ``inf``: never); an engine whose profile
            has ``client_timeouts`` then aborts it (error ``client timeout``).
    """

    request_id: int
    arrival_time: float
    prompt_tokens: int
    output_tokens: int
    program_id: int | None = None
    priority: int = 0
    hash_ids: tuple[int, ...] | None = None
    prompt: tuple | None = None
    num_computed: int = 0
    num_generated: int = 0
    num_blocks: int = 0
    first_token_time: float = math.nan
    finish_time: float = math.nan
    num_preemptions: int = 0
    status: str = WAITING
    error: str = ""
    num_cached_tokens: int = 0
    replica: int = 0
    output_key: str | None = None
    watch: int = 0
    timeout_s: float = math.inf
    # prefix-cache bookkeeping owned by the engine: identities of the full prompt
    # blocks, and how many leading ones this request references in the cache
    _hashes: tuple = field(default=(), repr=False)
    _shared: int = field(default=0, repr=False)
    # copies of shared blocks this request computed itself and still holds (vLLM keeps
    # both copies of a block computed twice; dynasim.prefix_cache)
    _dups: int = field(default=0, repr=False)
    # decode-set bookkeeping owned by the engine (see engine.py)
    _clock0: int = field(default=0, repr=False)
    _computed0: int = field(default=0, repr=False)
    _epoch: int = field(default=0, repr=False)
    _decoding: bool = field(default=False, repr=False)

    @property
    def num_known_tokens(self) -> int:
        """P + g: tokens whose KV a (re)prefill must compute."""
        return self.prompt_tokens + self.num_generated
