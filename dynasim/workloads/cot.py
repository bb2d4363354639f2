"""Long chain-of-thought workloads: real reasoning-model trajectories with the answers
their Dynasor-CoT probes gave along the way (Dynasor §2.1).

A folder in the ``governor_cot_probes`` layout (the public Governor data, a fork of
hao-ai-lab/Dynasor; ``../shared/data/governor_cot_probes/README``):

* ``trajectories.csv``: one row per main trajectory: ``model, dataset, seed,
  problem_id, target, tokens_used`` (generated tokens, vLLM's count), ``finished_naturally,
  finish_reason, final_answer, final_correct`` (the logged grade), ``prompt_tokens``;
* ``raw/**/dense_simple32/probes.csv``: one row per probe: ``problem_id, dataset,
  model, base_seed, token_position`` (generated tokens when probed, every 64),
  ``probe_answer`` (text inside ``\\boxed{``), ``is_certain`` (False: the probe
  hesitated), ``probe_out_tokens, probe_prompt_tokens``.

Trajectories and probes join on (model, dataset, seed, problem_id). Named workloads
(:data:`COT_WORKLOADS`), ``cot-<model>-<dataset>`` for the models ``r1-qwen7b``
(DeepSeek-R1-Distill-Qwen-7B), ``r1-llama8b`` (R1-Distill-Llama-8B), ``qwen3-8b`` and the
datasets ``aime24``, ``amc23``, ``math500``, read the same files through
:func:`dynasim.datasets.fetch` (source + sha256).

**Data checks.** A probe logged past the trajectory's end (position > ``tokens_used``)
is impossible for the same generation; one more interval of slack is allowed (the last
probe may be logged at the next multiple of 64), such probes are dropped, and a
trajectory whose probes run further than that is excluded and counted in the notes (in
the public data: 108 R1-Distill-Llama-8B trajectories of the ``confirmation`` phase,
whose probe positions run ~1.6x past their logged lengths, so they were probed on
another generation). Bad values raise :class:`~dynasim.errors.InputError` with file,
line and field (the line counts a header as line 1 and assumes one line per record).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING

from dynasim.certaindex import math_equal
from dynasim.datasets import COT_PROBE_FILES, fetch
from dynasim.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

TRAJECTORY_COLUMNS = ("model", "dataset", "seed", "problem_id", "target", "tokens_used",
                      "finished_naturally", "finish_reason", "final_answer", "final_correct",
                      "prompt_tokens")
PROBE_COLUMNS = ("problem_id", "dataset", "model", "base_seed", "token_position",
                 "probe_answer", "is_certain", "probe_out_tokens", "probe_prompt_tokens")
#: Model keys of the named workloads -> the model name as logged.
COT_MODELS = {"r1-qwen7b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
              "r1-llama8b": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
              "qwen3-8b": "Qwen/Qwen3-8B"}
#: Named workloads: name -> (model key, dataset).
COT_WORKLOADS = {f"cot-{m}-{d}": (m, d) for m, d in sorted(COT_PROBE_FILES)}
SELECT_KEYS = ("model", "dataset")


@dataclass(frozen=True)
class CotTrajectory:
    """One logged chain of thought and its probes (everything a CoT program needs).

    Attributes:
        model, dataset, problem_id, seed: which trajectory.
        target: the reference answer.
        prompt_tokens: prompt length (tokens).
        tokens: generated tokens of the whole trajectory (tokens).
        finished: True when it ended by itself (EOS), False when cut at its budget.
        finish_reason: vLLM's (``stop``, ``length``, ``abort``).
        final_answer: the answer at its end (``None``: none).
        final_correct_logged: the data's own grade of ``final_answer``.
        positions: generated tokens at each probe (tokens; increasing multiples of the
            workload's probe interval, all ≤ ``tokens``).
        answers: each probe's answer (``None``: blank).
        hesitant: whether each probe hesitated (the data's ``is_certain`` negated).
        probe_prompt_tokens: each probe's prompt (prompt + generated so far + probe text).
        probe_tokens: tokens each probe decoded (≤ 32).
    """

    model: str
    dataset: str
    problem_id: str
    seed: int
    target: str
    prompt_tokens: int
    tokens: int
    finished: bool
    finish_reason: str
    final_answer: str | None
    final_correct_logged: bool
    positions: tuple[int, ...] = ()
    answers: tuple[str | None, ...] = ()
    hesitant: tuple[bool, ...] = ()
    probe_prompt_tokens: tuple[int, ...] = ()
    probe_tokens: tuple[int, ...] = ()

    @property
    def correct(self) -> bool:
        """``math_equal(final_answer, target)`` (dynasim's grade, not the logged one)."""
        return self.final_answer is not None and math_equal(self.final_answer, self.target)


@dataclass(frozen=True)
class CotWorkload:
    """Trajectories plus what was assumed or dropped to read them.

    Attributes:
        name: workload name or folder.
        trajectories: in (model, dataset, problem_id, seed) order.
        probe_interval: the data's probe spacing (tokens; 64 here).
        notes: data checks' results, shown in outputs.
    """

    name: str
    trajectories: tuple[CotTrajectory, ...]
    probe_interval: int
    notes: str = ""
    sources: tuple[str, ...] = field(default=())

    def groups(self) -> dict[tuple[str, str], tuple[CotTrajectory, ...]]:
        """Trajectories by (model, dataset), in order."""
        out: dict[tuple[str, str], list[CotTrajectory]] = {}
        for t in self.trajectories:
            out.setdefault((t.model, t.dataset), []).append(t)
        return {k: tuple(v) for k, v in out.items()}

    def problems(self) -> dict[tuple[str, str, str], tuple[CotTrajectory, ...]]:
        """Trajectories by (model, dataset, problem_id): the samples of one problem, for
        self-consistency over chains of thought; seeds in order."""
        out: dict[tuple[str, str, str], list[CotTrajectory]] = {}
        for t in self.trajectories:
            out.setdefault((t.model, t.dataset, t.problem_id), []).append(t)
        return {k: tuple(sorted(v, key=lambda t: t.seed)) for k, v in out.items()}


def parse_select(items: Iterable[str] | None) -> dict[str, str]:
    """``["model=qwen", "dataset=aime24"]`` -> ``{"model": "qwen", "dataset": "aime24"}``.

    Raises:
        InputError: an item without ``=`` or with a key other than model/dataset.
    """
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in SELECT_KEYS or not value.strip():
            raise InputError(f"expected model=SUBSTRING or dataset=NAME, got {item!r}",
                             field="select")
        out[key.strip()] = value.strip()
    return out


#: Columns read as text (the others are parsed by pyarrow, then checked).
TEXT_COLUMNS = ("model", "dataset", "problem_id", "target", "finish_reason", "final_answer",
                "probe_answer")


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=dict.fromkeys(TEXT_COLUMNS, str), keep_default_na=False,
                         engine="pyarrow")
    except FileNotFoundError:
        raise InputError("no such file", source=str(path)) from None
    except Exception as exc:  # pyarrow's parse errors carry no line: say what it said
        raise InputError(f"not a readable CSV ({str(exc).splitlines()[0][:120]})",
                         source=str(path)) from None
    for c in required:
        if c not in df.columns:
            raise InputError("missing column in the header", source=str(path), line=1,
                             field=c)
    return df


def _ints(df: pd.DataFrame, col: str, src: Path, lo: int) -> pd.Series:
    import pandas as pd
    from pandas.api.types import is_bool_dtype, is_integer_dtype

    if is_integer_dtype(df[col]) and not is_bool_dtype(df[col]):  # parsed: check range
        bad = df[col] < lo
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise InputError(f"expected an integer >= {lo}, got {df[col].iloc[i]!r}",
                             source=str(src), line=i + 2, field=col)
        return df[col].astype("int64")
    v = pd.to_numeric(df[col].astype(str), errors="coerce")
    bad = v.isna() | (v < lo) | (v != v.round())
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise InputError(f"expected an integer >= {lo}, got {df[col].iloc[i]!r}",
                         source=str(src), line=i + 2, field=col)
    return v.astype("int64")


def _bools(df: pd.DataFrame, col: str, src: Path) -> pd.Series:
    from pandas.api.types import is_bool_dtype

    if is_bool_dtype(df[col]):
        return df[col].astype(bool)
    low = df[col].astype(str).str.strip().str.lower()
    ok = low.isin(("true", "false", "1", "0"))
    if not ok.all():
        i = int((~ok).to_numpy().argmax())
        raise InputError(f"expected True/False, got {df[col].iloc[i]!r}", source=str(src),
                         line=i + 2, field=col)
    return low.isin(("true", "1"))


def _selected(df: pd.DataFrame, select: dict[str, str]) -> pd.Series:
    keep = df["model"].str.lower().str.contains(select.get("model", "").lower(), regex=False)
    if "dataset" in select:
        keep &= df["dataset"].str.lower() == select["dataset"].lower()
    return keep


def read_cot_files(trajectories: str | Path, probe_files: Iterable[str | Path], *,
                   select: dict[str, str] | None = None, name: str | None = None
                   ) -> CotWorkload:
    """Read a trajectories table and its probe files (module docstring) into a workload.

    Args:
        select: ``{"model": substring (case-insensitive), "dataset": name}``; both optional.

    Raises:
        InputError: a missing file or column; a bad value (file, line, field); probe
            positions that are not multiples of one interval; nothing selected.
    """
    import numpy as np
    import pandas as pd

    select = select or {}
    tpath = Path(trajectories)
    tr = _read_csv(tpath, TRAJECTORY_COLUMNS)
    for col, lo in (("tokens_used", 1), ("prompt_tokens", 1), ("seed", 0)):
        tr[col] = _ints(tr, col, tpath, lo)
    for col in ("finished_naturally", "final_correct"):
        tr[col] = _bools(tr, col, tpath)
    tr = tr[_selected(tr, select)]
    frames = []
    for p in probe_files:
        ppath = Path(p)
        df = _read_csv(ppath, PROBE_COLUMNS)
        for col, lo in (("token_position", 1), ("probe_out_tokens", 0),
                        ("probe_prompt_tokens", 1), ("base_seed", 0)):
            df[col] = _ints(df, col, ppath, lo)
        df["is_certain"] = _bools(df, "is_certain", ppath)
        frames.append(df[_selected(df, select)][list(PROBE_COLUMNS)])
    if tr.empty:
        raise InputError(f"no trajectories selected by {select or 'the files'}",
                         source=str(tpath), field="select" if select else None)
    probes = pd.concat(frames, ignore_index=True) if frames else \
        pd.DataFrame(columns=list(PROBE_COLUMNS))
    positions = probes["token_position"].to_numpy("int64")
    interval = int(reduce(math.gcd, np.unique(positions).tolist(), 0)) or 64
    probes = probes.rename(columns={"base_seed": "seed"})
    keys = ["model", "dataset", "seed", "problem_id"]
    ends = tr[keys + ["tokens_used"]]
    probes = probes.merge(ends, on=keys, how="left")
    orphans = int(probes["tokens_used"].isna().sum())
    probes = probes[probes["tokens_used"].notna()]
    last = probes.groupby(keys)["token_position"].max().rename("last").reset_index()
    tr = tr.merge(last, on=keys, how="left")
    mismatched = tr["last"].notna() & (tr["last"] > tr["tokens_used"] + interval)
    bad_keys = tr.loc[mismatched, keys]
    tr = tr[~mismatched]
    probes = probes.merge(bad_keys.assign(_bad=True), on=keys, how="left")
    probes = probes[probes["_bad"].isna()]
    past = probes["token_position"] > probes["tokens_used"]
    dropped = int(past.sum())
    probes = probes[~past]
    group = probes.groupby(keys, sort=False).ngroup().to_numpy()
    probes = probes.iloc[np.lexsort((probes["token_position"].to_numpy(), group))]
    tr = tr.sort_values(["model", "dataset", "problem_id", "seed"], kind="stable")

    answers = probes["probe_answer"].to_numpy(object)
    answers[(probes["probe_answer"].str.strip() == "").to_numpy()] = None  # blank: none
    cols = {"token_position": probes["token_position"].tolist(),
            "probe_answer": answers.tolist(),
            "hesitant": (~probes["is_certain"].astype(bool)).tolist(),
            "probe_prompt_tokens": probes["probe_prompt_tokens"].tolist(),
            "probe_out_tokens": probes["probe_out_tokens"].tolist()}
    g = np.sort(group)
    starts = np.flatnonzero(np.diff(g, prepend=-1)) if len(g) else np.array([], int)
    bounds = np.append(starts, len(g))
    spans = {key: (int(a), int(b)) for key, a, b in zip(
        probes[keys].iloc[starts].itertuples(index=False, name=None), bounds[:-1],
        bounds[1:])}
    out = []
    for r in tr.itertuples(index=False):
        a, b = spans.get((r.model, r.dataset, r.seed, r.problem_id), (0, 0))
        out.append(CotTrajectory(
            r.model, r.dataset, r.problem_id, int(r.seed), r.target, int(r.prompt_tokens),
            int(r.tokens_used), bool(r.finished_naturally), r.finish_reason,
            r.final_answer if r.final_answer.strip() else None, bool(r.final_correct),
            tuple(cols["token_position"][a:b]), tuple(cols["probe_answer"][a:b]),
            tuple(cols["hesitant"][a:b]), tuple(cols["probe_prompt_tokens"][a:b]),
            tuple(cols["probe_out_tokens"][a:b])))
    notes = []
    if mismatched.any():
        per = tr_counts(bad_keys)
        notes.append(f"{int(mismatched.sum())} trajectories excluded: probes logged more "
                     f"than {interval} tokens past their end ({per})")
    if dropped:
        notes.append(f"{dropped} probes past their trajectory's end dropped")
    if orphans:
        notes.append(f"{orphans} probes with no trajectory ignored")
    return CotWorkload(name or str(tpath.parent), tuple(out), interval, "; ".join(notes),
                       (str(tpath), *(str(p) for p in probe_files)))


def tr_counts(keys: pd.DataFrame) -> str:
    """``"model/dataset: n, ..."`` counts of the (model, dataset) pairs in ``keys``."""
    c = keys.groupby(["model", "dataset"]).size()
    return ", ".join(f"{m.split('/')[-1]}/{d}: {n}" for (m, d), n in c.items())


def read_cot_folder(path: str | Path, select: dict[str, str] | None = None) -> CotWorkload:
    """A folder in the governor_cot_probes layout: ``trajectories.csv`` and every
    ``raw/**/dense_simple32/probes.csv`` under it.

    Raises:
        InputError: no ``trajectories.csv`` or no probe file there; see
            :func:`read_cot_files`.
    """
    root = Path(path)
    traj = root / "trajectories.csv"
    if not traj.is_file():
        raise InputError("not a long chain-of-thought folder: no trajectories.csv",
                         source=str(root))
    probes = sorted(root.glob("raw/**/dense_simple32/probes.csv"))
    if not probes:
        raise InputError("no raw/**/dense_simple32/probes.csv under the folder",
                         source=str(root))
    return read_cot_files(traj, probes, select=select, name=str(root))


def load_cot(name_or_path: str, select: dict[str, str] | None = None) -> CotWorkload:
    """A named CoT workload (:data:`COT_WORKLOADS`) or a folder (:func:`read_cot_folder`).

    Raises:
        InputError: neither a known name nor a folder; see the readers.
    """
    if name_or_path in COT_WORKLOADS:
        key, dataset = COT_WORKLOADS[name_or_path]
        sel = {**(select or {}), "model": COT_MODELS[key], "dataset": dataset}
        files = [fetch(n) for n in COT_PROBE_FILES[(key, dataset)]]
        return read_cot_files(fetch("cot-trajectories"), files, select=sel,
                              name=name_or_path)
    if Path(name_or_path).is_dir():
        return read_cot_folder(name_or_path, select)
    raise InputError(f"no such folder, and not a CoT workload name (names: "
                     f"{', '.join(COT_WORKLOADS)})", source=name_or_path)


def is_cot_workload(name_or_path: str) -> bool:
    """True for a CoT workload name or a folder holding ``trajectories.csv``."""
    return name_or_path in COT_WORKLOADS or (Path(name_or_path) / "trajectories.csv").is_file()
