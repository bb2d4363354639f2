"""Tree-of-Thoughts Game-of-24 searches (``game24-tot-log``) as replayable tree programs.

ToT (princeton-nlp/tree-of-thought-llm, ``methods/bfs.py``, ``tasks/game24.py``): GPT-4 BFS,
4 steps, greedy width 5. Per step: one *propose* call per kept branch (its output lines
become child proposals), then one *value* request per new proposal, sampled n=3 (value =
sum of judgements sure=20 / likely=1 / impossible=0.001, at most 60; ``reward = value / 60``
in [0, 1]), then the top 5 by value (stable sort) are kept. Value requests are skipped for
a proposal repeated within the step (value 0) and for a prompt already evaluated, by any
earlier puzzle too (ToT's cache lives on the task); replaying that cache over the log
reproduces every logged value. Prompts are (template, variable part) segments:
``game24-tot-propose`` + numbers left, or ToT's 5-shot CoT prompt ``game24-tot-cot`` +
puzzle + steps when the state is ``left: 24``; ``game24-tot-value`` + numbers left, or the
judge prompt ``game24-tot-value-last`` + puzzle + answer for an ``Answer:`` line. The two
last-step templates are separate because the fit needs them (0.1% vs 1.7% median error).

Tokens: the log has per-puzzle OpenAI usage only (an n=3 request's prompt billed once).
A text's tokens are ``round(chars * tokens_per_char)``, the ratio measured on the CoT
log's sample texts against their cl100k counts (``game24-cot-samples``: 0.567). Template
lengths and per-sample value output lengths (by numbers left 1 / 2 / >=3, and the judge)
are fitted by ``scipy.optimize.lsq_linear`` (bounds >= 1) so per-puzzle sums of the
modelled calls match the logged usage of the 100 puzzles. Result (:func:`fit_report`):
templates propose 169, CoT 442, value 363, value-last 281 tokens (ToT's texts: 275 / 801 /
686 / 639 chars, ~156 / 454 / 389 / 362 tokens); value outputs 35 / 43 / 69 tokens per
sample, judge 1 (at the bound). Per-puzzle error of the rounded calls: prompt median 0.1%,
max 0.7%; completion median 3.8%, max 22% (only a per-class mean value output is modelled).

Narrower replays (:meth:`TreeSpec.run`) can only follow branches the log expanded: with
uniform width 1 (2, 3, 4) 19 (10, 3, 1) of 100 runs end early (``TreeRun.truncated``).
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import lsq_linear

from dynasim.datasets import fetch
from dynasim.errors import InputError, read_text
from dynasim.workloads.call import Call
from dynasim.workloads.game24 import answer_expression, check_answer

PROPOSE, COT = "game24-tot-propose", "game24-tot-cot"
VALUE, VALUE_LAST = "game24-tot-value", "game24-tot-value-last"
TEMPLATES = (PROPOSE, COT, VALUE, VALUE_LAST)
#: Value-output classes: numbers left in the state (1, 2, >=3) and the last-step judge.
OUTPUT_CLASSES = ("left1", "left2", "left3+", "judge")
N_EVALUATE, VALUE_MAX = 3, 60.0
#: Characters of ToT's templates without placeholders (prompts/game24.py), for comparison.
TEMPLATE_CHARS = {PROPOSE: 275, COT: 801, VALUE: 686, VALUE_LAST: 639}


@dataclass(frozen=True, slots=True)
class Proposal:
    """One proposal: ``text`` the full partial output ``y`` as logged (parent's lines + the
    new line); ``parent`` an index into the previous step's proposals (-1: root); ``value``
    the logged sum (0..60), ``reward = value / 60``; ``value_called`` whether the log made
    its value request, ``precached`` whether an earlier puzzle had evaluated its prompt;
    ``value_calls`` its 3 samples (rewards decoded from ``value``, order unknown)."""

    parent: int
    text: str
    value: float
    reward: float
    value_called: bool
    precached: bool
    value_key: str
    value_calls: tuple[Call, ...]


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One logged step: its proposals, and (parent index, propose Call) per expanded parent."""

    proposals: tuple[Proposal, ...]
    propose: tuple[tuple[int, Call], ...]


@dataclass(frozen=True, slots=True)
class StepRun:
    """One replayed step: calls issued, kept proposal indexes (ranked), their rewards'
    max and mean, and ``passed_over``: how many of the top ``width`` candidates the log
    never expanded (so they could not be kept)."""

    propose: tuple[Call, ...]
    value: tuple[Call, ...]
    kept: tuple[int, ...]
    reward_max: float
    reward_mean: float
    passed_over: int = 0


@dataclass(frozen=True, slots=True)
class TreeRun:
    """A replayed search: its steps, final top-1 answer expression and its correctness;
    ``truncated``: a step had no candidate the log expanded, so the replay stopped there
    (later steps are empty, ``answer`` None) -- a limit of replaying a log."""

    steps: tuple[StepRun, ...]
    answer: str | None
    correct: bool
    truncated: bool = False

    @property
    def calls(self) -> tuple[Call, ...]:
        """All calls in issue order (per step: propose calls, then value samples)."""
        return tuple(c for s in self.steps for c in (*s.propose, *s.value))


@dataclass(frozen=True)
class TreeSpec:
    """One logged search. ``numbers``: the puzzle; ``usage``: logged (prompt, completion)
    tokens; ``logged_select``: kept texts per step; ``logged_correct``: infos r of ys[0]."""

    question_id: str
    numbers: str
    steps: tuple[StepSpec, ...]
    logged_select: tuple[tuple[str, ...], ...]
    logged_correct: bool
    usage: tuple[int, int]

    @property
    def num_steps(self) -> int:
        """Search steps (4 for Game of 24)."""
        return len(self.steps)

    @property
    def max_width(self) -> int:
        """The logged beam width (5): the widest :meth:`run` can replay."""
        return max(len(kept) for kept in self.logged_select)

    def run(self, widths: Sequence[int], cross_puzzle_cache: bool = True) -> TreeRun:
        """Replay keeping ``widths[k]`` (1..5) proposals after step k (all 5: the log).

        Candidates are the logged children of the kept parents, in kept order, ranked by
        logged value (stable sort, as ToT). Before the last step only branches the log
        expanded can be kept (others have no logged children): they are passed over and
        counted, so kept sets are subsets of the logged ones. A value request is issued
        unless the text repeats in the step, the prompt was evaluated earlier in this
        replay, or (``cross_puzzle_cache``) by an earlier puzzle of the log -- exact for
        the logged run, an approximation for narrower ones.
        """
        if len(widths) != len(self.steps) or not all(
                1 <= int(w) <= self.max_width for w in widths):
            raise InputError(f"need {len(self.steps)} widths in 1..{self.max_width}, got "
                             f"{list(widths)}", field="widths")
        kept, seen, runs = (-1,), set(), []
        for k, (spec, width) in enumerate(zip(self.steps, widths)):
            cands = [i for p in kept for i, q in enumerate(spec.proposals) if q.parent == p]
            local, value = set(), []
            for q in (spec.proposals[i] for i in cands):
                if q.text in local:
                    continue
                local.add(q.text)
                if q.value_key in seen or (cross_puzzle_cache and q.precached):
                    continue
                seen.add(q.value_key)
                value.extend(q.value_calls)
            ranked = sorted(cands, key=lambda i: spec.proposals[i].value, reverse=True)
            ok = ({p for p, _ in self.steps[k + 1].propose} if k + 1 < len(self.steps)
                  else set(ranked))
            chosen = [i for i in ranked if i in ok][:int(width)]
            rewards = [spec.proposals[i].reward for i in chosen] or [0.0]
            calls = dict(spec.propose)
            runs.append(StepRun(tuple(calls[p] for p in kept), tuple(value), tuple(chosen),
                                max(rewards), float(np.mean(rewards)),
                                sum(i not in ok for i in ranked[:int(width)])))
            kept = runs[-1].kept
        final = self.steps[-1].proposals[kept[0]].text if kept else ""
        last = final.strip().split("\n")[-1]
        answer = answer_expression(last) if "answer" in last.lower() else None
        return TreeRun(tuple(runs), answer, check_answer(self.numbers, final), not kept)


def _current(y: str) -> str:
    """ToT's ``get_current_numbers``: the numbers after ``left:`` on the last line."""
    return y.strip().split("\n")[-1].split("left: ")[-1].split(")")[0]


def _value_prompt(x: str, y: str) -> tuple[str, str, str]:
    """(template, variable text, output class) of ToT's ``value_prompt_wrap(x, y)``."""
    last = y.strip().split("\n")[-1]
    if "left: " not in last:
        return VALUE_LAST, f"{x}\n{last.lower().replace('answer: ', '')}", "judge"
    numbers = _current(y)
    return VALUE, numbers, OUTPUT_CLASSES[min(len(numbers.split()), 3) - 1]


def _judgements(value: float) -> tuple[float, ...]:
    """Per-sample rewards decoded from a value sum: sure 1, likely 1/20, impossible
    0.001/20, unparsed (or ToT's zero rule) 0; all 0 when the sum does not decode."""
    sure = int(value // 20 + 1e-9)
    likely = int(value - 20 * sure + 1e-9)
    imp = round((value - 20 * sure - likely) * 1000)
    rest = N_EVALUATE - sure - likely - imp
    if rest < 0 or abs(20 * sure + likely + imp / 1000 - value) > 1e-6:
        return (0.0,) * N_EVALUATE
    return (1.0,) * sure + (0.05,) * likely + (5e-5,) * imp + (0.0,) * rest


def _tokens_per_char() -> float:
    """cl100k tokens per character of GPT-4 Game-of-24 CoT outputs (same step format)."""
    log_path, csv_path = fetch("game24-cot-log"), fetch("game24-cot-samples")
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            counts = {(int(r["question_id"]), int(r["sample_idx"])):
                      int(r["output_tokens_cl100k"]) for r in csv.DictReader(f)}
        pairs = [(len(y), counts[(int(p["idx"]), i)])
                 for p in json.loads(log_path.read_text(encoding="utf-8"))
                 for i, y in enumerate(p["ys"])]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"CoT samples do not match the CoT log ({exc!r})",
                         source=str(csv_path), field="output_tokens_cl100k") from None
    return sum(t for _, t in pairs) / sum(c for c, _ in pairs)


def _parse(path: Path, ratio: float) -> list[dict]:
    """Validated puzzles; per step ``props`` (parent, y, value, called, precached,
    template, key, variable tokens, output class) and ``propose`` (parent, template, key,
    variable tokens, output tokens), ``parent`` indexing the previous step's proposals."""
    src, tok = str(path), (lambda text: max(1, round(len(text) * ratio)))
    try:
        log = json.loads(read_text(path))
        puzzles, prev, cache = [], (0, 0), set()
        for p in log:
            x, ys, kept, steps, seen = p["steps"][0]["x"], [""], [-1], [], set()
            for k, s in enumerate(p["steps"]):
                if s["ys"] != ys or len(s["values"]) != len(s["new_ys"]):
                    raise InputError(f"puzzle {p['idx']} step {k}: ys/values do not chain",
                                     source=src, field="steps")
                owner, local, props = _groups(ys, s["new_ys"], src, p["idx"], k), set(), []
                for y, v, j in zip(s["new_ys"], map(float, s["values"]), owner):
                    if not 0 <= v <= VALUE_MAX:
                        raise InputError(f"value {v} not in [0, 60]", source=src,
                                         field="values")
                    tpl, var, cls = _value_prompt(x, y)
                    key = f"{tpl}:{var}"
                    called = y not in local and key not in cache and key not in seen
                    props.append((kept[j], y, v, called, key in cache, tpl, key, tok(var), cls))
                    local.add(y)
                    seen.add(key)
                propose = []
                for j, y in enumerate(ys):
                    tpl = COT if _current(y or x) == "24" else PROPOSE
                    var = f"{x}\nSteps:{y}" if tpl == COT else _current(y or x)
                    out = "\n".join(c[len(y):-1] for c, o in zip(s["new_ys"], owner) if o == j)
                    propose.append((kept[j], tpl, f"{tpl}:{var}", tok(var), tok(out)))
                rank = sorted(range(len(props)), key=lambda i: props[i][2], reverse=True)[:5]
                if [props[i][1] for i in rank] != s["select_new_ys"]:
                    raise InputError(f"puzzle {p['idx']} step {k}: select_new_ys is not the"
                                     " greedy top 5", source=src, field="select_new_ys")
                steps.append((props, propose))
                ys, kept = s["select_new_ys"], rank
            cache |= seen
            usage = (p["usage_so_far"]["prompt_tokens"], p["usage_so_far"]["completion_tokens"])
            puzzles.append(dict(idx=p["idx"], x=x, steps=steps, r=bool(p["infos"][0]["r"]),
                                usage=(usage[0] - prev[0], usage[1] - prev[1]),
                                select=tuple(tuple(s["select_new_ys"]) for s in p["steps"])))
            prev = usage
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, InputError):
            raise
        if isinstance(exc, json.JSONDecodeError):
            raise InputError(f"not valid JSON ({exc.msg})", source=src,
                             line=exc.lineno) from None
        raise InputError(f"malformed ToT log ({type(exc).__name__}: {exc})", source=src,
                         field=str(exc.args[0]) if isinstance(exc, KeyError) else None
                         ) from None
    if not puzzles:
        raise InputError("no puzzles in the ToT log", source=src)
    return puzzles


def _groups(ys: list[str], new_ys: list[str], src: str, idx: int, k: int) -> list[int]:
    """Parent index (into ``ys``) of each of ``new_ys``: ToT chains each parent's
    proposals in order, >= 1 each. Equal parents are split where a proposal repeats
    (one case in the pinned log: puzzle 937, step 1)."""
    j, out, mine = 0, [], set()
    for y in new_ys:
        while j < len(ys) and not (y.startswith(ys[j]) and not (
                j + 1 < len(ys) and ys[j + 1] == ys[j] and y in mine)):
            j, mine = j + 1, set()
        if j == len(ys):
            raise InputError(f"puzzle {idx} step {k}: proposal {y!r} has no parent",
                             source=src, field="new_ys")
        out.append(j)
        mine.add(y)
    if sorted(set(out)) != list(range(len(ys))):
        raise InputError(f"puzzle {idx} step {k}: a kept branch has no proposal",
                         source=src, field="new_ys")
    return out


def _fit(puzzles: list[dict]) -> tuple[dict, dict]:
    """Least-squares template tokens and per-sample value output tokens (both >= 1)."""
    rows = []  # per puzzle: template counts, output-class samples, known prompt/output
    for pz in puzzles:
        n, m, var, out = dict.fromkeys(TEMPLATES, 0), dict.fromkeys(OUTPUT_CLASSES, 0), 0, 0
        for props, propose in pz["steps"]:
            for *_, tpl, _, var_tokens, out_tokens in propose:
                n[tpl], var, out = n[tpl] + 1, var + var_tokens, out + out_tokens
            for *_, called, _, tpl, _, var_tokens, cls in props:
                if called:
                    n[tpl], m[cls], var = n[tpl] + 1, m[cls] + N_EVALUATE, var + var_tokens
        rows.append(([n[t] for t in TEMPLATES], [m[c] for c in OUTPUT_CLASSES],
                     pz["usage"][0] - var, pz["usage"][1] - out))
    fits = [lsq_linear(np.array([r[i] for r in rows], float),
                       np.array([r[i + 2] for r in rows], float), bounds=(1, np.inf)).x
            for i in (0, 1)]
    return dict(zip(TEMPLATES, fits[0].tolist())), dict(zip(OUTPUT_CLASSES, fits[1].tolist()))


def _spec(pz: dict, tpl: dict, outs: dict) -> TreeSpec:
    """A TreeSpec with its Calls, from a parsed puzzle and the fitted constants."""
    steps = []
    for props, propose in pz["steps"]:
        calls = tuple((parent, Call(((t, round(tpl[t])), (key, var)), out))
                      for parent, t, key, var, out in propose)
        proposals = tuple(Proposal(parent, y, v, min(v / VALUE_MAX, 1.0), called, pre, key,
                                   tuple(Call(((t, round(tpl[t])), (key, var)),
                                              round(outs[cls]), reward=r)
                                         for r in _judgements(v)))
                          for parent, y, v, called, pre, t, key, var, cls in props)
        steps.append(StepSpec(proposals, calls))
    return TreeSpec(str(pz["idx"]), pz["x"], tuple(steps), pz["select"], pz["r"], pz["usage"])


def modelled_usage(run: TreeRun) -> tuple[int, int]:
    """(prompt, completion) tokens of a run as OpenAI bills them: an n=3 value request's
    prompt once, every sample's output."""
    prompt = sum(c.prompt_tokens for s in run.steps
                 for c in (*s.propose, *s.value[::N_EVALUATE]))
    return prompt, sum(c.output_tokens for c in run.calls)


@functools.lru_cache(maxsize=1)
def _load() -> tuple[tuple[TreeSpec, ...], dict]:
    ratio = _tokens_per_char()
    puzzles = _parse(fetch("game24-tot-log"), ratio)
    tpl, outs = _fit(puzzles)
    specs = tuple(_spec(pz, tpl, outs) for pz in puzzles)
    err = 100 * np.array([[abs(m - u) / u for m, u in zip(
        modelled_usage(s.run([5] * len(s.steps))), s.usage)] for s in specs])
    return specs, dict(
        tokens_per_char=ratio, template_tokens=tpl, value_output_tokens=outs,
        template_chars=dict(TEMPLATE_CHARS), n_puzzles=len(specs),
        prompt_median_abs_pct_err=float(np.median(err[:, 0])),
        prompt_max_abs_pct_err=float(err[:, 0].max()),
        completion_median_abs_pct_err=float(np.median(err[:, 1])),
        completion_max_abs_pct_err=float(err[:, 1].max()))


def load_tot_game24() -> list[TreeSpec]:
    """The logged ToT searches (100 puzzles, 900-999) with fitted token counts, parsed and
    fitted once per process. Raises InputError for a missing or malformed log."""
    return list(_load()[0])


def fit_report() -> dict:
    """Token model: ``tokens_per_char``; fitted ``template_tokens`` and per-sample
    ``value_output_tokens`` (floats; Calls use them rounded); ToT's ``template_chars``;
    per-puzzle absolute % error (median, max) of modelled vs logged prompt and
    completion tokens over the ``n_puzzles`` logged runs."""
    report = _load()[1]
    return {k: dict(v) if isinstance(v, dict) else v for k, v in report.items()}
