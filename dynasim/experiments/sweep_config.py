"""The configuration of a sweep and its cells (``dynasim sweep``, issue 6).

A sweep is the Cartesian product workloads x profiles x policies x request rates x SLO
scales x seeds; every point is a *cell*: one online simulation of reasoning programs
(:func:`dynasim.simulation.simulate_programs`) summarised as one row. The config file is
YAML (``.yaml``/``.yml``) or TOML (``.toml``) with these keys (lists may be given as one
value; every key can also be given, or overridden, by the flag of the same name)::

    workloads: [game24-sc]            # names or per-sample CSVs (dynasim.workloads.catalog)
    profiles: [vidur-llama3-8b-a100]  # names or profile JSON files
    policies: [lpm, gang, sjf+certaindex]
    request_rates: [1, 2, 4, 8]       # program arrival rates, programs/s (Poisson)
    slo_scales: [1.0]                 # deadline = SLO scale x difficulty x base deadline
    seeds: [0, 1, 2]                  # arrival draw, program order, sample order
    num_programs: 100                 # per cell (default: every question once)
    burstiness: 1.0                   # gamma shape of inter-arrivals (1 = Poisson)
    cap: 20                           # resource cap (SC samples), Dynasor App. D.2
    detect_at: 5                      # certaindex detect step
    threshold: 0.7                    # certaindex H-tilde threshold (null: default)
    reward_threshold: null
    low_threshold: null               # two-sided: hopeless at H-tilde (or R) <= this
    base_deadline: null               # s; null: per (workload, profile), see below
    base_deadline_multiple: null      # K: base = K x the derived one (not with base_deadline)
    warmup_programs: null             # SLO attainment skips the first N arrivals ...
    cooldown_programs: null           # ... and the last N (steady state; null: 0)
    probe_interval: null              # dynasor-cot: T tokens between probes (null: 64)
    certainty_window: null            # dynasor-cot: w probes that must agree (null: 2)
    token_budget: null                # budget: B tokens of a chain of thought
    sjf_aging: 30.0                   # s before SJF serves a starving program first
    enable_prefix_caching: true
    limits: {max_num_seqs: 256}       # engine limits overriding the profile's
    keep_records: false               # also keep each cell's program records
    replicas: [4]                     # fleet axis: replicas behind a router (null: one
    routers: [round-robin, program-affinity]  # engine, no router); router axis

``replicas`` and ``routers`` (:mod:`dynasim.routers`) are two more axes, enumerated after
the others; setting either runs every cell on a fleet of identical replicas of the cell's
profile (:func:`dynasim.cluster.simulate_cluster_programs`; replicas default 1, router
default ``round-robin``), each replica with its own instance of the cell's policy. Unset,
they stay out of the cells (and their ids).

The base deadline, when not given, is derived once per (workload, profile) by
:func:`dynasim.simulation.base_deadline` (p90 isolated latency at the cap), so every
policy, rate and seed of a sweep is judged against the same deadlines (Dynasor §4).
``base_deadline_multiple: K`` scales that derived base by K; the paper instead fixes an
absolute base (SC/MATH 240 s on A100) that leaves room for queueing. Every row carries
``deadline_protocol`` (e.g. ``"isolated-p90 x1"``, ``"absolute 240 s"``, plus the
steady-state window) and ``slo_attainment_programs_counted``. Keys left unset do not
enter the cell id, so the cell ids of older sweeps still hold.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from dynasim.errors import InputError, decode_utf8, from_validation_error
from dynasim.policies.intra_program import DEFAULT_THRESHOLD
from dynasim.profiles import LIMITS

#: Config keys that span the sweep's axes, in the order cells are enumerated.
AXES = ("workloads", "profiles", "policies", "request_rates", "slo_scales", "seeds")
#: Deadline-protocol keys (module doc); left out of a cell (and its id) when unset.
PROTOCOL_KEYS = ("base_deadline_multiple", "warmup_programs", "cooldown_programs")
#: Long chain-of-thought knobs (:mod:`dynasim.policies.dynasor_cot`); left out when unset.
COT_KEYS = ("probe_interval", "certainty_window", "token_budget")
#: Fleet axes (replicas behind a router), enumerated after :data:`AXES`; left out when
#: unset.
FLEET_AXES = ("replicas", "routers")
#: Engine limits a sweep may override (the profile keys of the same name).
LIMIT_KEYS = LIMITS


class SweepConfig(BaseModel):
    """A validated sweep configuration (module doc for the keys; units: programs/s,
    seconds, tokens). Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    workloads: list[str] = Field(min_length=1)
    profiles: list[str] = Field(min_length=1)
    policies: list[str] = Field(min_length=1)
    request_rates: list[float] = Field(min_length=1)
    slo_scales: list[float] = Field(default=[1.0], min_length=1)
    seeds: list[int] = Field(default=[0], min_length=1)
    num_programs: int | None = Field(default=None, ge=1)
    burstiness: float = Field(default=1.0, gt=0)
    cap: int = Field(default=20, ge=1)
    detect_at: int = Field(default=5, ge=1)
    threshold: float | None = Field(default=None, ge=0, le=1)
    reward_threshold: float | None = Field(default=None, ge=0, le=1)
    low_threshold: float | None = Field(default=None, ge=0, le=1)
    base_deadline: float | None = Field(default=None, gt=0)
    base_deadline_multiple: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    warmup_programs: int | None = Field(default=None, ge=0)
    cooldown_programs: int | None = Field(default=None, ge=0, validate_default=True)
    probe_interval: int | None = Field(default=None, ge=1)
    certainty_window: int | None = Field(default=None, ge=1)
    token_budget: int | None = Field(default=None, ge=1)
    sjf_aging: float = Field(default=30.0, ge=0)
    enable_prefix_caching: bool = True
    limits: dict[str, Any] = Field(default_factory=dict)
    keep_records: bool = False
    replicas: list[int] | None = None
    routers: list[str] | None = None

    @field_validator(*AXES, mode="before")
    @classmethod
    def _listify(cls, v: object) -> list:
        return v if isinstance(v, list) else [v]

    @field_validator(*FLEET_AXES, mode="before")
    @classmethod
    def _listify_fleet(cls, v: object) -> list | None:
        return v if v is None or isinstance(v, list) else [v]

    @field_validator("replicas")
    @classmethod
    def _at_least_one(cls, v: list[int] | None) -> list[int] | None:
        for n in v or ():
            if n < 1:
                raise ValueError(f"{n} replicas: a fleet needs at least 1")
        return v

    @field_validator("routers")
    @classmethod
    def _known_routers(cls, v: list[str] | None) -> list[str] | None:
        from dynasim.routers import ROUTERS

        for name in v or ():
            if name not in ROUTERS:
                raise ValueError(f"unknown router {name!r} (routers: {', '.join(ROUTERS)})")
        return v

    @field_validator("request_rates", "slo_scales")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        for x in v:
            if not (x > 0 and x != float("inf")):
                raise ValueError(f"{x} must be finite and > 0")
        return v

    @field_validator("detect_at")
    @classmethod
    def _detect_within_cap(cls, v: int, info: ValidationInfo) -> int:
        cap = info.data.get("cap")
        if cap is not None and v > cap:  # the detect step is one of the cap's samples/steps
            raise ValueError(f"detect_at {v} is larger than cap {cap}")
        return v

    @field_validator("low_threshold")
    @classmethod
    def _low_below_high(cls, v: float | None, info: ValidationInfo) -> float | None:
        # two-sided certaindex refuses low > high (TwoSided); say so with the file's name
        if v is None or not any("two-sided" in p for p in info.data.get("policies", [])):
            return v
        for key, high in (("threshold", info.data.get("threshold")),
                          ("reward_threshold", info.data.get("reward_threshold"))):
            if key == "threshold" and high is None and info.data.get("reward_threshold") is None:
                high = DEFAULT_THRESHOLD
            if high is not None and v > high:
                raise ValueError(f"low_threshold {v} is above {key} {high}: two-sided "
                                 "certaindex needs low <= high")
        return v

    @field_validator("base_deadline_multiple")
    @classmethod
    def _one_base(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is not None and info.data.get("base_deadline") is not None:
            raise ValueError("give either base_deadline (s) or base_deadline_multiple (x "
                             "the isolated p90), not both")
        return v

    @field_validator("cooldown_programs")
    @classmethod
    def _window_leaves_programs(cls, v: int | None, info: ValidationInfo) -> int | None:
        n, warm = info.data.get("num_programs"), info.data.get("warmup_programs") or 0
        if n is not None and warm + (v or 0) >= n:
            raise ValueError(f"warmup_programs {warm} + cooldown_programs {v or 0} leave "
                             f"none of the {n} programs to count")
        return v

    @field_validator("limits")
    @classmethod
    def _limit_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(set(v) - set(LIMIT_KEYS))
        if bad:
            raise ValueError(f"unknown engine limit {bad[0]!r} (known: "
                             f"{', '.join(LIMIT_KEYS)})")
        return v


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> SweepConfig:
    """Read a YAML/TOML sweep config (or none) and apply flag ``overrides`` (keys as in
    the file; ``None`` values ignored).

    Raises:
        InputError: unreadable or non-UTF-8 file, bad syntax (with line), an unknown or invalid key
            (with the key), a missing axis.
    """
    data: dict[str, Any] = {}
    src = str(path) if path else "command-line flags"
    if path:
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read sweep config ({exc.strerror})", source=src) \
                from None
        text = decode_utf8(raw, src)
        data = _parse(text, p.suffix.lower(), src)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, src) from None


def _parse(text: str, suffix: str, src: str) -> dict:
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            line = getattr(exc, "lineno", None)
            raise InputError(f"invalid TOML ({exc})", source=src, line=line) from None
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise InputError(f"invalid YAML ({getattr(exc, 'problem', exc)})", source=src,
                             line=mark.line + 1 if mark else None) from None
    else:
        raise InputError("sweep config must end in .yaml, .yml or .toml", source=src)
    if not isinstance(data, dict):
        raise InputError("sweep config must be a mapping of keys", source=src, line=1)
    return data


def cell_id(cell: dict) -> str:
    """A stable 16-hex-digit id of a cell: sha256 of its canonical JSON (every key that
    changes the result), so a rerun recognises finished cells whatever the order."""
    canon = json.dumps(cell, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def expand(cfg: SweepConfig) -> list[dict]:
    """The cells of ``cfg``, in axis order (:data:`AXES`, then :data:`FLEET_AXES`). Each
    cell is a flat dict: ``workload, profile, policy, program_rate, slo_scale, seed``
    (and ``replicas, router`` when a fleet axis is set) plus the shared keys, and its
    ``cell_id``; ``base_deadline`` is filled in later when not configured."""
    shared = cfg.model_dump(exclude={*AXES, *FLEET_AXES, "keep_records"})
    for key in ("low_threshold", *PROTOCOL_KEYS, *COT_KEYS):  # unset: older cell ids hold
        if shared[key] is None:
            del shared[key]
    fleet = cfg.replicas is not None or cfg.routers is not None
    cells = []
    for w, p, pol, rate, scale, seed, n, router in itertools.product(
            *(getattr(cfg, a) for a in AXES), cfg.replicas or [1],
            cfg.routers or ["round-robin"]):
        cell = {"workload": w, "profile": p, "policy": pol, "program_rate": float(rate),
                "slo_scale": float(scale), "seed": int(seed), **shared}
        if fleet:  # unset: one engine, and older cell ids hold
            cell.update(replicas=int(n), router=router)
        cells.append(dict(cell, cell_id=cell_id(cell)))
    return cells
