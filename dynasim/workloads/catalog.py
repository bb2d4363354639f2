"""Reasoning workloads: real multi-sample traces turned into programs, by name or path.

Named workloads (all read through :func:`dynasim.datasets.fetch`, source + sha256):

=================== ====================================================================
``game24-sc``        Game of 24, GPT-4, 100 puzzles x 100 chain-of-thought samples
                     (ToT repo ``naive_cot_sample_100`` log); SC programs.
``game24-direct-sc`` the same puzzles, 100 direct-answer samples each (``naive_standard``).
``date-sc``          Date Understanding, code-davinci-002 least-to-most, 359 questions x
                     40 samples (Faithful-CoT); SC programs.
``game24-tot``       Tree-of-Thoughts BFS logs: proposals, value scores, kept branches per
                     step, as tree-search programs with a reward (:mod:`dynasim.workloads.tot`).
=================== ====================================================================

**Prompt tokens** (the per-sample CSVs hold output tokens only):

* Game of 24: OpenAI logged the prompt tokens; ToT's ``gpt()`` sends n = 100 as five calls
  of n = 20, each billed its prompt once, so one prompt = per-puzzle usage / 5 = **437**
  tokens (CoT) and **200** (direct). The log does not say where the puzzle starts; we
  assume the puzzle-specific tail is the last 8 tokens (``Input: a b c d`` and newline)
  and the rest is a few-shot template shared by every puzzle.
* Date: the log holds no prompt. We measured it: the public least-to-most prompt file
  (Faithful-CoT ``source/prompt/date/LtM_prompt.txt``, 4,312 characters) plus the
  question and the answer lead-in, at the characters-per-token ratio of this log's own
  completions against their cl100k counts (:data:`DATE_TOKENS_PER_CHAR`).

**Answers** are clustered by :func:`~dynasim.certaindex.math_equal` for Game of 24 (an
expression's value) and by exact match for dates. Correctness always comes from the
trace's ``is_correct`` (many different expressions are right).

``--workload PATH`` reads any CSV with the columns ``question_id, sample_idx,
extracted_answer, gold_answer, is_correct`` and ``output_tokens`` or
``output_tokens_cl100k``, optionally ``prompt_tokens`` (else ``default_prompt_tokens``,
256, is assumed and reported). Each question becomes one SC program whose samples are in
``sample_idx`` order.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dynasim.certaindex import Equivalence, exact_match, math_equal
from dynasim.datasets import fetch
from dynasim.errors import InputError, read_text
from dynasim.workloads.call import Call, Segment
from dynasim.workloads.cot_run import problem_key
from dynasim.workloads.mix import is_mix, mix_parts
from dynasim.workloads.program import ProgramSpec, difficulty_of

if TYPE_CHECKING:
    from dynasim.workloads.cot import CotWorkload

REQUIRED = ("question_id", "sample_idx", "extracted_answer", "gold_answer", "is_correct")
TOKEN_COLUMNS = ("output_tokens", "output_tokens_cl100k")

GAME24_COT_PROMPT = 437
GAME24_DIRECT_PROMPT = 200
GAME24_PUZZLE_TAIL = 8
DATE_TEMPLATE_CHARS = 4312
DATE_LEAD_IN = "\n\nQ: {q}\nA: To answer this question, we need to answer the " \
               "following subquestions:\n"


@dataclass(frozen=True)
class Workload:
    """A set of programs plus what was assumed to build them.

    Attributes:
        name: workload name or CSV path.
        programs: one :class:`~dynasim.workloads.program.ProgramSpec` per question, file order.
        notes: assumptions made (e.g. prompt lengths), shown in outputs.
        mix: for a mixed workload (:mod:`dynasim.workloads.mix`), its parts' names and
            arrival proportions; ``()`` otherwise.
    """

    name: str
    programs: tuple[ProgramSpec, ...]
    notes: str = ""
    mix: tuple[tuple[str, float], ...] = ()


def _int(value: str, src: str, line: int, field: str, lo: int = 0) -> int:
    try:
        v = int(value)
    except ValueError:
        raise InputError(f"expected an integer, got {value!r}", source=src, line=line,
                         field=field) from None
    if v < lo:
        raise InputError(f"{v} must be >= {lo}", source=src, line=line, field=field)
    return v


def read_samples(path: str | Path, *, equivalent: Equivalence = exact_match,
                 prompt_of: Callable[[str], tuple[Segment, ...]] | None = None,
                 default_prompt_tokens: int = 256,
                 algorithm: str = "sc", name: str | None = None) -> Workload:
    """Read a per-sample CSV into SC (or CoT) programs.

    Args:
        prompt_of: ``prompt_of(question_id) -> segments`` when the file has no
            ``prompt_tokens`` column (named workloads: template + question tail).
        default_prompt_tokens: prompt length when the file has no ``prompt_tokens``.
        algorithm: ``sc`` (all samples) or ``cot`` (the first sample as one long chain).

    A sample with 0 output tokens (an empty completion; e.g. 40 of the 20,000 samples of
    a public SC log) is kept and counted as 1 token: vLLM still generates the EOS token
    (``min_tokens`` 0, the request ends at its first token). How many is said in the
    workload's ``notes``.

    Raises:
        InputError: missing or non-UTF-8 file, missing header or column; a bad value
            (negative token count, ...), naming file, line, field.
    """
    src = str(path)
    zeros = 0
    with io.StringIO(read_text(path), newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        if not cols:
            raise InputError("empty workload file: no header", source=src, line=1)
        for c in REQUIRED:
            if c not in cols:
                raise InputError("missing column in the header", source=src, line=1,
                                 field=c)
        tok = next((c for c in TOKEN_COLUMNS if c in cols), None)
        if tok is None:
            raise InputError("missing column in the header (need output_tokens or "
                             "output_tokens_cl100k)", source=src, line=1,
                             field="output_tokens")
        has_prompt = "prompt_tokens" in cols
        by_q: dict[str, list[tuple[int, Call]]] = {}
        for line, row in enumerate(reader, start=2):
            q = (row["question_id"] or "").strip()
            if not q:
                raise InputError("empty value", source=src, line=line, field="question_id")
            idx = _int(row["sample_idx"], src, line, "sample_idx")
            ok = row["is_correct"].strip()
            if ok not in ("0", "1", "True", "False", "true", "false"):
                raise InputError(f"expected 0/1, got {ok!r}", source=src, line=line,
                                 field="is_correct")
            out = _int(row[tok], src, line, tok, lo=0)
            if out == 0:  # an empty completion: the model still generated EOS
                zeros += 1
                out = 1
            if has_prompt:
                segs = ((f"{src}#q{q}", _int(row["prompt_tokens"], src, line,
                                             "prompt_tokens", lo=1)),)
            elif prompt_of is not None:
                segs = prompt_of(q)
            else:
                segs = ((f"{src}#template", default_prompt_tokens),)
            ans = row["extracted_answer"]
            by_q.setdefault(q, []).append(
                (idx, Call(segs, out, answer=ans, correct=ok in ("1", "True", "true"))))
    if not by_q:
        raise InputError("empty workload: a header but no samples", source=src)
    programs = []
    for q, rows in by_q.items():
        rows.sort(key=lambda r: r[0])
        calls = tuple(c for _, c in rows)
        if algorithm == "cot":
            calls = calls[:1]
        programs.append(ProgramSpec(q, algorithm, calls,
                                    difficulty_of([bool(c.correct) for _, c in rows]),
                                    equivalent=equivalent))
    notes = [] if has_prompt or prompt_of else \
        [f"no prompt_tokens column: assumed {default_prompt_tokens} prompt tokens"]
    if zeros:
        notes.append(f"{zeros} sample{'s' if zeros > 1 else ''} with 0 output tokens "
                     "counted as 1 (an empty completion still generates EOS)")
    return Workload(name or src, tuple(programs), "; ".join(notes))


def _game24(name: str, data: str, prompt_len: int) -> Workload:
    key = "game24-cot" if "cot" in data else "game24-direct"

    def prompt_of(q: str):
        return ((f"{key}-template", prompt_len - GAME24_PUZZLE_TAIL),
                (f"game24-puzzle-{q}", GAME24_PUZZLE_TAIL))

    w = read_samples(fetch(data), equivalent=math_equal, prompt_of=prompt_of, name=name)
    return Workload(name, w.programs, "; ".join(filter(None, (
        f"prompt {prompt_len} tokens from OpenAI usage (last {GAME24_PUZZLE_TAIL} per "
        "puzzle)", w.notes))))


def date_tokens_per_char() -> float:
    """cl100k tokens per character of the Date log's completions (measured, not assumed):
    total ``output_tokens_cl100k`` of the derived CSV over the characters of the same
    samples' completion texts."""
    texts = {}
    with open(fetch("date-predictions"), encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            texts[str(d["id"])] = d["completions"]
    chars = tokens = 0
    with open(fetch("date-samples"), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            chars += len(texts[row["question_id"]][int(row["sample_idx"])])
            tokens += int(row["output_tokens_cl100k"])
    return tokens / chars


def _date(name: str) -> Workload:
    ratio = date_tokens_per_char()
    template = round(DATE_TEMPLATE_CHARS * ratio)
    questions = {}
    with open(fetch("date-gold"), encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            questions[str(d["id"])] = d["question"]

    def prompt_of(q: str):
        tail = max(1, round(len(DATE_LEAD_IN.format(q=questions[q])) * ratio))
        return (("date-ltm-template", template), (f"date-question-{q}", tail))

    w = read_samples(fetch("date-samples"), prompt_of=prompt_of, name=name)
    return Workload(name, w.programs, "; ".join(filter(None, (
        f"prompt = LtM template {template} tokens + question ({ratio:.3f} tokens/char "
        "measured)", w.notes))))


def _game24_tot(name: str) -> Workload:
    from dynasim.workloads import tot

    specs = tot.load_tot_game24()
    with open(fetch("game24-tot-log"), encoding="utf-8") as f:  # difficulty: final beam
        finals = {str(e["idx"]): [bool(i["r"]) for i in e["infos"]] for e in json.load(f)}
    return Workload(name, tuple(ProgramSpec(t.question_id, "tot", (),
                                            difficulty_of(finals[t.question_id]), t)
                                for t in specs),
                    "per-call tokens apportioned from per-puzzle OpenAI usage (dynasim.workloads.tot)")


WORKLOADS = {
    "game24-sc": lambda: _game24("game24-sc", "game24-cot-samples", GAME24_COT_PROMPT),
    "game24-direct-sc": lambda: _game24("game24-direct-sc", "game24-standard-samples",
                                        GAME24_DIRECT_PROMPT),
    "date-sc": lambda: _date("date-sc"),
    "game24-tot": lambda: _game24_tot("game24-tot"),
}


def cot_program_specs(workload: CotWorkload) -> tuple[ProgramSpec, ...]:
    """Long chain-of-thought programs (:mod:`dynasim.workloads.cot_run`): one
    :class:`~dynasim.workloads.program.ProgramSpec` per trajectory (algorithm ``cot``,
    its trajectory attached, its main call's prompt keyed by problem so the samples of
    one problem share it); difficulty from the trajectories of the same
    problem (all correct 1, mixed 2, all wrong 3, Dynasor §4)."""
    by_problem: dict[str, list[bool]] = {}
    for t in workload.trajectories:
        by_problem.setdefault(problem_key(t), []).append(t.correct)
    specs = []
    for t in workload.trajectories:
        main = Call(((f"cot-prompt:{problem_key(t)}", t.prompt_tokens),), t.tokens,
                    t.final_answer, t.correct)
        specs.append(ProgramSpec(f"{problem_key(t)}#{t.seed}", "cot", (main,),
                                 difficulty_of(by_problem[problem_key(t)]), trajectory=t))
    return tuple(specs)


def load_workload(name_or_path: str, **kwargs) -> Workload:
    """A named workload (:data:`WORKLOADS`), a per-sample CSV path, or a mix of them
    (``"game24-sc:3,date-sc:1"``, :mod:`dynasim.workloads.mix`).

    Raises:
        InputError: neither a known name nor a readable CSV.
    """
    if name_or_path in WORKLOADS:
        return WORKLOADS[name_or_path]()
    from dynasim.workloads.cot import is_cot_workload, load_cot  # pandas: imported late

    if is_cot_workload(name_or_path):  # long chain of thought (governor_cot_probes)
        cot = load_cot(name_or_path)
        return Workload(name_or_path, cot_program_specs(cot), cot.notes)
    if is_mix(name_or_path):
        mix, programs, notes = mix_parts(name_or_path,
                                         lambda name: load_workload(name, **kwargs))
        return Workload(name_or_path, tuple(programs), notes, mix=tuple(mix))
    if Path(name_or_path).is_file():
        return read_samples(name_or_path, **kwargs)
    raise InputError(f"no such workload file, and not a workload name (names: "
                     f"{', '.join(WORKLOADS)})", source=name_or_path)
