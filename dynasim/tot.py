"""Tree-of-Thoughts Game-of-24 searches as replayable tree-search programs with a reward.

Source: ``game24-tot-log`` (princeton-nlp/tree-of-thought-llm, GPT-4, BFS with
``method_generate=propose``, ``n_evaluate_sample=3``, ``n_select_sample=5``, greedy; code in
``src/tot/methods/bfs.py``, ``tasks/game24.py``). Per puzzle, 4 steps: one *propose* call
per kept branch (its output lines become child proposals), then one *value* request per
new proposal sampled 3 times (value = sum of the 3 judgements, sure=20 / likely=1 /
impossible=0.001, so at most 60; ``reward = value / 60`` in [0, 1]), then the top 5 by value
(stable sort) are kept. ToT skips value requests for duplicate proposals within a step
(value 0) and for value prompts already evaluated, by *any earlier puzzle* too (its value
cache lives on the task object). Replaying that cache over the log reproduces all logged
values; :attr:`Proposal.precached` marks prompts that an earlier puzzle had evaluated.

Prompts (segments: shared template, then the variable part): propose
``game24-tot-propose`` + current numbers, or -- when the state is ``left: 24`` -- ToT's
5-shot CoT prompt ``game24-tot-cot`` + puzzle + steps so far; value ``game24-tot-value`` +
current numbers, or for an ``Answer:`` line the judge prompt ``game24-tot-value-last`` +
puzzle + answer. Two distinct last-step templates are used because the fit needs them
(median error 0.1% with them, 1.7% folding them into propose/value).

Token counts: the log has per-puzzle OpenAI usage only (``prompt_tokens`` counts an n=3
request's prompt once). Text tokens are estimated as ``chars * tokens_per_char``, measured
on the CoT log's sample texts against their cl100k counts (``game24-cot-samples``, 0.567).
The template lengths and the per-sample value output lengths (one per class: 1, 2, >=3
numbers left, and the last-step judge) are fitted with ``scipy.optimize.lsq_linear``
(bounds >= 1) so that per-puzzle sums of the modelled calls match the logged usage over the
100 puzzles. Fitted on the pinned log (see :func:`fit_report`): templates propose 168,
CoT 442, value 363, value-last 282 tokens (ToT's template texts are 275/801/686/639 chars,
i.e. ~156/454/389/362 tokens at the measured ratio); value outputs per sample 34 / 43 / 69
tokens (1 / 2 / >=3 numbers) and 1 token for the judge (the bound). Per-puzzle residual of
the rounded calls: prompt tokens median 0.1%, max 0.7%; completion tokens median 3.8%,
max 21% (value outputs vary per call; only their per-class mean is modelled).
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear

from dynasim.call import Call
from dynasim.datasets import fetch
from dynasim.errors import InputError
from dynasim.game24 import answer_expression, check_answer

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
    max and mean, and ``passed_over``: better-ranked candidates the log never expanded."""

    propose: tuple[Call, ...]
    value: tuple[Call, ...]
    kept: tuple[int, ...]
    reward_max: float
    reward_mean: float
    passed_over: int = 0


@dataclass(frozen=True, slots=True)
class TreeRun:
    """A replayed search: its steps, final top-1 answer expression and its correctness."""

    steps: tuple[StepRun, ...]
    answer: str | None
    correct: bool

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

    def run(self, widths: Sequence[int], cross_puzzle_cache: bool = True) -> TreeRun:
        """Replay keeping ``widths[k]`` proposals after step k (all 5: the logged run).

        Candidates are the logged children of the kept parents, in kept order, ranked by
        logged value (stable sort, as ToT). Before the last step only branches the log
        expanded can be kept (others have no logged children): they are passed over and
        counted, so kept sets are subsets of the logged ones. A value request is issued
        unless the text repeats in the step, the prompt was evaluated earlier in this
        replay, or (``cross_puzzle_cache``) by an earlier puzzle of the log -- exact for
        the logged run, an approximation for narrower ones.
        """
        if len(widths) != len(self.steps) or any(int(w) < 1 for w in widths):
            raise InputError(f"need {len(self.steps)} widths >= 1, got {list(widths)}",
                             field="widths")
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
            cut = ranked.index(chosen[-1]) + 1 if chosen else 0
            rewards = [spec.proposals[i].reward for i in chosen] or [0.0]
            calls = dict(spec.propose)
            runs.append(StepRun(tuple(calls[p] for p in kept), tuple(value), tuple(chosen),
                                max(rewards), float(np.mean(rewards)),
                                sum(i not in ok for i in ranked[:cut])))
            kept = runs[-1].kept
        final = self.steps[-1].proposals[kept[0]].text if kept else ""
        last = final.strip().split("\n")[-1]
        answer = answer_expression(last) if "answer" in last.lower() else None
        return TreeRun(tuple(runs), answer, check_answer(self.numbers, final))


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
    """Per-sample rewards decoded from a value sum (sure 1, likely 1/20, impossible
    0.001/20, unparsed 0); all 0 when the sum is not decodable (ToT's zero rule)."""
    for s in range(N_EVALUATE + 1):
        for li in range(N_EVALUATE + 1 - s):
            for im in range(N_EVALUATE + 1 - s - li):
                if abs(20 * s + li + 0.001 * im - value) < 1e-6:
                    rest = N_EVALUATE - s - li - im
                    return (1.0,) * s + (0.05,) * li + (0.00005,) * im + (0.0,) * rest
    return (0.0,) * N_EVALUATE


def _est(text: str, ratio: float) -> int:
    """Estimated cl100k tokens of ``text``: ``round(chars * ratio)``, at least 1."""
    return max(1, round(len(text) * ratio))


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


def _parse(path) -> list[dict]:
    """Validated puzzles: per step, per parent its propose prompt and output text, and
    per proposal (parent, y, value, called, precached, value template/var/class)."""
    src = str(path)
    try:
        log = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(log, list) or not log:
            raise InputError("expected a non-empty JSON list of puzzles", source=src)
        puzzles, prev, cache = [], (0, 0), set()
        for p in log:
            x, ys, kept, steps, seen = p["steps"][0]["x"], [""], [-1], [], set()
            for k, s in enumerate(p["steps"]):
                if s["ys"] != ys or len(s["values"]) != len(s["new_ys"]):
                    raise InputError(f"puzzle {p['idx']} step {k}: ys/values do not chain",
                                     source=src, field="steps")
                owner, local, props = _groups(ys, s["new_ys"], src, p["idx"], k), set(), []
                for y, v, j in zip(s["new_ys"], s["values"], owner):
                    if not 0 <= float(v) <= VALUE_MAX:
                        raise InputError(f"value {v} outside [0, 60]", source=src,
                                         field="values")
                    tpl, var, cls = _value_prompt(x, y)
                    key = f"{tpl}:{var}"
                    called = y not in local and key not in cache and key not in seen
                    props.append((kept[j], y, float(v), called, key in cache, tpl, var, cls))
                    local.add(y)
                    seen.add(key)
                propose = []
                for j, y in enumerate(ys):
                    out = "\n".join(c[len(y):-1] for c, o in zip(s["new_ys"], owner) if o == j)
                    cot = _current(y or x) == "24"
                    propose.append((kept[j], COT if cot else PROPOSE,
                                    f"{x}\nSteps:{y}" if cot else _current(y or x), out))
                rank = sorted(range(len(props)), key=lambda i: props[i][2], reverse=True)[:5]
                if [props[i][1] for i in rank] != s["select_new_ys"]:
                    raise InputError(f"puzzle {p['idx']} step {k}: select_new_ys is not the"
                                     " greedy top 5", source=src, field="select_new_ys")
                steps.append((props, propose))
                ys, kept = s["select_new_ys"], rank
            cache |= seen
            usage = (int(p["usage_so_far"]["prompt_tokens"]),
                     int(p["usage_so_far"]["completion_tokens"]))
            puzzles.append(dict(idx=p["idx"], x=x, steps=steps, r=bool(p["infos"][0]["r"]),
                                usage=(usage[0] - prev[0], usage[1] - prev[1]),
                                select=tuple(tuple(s["select_new_ys"]) for s in p["steps"])))
            prev = usage
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"malformed ToT log ({type(exc).__name__}: {exc})", source=src,
                         field=str(exc.args[0]) if isinstance(exc, KeyError) else None
                         ) from None
    return puzzles


def _groups(ys: list[str], new_ys: list[str], src: str, idx, k) -> list[int]:
    """Parent index (into ``ys``) of each of ``new_ys``: ToT chains each parent's
    proposals in order and every parent yields >= 1. Two equal parents are split where a
    proposal repeats (one case in the pinned log: puzzle 937, step 1)."""
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


def _fit(puzzles: list[dict], ratio: float) -> tuple[dict, dict]:
    """Least-squares template tokens and per-sample value output tokens (both >= 1)."""
    rows_p, rows_c, target_p, target_c = [], [], [], []
    for pz in puzzles:
        n, m, var, out = dict.fromkeys(TEMPLATES, 0), dict.fromkeys(OUTPUT_CLASSES, 0), 0, 0
        for props, propose in pz["steps"]:
            for _, tpl, text, output in propose:
                n[tpl] += 1
                var, out = var + _est(text, ratio), out + _est(output, ratio)
            for *_, called, _, tpl, text, cls in props:
                if called:
                    n[tpl], m[cls] = n[tpl] + 1, m[cls] + N_EVALUATE
                    var += _est(text, ratio)
        rows_p.append([n[t] for t in TEMPLATES])
        rows_c.append([m[c] for c in OUTPUT_CLASSES])
        target_p.append(pz["usage"][0] - var)
        target_c.append(pz["usage"][1] - out)
    tpl = lsq_linear(np.array(rows_p, float), np.array(target_p, float), bounds=(1, np.inf))
    outs = lsq_linear(np.array(rows_c, float), np.array(target_c, float), bounds=(1, np.inf))
    return dict(zip(TEMPLATES, tpl.x.tolist())), dict(zip(OUTPUT_CLASSES, outs.x.tolist()))


def _spec(pz: dict, ratio: float, tpl: dict, outs: dict) -> TreeSpec:
    """Build a TreeSpec's Calls from a parsed puzzle and the fitted constants."""
    steps = []
    for props, propose in pz["steps"]:
        calls = tuple((parent, Call(((t, round(tpl[t])), (f"{t}:{text}", _est(text, ratio))),
                                    _est(output, ratio))) for parent, t, text, output in propose)
        proposals = tuple(Proposal(
            parent, y, v, min(v / VALUE_MAX, 1.0), called, pre, f"{t}:{text}",
            tuple(Call(((t, round(tpl[t])), (f"{t}:{text}", _est(text, ratio))),
                       round(outs[cls]), reward=r) for r in _judgements(v)))
            for parent, y, v, called, pre, t, text, cls in props)
        steps.append(StepSpec(proposals, calls))
    return TreeSpec(str(pz["idx"]), pz["x"], tuple(steps), pz["select"], pz["r"], pz["usage"])


def modelled_usage(run: TreeRun) -> tuple[int, int]:
    """(prompt, completion) tokens as OpenAI bills a run: an n=3 value request's prompt
    counts once, every sample's output counts."""
    prompt = sum(c.prompt_tokens for s in run.steps for c in (*s.propose,
                 *s.value[::N_EVALUATE]))
    return prompt, sum(c.output_tokens for c in run.calls)


@functools.lru_cache(maxsize=1)
def _load() -> tuple[tuple[TreeSpec, ...], dict]:
    ratio = _tokens_per_char()
    puzzles = _parse(fetch("game24-tot-log"))
    tpl, outs = _fit(puzzles, ratio)
    specs = tuple(_spec(pz, ratio, tpl, outs) for pz in puzzles)
    err = np.array([[abs(m - u) / u for m, u in zip(
        modelled_usage(s.run([5] * len(s.steps))), s.usage)] for s in specs]) * 100
    report = dict(tokens_per_char=ratio, template_tokens=tpl, value_output_tokens=outs,
                  template_chars=dict(TEMPLATE_CHARS), n_puzzles=len(specs),
                  prompt_median_abs_pct_err=float(np.median(err[:, 0])),
                  prompt_max_abs_pct_err=float(err[:, 0].max()),
                  completion_median_abs_pct_err=float(np.median(err[:, 1])),
                  completion_max_abs_pct_err=float(err[:, 1].max()))
    return specs, report


def load_tot_game24() -> list[TreeSpec]:
    """The 100 logged ToT searches (puzzles 900-999) with fitted token counts; parsed and
    fitted once per process. Raises InputError for a missing or malformed log."""
    return list(_load()[0])


def fit_report() -> dict:
    """The token model: ``tokens_per_char``, fitted ``template_tokens`` and per-sample
    ``value_output_tokens`` (floats; Calls use them rounded), ToT's ``template_chars``,
    and per-puzzle absolute % errors (median and max) of the modelled prompt and
    completion tokens against the logged usage."""
    report = _load()[1]
    return {k: dict(v) if isinstance(v, dict) else v for k, v in report.items()}
