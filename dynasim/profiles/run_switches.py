"""The engine rule switches of a recorded run's server (:func:`switches_for`): which of
:data:`~dynasim.profiles.profile.SWITCHES` its vLLM version has on, by a table of the
versions that changed them (:data:`SWITCHES_BY_VERSION`), overridden by the run's
recorded config where it has the key (:data:`RECORDED_SWITCH_KEYS`). Used by
:mod:`dynasim.profiles.fit_runs` to fit a profile with the switches of its runs.
"""

from __future__ import annotations

from dynasim.profiles.profile import SWITCHES

#: Engine switches by the vLLM version that serves a run: ``(first version, switch,
#: value)``, applied in order to every version at or after the first. Sources:
#:
#: * ``client_timeouts``: every vLLM OpenAI server aborts a request whose client
#:   disconnected (``EngineCore.abort_requests``); a trace without timeouts is unchanged.
#: * ``async_scheduling``: on by default since vLLM PR #27614 (``SchedulerConfig
#:   .async_scheduling`` resolved to true unless a feature rules it out; merged before
#:   PR #31998 of 2026-01-08, which extends the default to speculative decoding), first
#:   released in 0.14.0 (inferred from the merge dates; the data's 0.15.1, 0.19.0 and
#:   0.23.0 all come after); the 0.19.0 LLMServingSim run's resolved config has it
#:   true.
#: * ``admit_full_prompt``: ``scheduler_reserve_full_isl`` (PR #37307, 2026-03-17,
#:   full-sequence reservation in ``KVCacheManager.allocate_slots``), first released in
#:   0.18.0 (inferred from the merge date); the 0.19.0 run's resolved config has it
#:   true, and 0.15.1 predates it.
SWITCHES_BY_VERSION: tuple[tuple[tuple[int, ...], str, bool], ...] = (
    ((0, 0, 0), "client_timeouts", True),
    ((0, 14, 0), "async_scheduling", True),
    ((0, 18, 0), "admit_full_prompt", True),
)

#: a run's recorded config key -> the switch it sets (it overrides the version table)
RECORDED_SWITCH_KEYS = {"async_scheduling": "async_scheduling",
                        "scheduler_reserve_full_isl": "admit_full_prompt"}


def switches_for(engine: dict) -> dict[str, bool]:
    """The engine switches (:data:`~dynasim.profiles.profile.SWITCHES`, each a bool) of
    a run's server: from its ``vllm_version`` by :data:`SWITCHES_BY_VERSION`, then any
    recorded config key of :data:`RECORDED_SWITCH_KEYS` in ``engine``. A run without a
    version gets every switch off (nothing known)."""
    out = dict.fromkeys(SWITCHES, False)
    version = _version(engine.get("vllm_version"))
    if version is not None:
        for first, key, value in SWITCHES_BY_VERSION:
            if version >= first:
                out[key] = value
    for key, switch in RECORDED_SWITCH_KEYS.items():
        if isinstance(engine.get(key), bool):
            out[switch] = engine[key]
    return out


def _version(text: object) -> tuple[int, ...] | None:
    """``"0.15.1"`` -> ``(0, 15, 1)``; None for a missing or unreadable version."""
    if not isinstance(text, str):
        return None
    parts = []
    for p in text.split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit()) if p[:1].isdigit() else ""
        if not digits:
            return None
        parts.append(int(digits))
    return tuple(parts)
