"""Profiles: a step-time model bundled with the engine limits it was measured under.

Format (JSON; one object; see ``dynasim/profiles/*.json`` and ``traces/README.md``):

===========================  ================================================================
key                          meaning
===========================  ================================================================
``name``                     profile name (``--profile NAME``)
``model``, ``gpu``           what was measured, e.g. ``facebook/opt-13b``, ``A100-80GB``
``tensor_parallel_size``     TP degree of the measurement
``kv_capacity_tokens``       KV cache size in tokens (GPU blocks x ``block_size``)
``block_size``               tokens per KV block (vLLM default 16)
``max_num_seqs``             vLLM ``--max-num-seqs``: most running requests per step
``max_num_batched_tokens``   vLLM ``--max-num-batched-tokens``: token budget per step
``max_model_len``            prompt + output limit; longer requests are rejected (HTTP 400
                             in vLLM), null for no limit
``scheduling``               ``"v1"`` (chunked prefill, decode first) or ``"v0"``
                             (prefill-only steps first, no chunking)
``enable_prefix_caching``    reuse cached KV blocks of shared prompt prefixes (vLLM
                             ``--enable-prefix-caching``; :mod:`dynasim.prefix_cache`);
                             default false
``max_paddings``             v0 only: pad a prefill step's prompts to the longest and cap
                             the padding (vLLM 0.2.x ``--max-paddings``, default 256);
                             null: no padding (V1, and v0 from vLLM 0.4 on)
``async_scheduling``         V1 only: vLLM ``--async-scheduling`` (``AsyncScheduler``): the
                             CPU overheads overlap the GPU step (step time = max(GPU,
                             CPU) instead of their sum) and a finished request keeps its
                             seat and blocks while the next step is scheduled; default
                             false
``admit_full_prompt``        V1 only: admit a waiting request only if blocks for its whole
                             prompt fit, not only for its first chunk (newer vLLM's
                             full-sequence reservation in ``allocate_slots``); default false
``client_timeouts``          honour the requests' client timeouts (``Request.timeout_s``,
                             a trace's ``client_timeout_s``): the server aborts a request
                             its client gave up on; default false
``frontend_latency_ms``      time from the client's send to the engine's queue (HTTP,
                             tokenization, API-server hop); added to TTFT and E2E
``step_time``                the step-time model: ``form`` plus its coefficients
                             (:mod:`dynasim.profiles.step_time`)
``fit``                      for fitted profiles, the fit's held-out error and the ranges
                             it is valid for (:class:`StepTimeFit`); null otherwise
``provenance``               free-form: sources, commits, sha256, what was assumed
===========================  ================================================================

Every limit can be overridden by a CLI flag of the same name (``--max-num-seqs`` ...).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from dynasim.errors import InputError, from_validation_error, read_text
from dynasim.profiles.step_time import StepTime

#: The engine limits a run may override (``dynasim simulate`` flags, a sweep's
#: ``limits``; :meth:`Profile.with_overrides`), by their field names.
LIMITS = ("max_num_seqs", "max_num_batched_tokens", "kv_capacity_tokens", "block_size",
          "max_model_len", "scheduling")

#: Engine rule switches (off by default; the module table), omitted from a dump when off.
SWITCHES = ("async_scheduling", "admit_full_prompt", "client_timeouts")


class StepTimeFit(BaseModel):
    """How well a fitted step-time model matches its measurements (:mod:`dynasim.profiles.fit`).

    Errors are fractions ``|model - measured| / measured`` per measured step;
    ``held_out_*`` are on rows kept out of the fit. The ``max_*`` fields are the ranges
    the fit saw: inside them the profile interpolates, outside it extrapolates.
    """

    model_config = ConfigDict(extra="forbid")

    rows: int = Field(ge=0)
    held_out_rows: int = Field(ge=0)
    train_median_error: float = Field(ge=0)
    held_out_median_error: float = Field(ge=0)
    held_out_p90_error: float = Field(ge=0)
    held_out_max_error: float = Field(ge=0)
    max_step_tokens: int = Field(ge=0)
    max_num_decode: int = Field(ge=0)
    max_sum_decode_ctx: int = Field(ge=0)
    max_prompt_tokens: int = Field(ge=0)


class Profile(BaseModel):
    """A calibrated engine description; see the module docstring for the fields."""

    model_config = ConfigDict(extra="forbid")

    name: str
    model: str
    gpu: str
    tensor_parallel_size: int = Field(ge=1)
    kv_capacity_tokens: int = Field(ge=1)
    block_size: int = Field(default=16, ge=1)
    max_num_seqs: int = Field(ge=1)
    max_num_batched_tokens: int = Field(ge=1)
    max_model_len: int | None = Field(default=None, ge=2)
    scheduling: Literal["v1", "v0"]
    enable_prefix_caching: bool = False
    max_paddings: int | None = Field(default=None, ge=0)
    async_scheduling: bool = False
    admit_full_prompt: bool = False
    client_timeouts: bool = False
    frontend_latency_ms: float = Field(default=0.0, ge=0)
    step_time: StepTime
    fit: StepTimeFit | None = None
    provenance: dict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _vllm_config_rules(self) -> Profile:
        # vLLM refuses both (SchedulerConfig._verify_args): a step must seat every
        # running request's decode token, and without chunked prefill (v0) a whole
        # prompt must fit the step budget.
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(f"max_num_batched_tokens ({self.max_num_batched_tokens}) must "
                             f"be >= max_num_seqs ({self.max_num_seqs})")
        if (self.scheduling == "v0" and self.max_model_len is not None
                and self.max_num_batched_tokens < self.max_model_len):
            raise ValueError(f"with v0 scheduling (no chunked prefill) "
                             f"max_num_batched_tokens ({self.max_num_batched_tokens}) must "
                             f"be >= max_model_len ({self.max_model_len})")
        if self.scheduling == "v0" and (self.async_scheduling or self.admit_full_prompt):
            raise ValueError("async_scheduling and admit_full_prompt are V1 scheduler "
                             "rules: they need scheduling \"v1\"")
        return self

    @model_serializer(mode="wrap")
    def _drop_default_switches(self, handler: SerializerFunctionWrapHandler) -> dict:
        # the engine switches are written only when on, so every profile JSON written
        # before they existed is still what its builder writes
        data = handler(self)
        for key in SWITCHES:
            if data.get(key) is False:
                del data[key]
        return data

    @property
    def num_gpu_blocks(self) -> int:
        """KV blocks in the cache: ``kv_capacity_tokens // block_size``."""
        return self.kv_capacity_tokens // self.block_size

    def with_overrides(self, **limits) -> Profile:
        """A copy with the given limits replaced (``None`` values ignored).

        Raises:
            InputError: a value the profile schema or vLLM's config rules reject.
        """
        data = self.model_dump()
        data.update({k: v for k, v in limits.items() if v is not None})
        return _validate(data, source="command-line flags")


def _validate(data: dict, source: str) -> Profile:
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, source) from None


def shipped_profiles() -> list[str]:
    """Names of the profiles that ship inside the package."""
    folder = resources.files("dynasim") / "profiles"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_profile(name_or_path: str) -> Profile:
    """Load a shipped profile by name, or a profile JSON by path.

    Raises:
        InputError: unknown name, missing or non-UTF-8 file, invalid JSON (with line),
            schema error (with field).
    """
    if name_or_path in shipped_profiles():
        text = (resources.files("dynasim") / "profiles" / f"{name_or_path}.json").read_text()
        source = f"profile {name_or_path}"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise InputError(f"unknown profile (shipped: {', '.join(shipped_profiles())}) "
                             "and no such file", source=name_or_path)
        text, source = read_text(path), str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", source=source, line=exc.lineno) from None
    if not isinstance(data, dict):
        raise InputError("a profile must be a JSON object", source=source)
    return _validate(data, source)
