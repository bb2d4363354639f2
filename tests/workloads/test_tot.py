"""Tests of the Game-of-24 helpers and the Tree-of-Thoughts log replay (dynasim.workloads.tot)."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from dynasim.errors import InputError
from dynasim.workloads import tot
from dynasim.workloads.game24 import answer_expression, check_answer, expression_value

FULL = [5, 5, 5, 5]
NARROW = ([4, 4, 4, 4], [3, 3, 3, 3], [2, 2, 2, 2], [1, 1, 1, 1], [5, 3, 2, 1], [1, 2, 3, 5])


@pytest.mark.parametrize("text", [
    "__import__('os')", "__import__('os').system('true')", "x + 1", "abs(-24)",
    "2**999999", "2 ** 3", "(1).__class__", "lambda: 24", "[24]", "24 if 1 else 0",
    "True * 24", "1e400", "'24'", "4 % 3", "1" * 300, "(" * 100 + "1" + ")" * 100, "",
    "4 +", "1 / 0", "1 / (2 - 2)"])
def test_expression_value_rejects(text):
    assert expression_value(text) is None


@pytest.mark.parametrize("text, value", [
    ("(4 + 8) * (6 - 4)", 24), ("8 / (3 - 8 / 3)", 24), ("-(-24)", 24), ("+3 - 5", -2),
    ("0.5 * 48", 24), ("1 / 3", Fraction(1, 3)), ("10 - 1.5", Fraction(17, 2))])
def test_expression_value_exact(text, value):
    assert expression_value(text) == value


def test_answer_expression():
    assert answer_expression("Answer: (4 * 5) + (10 - 6) = 24\n") == "(4 * 5) + (10 - 6)"
    assert answer_expression("Steps:\n4 + 5 = 9 (left: 6 9 10)\nanswer: 4 * 6") == "4 * 6"
    assert answer_expression("(1 + 2 + 3) * 4") == "(1 + 2 + 3) * 4"
    assert answer_expression("Answer: = 24") is None
    assert answer_expression("") is None


@pytest.mark.parametrize("puzzle, answer, ok", [
    ("4 5 6 10", "Answer: (4 * 5) + (10 - 6) = 24", True),
    ("4 5 6 10", "(10 - 6) + 4 * 5", True),
    ("3 3 8 8", "8 / (3 - 8 / 3) = 24", True),         # needs exact fractions
    ("4 5 6 10", "Answer: (4 + 8) * (6 - 4) = 24", False),  # equals 24, wrong numbers
    ("4 5 6 10", "4 * 6 * (10 / 10)", False),          # reuses 10, drops 5
    ("4 5 6 10", "4 + 5 + 6 + 10", False),              # right numbers, 25
    ("4 5 6 10", "(4 * 5) + (10 - 6) + 0", False),      # extra number
    ("4 5 6 10", "__import__('os') or 4 5 6 10", False),
    ("4 5 6 10", "Answer: None", False)])
def test_check_answer(puzzle, answer, ok):
    assert check_answer(puzzle, answer) is ok


@pytest.fixture(scope="module")
def specs(data_dir):
    return tot.load_tot_game24()


def test_full_width_reproduces_log(specs):
    assert [s.question_id for s in specs] == [str(i) for i in range(900, 1000)]
    assert sum(s.logged_correct for s in specs) == 62
    assert {(s.num_steps, s.max_width) for s in specs} == {(4, 5)}
    for s in specs:
        run = s.run(FULL)
        assert not run.truncated
        for k, (spec, step) in enumerate(zip(s.steps, run.steps)):
            kept = tuple(spec.proposals[i].text for i in step.kept)
            assert kept == s.logged_select[k], (s.question_id, k)
            assert len(step.value) == 3 * sum(p.value_called for p in spec.proposals)
            assert len(step.propose) == (1 if k == 0 else len(s.logged_select[k - 1]))
            assert step.reward_max == max(spec.proposals[i].reward for i in step.kept)
        assert run.correct == s.logged_correct, s.question_id
        assert run.correct == check_answer(s.numbers, s.logged_select[-1][0])


def test_calls_shape(specs):
    templates = {}
    for s in specs:
        for k, spec in enumerate(s.steps):
            for q in spec.proposals:  # a child extends its parent's text by one line
                parent_text = s.steps[k - 1].proposals[q.parent].text if k else ""
                assert q.text.startswith(parent_text) and q.text.count("\n") == k + 1
            for _parent, call in spec.propose:
                assert call.prompt[0][0] in (tot.PROPOSE, tot.COT) and call.output_tokens >= 1
                templates.setdefault(call.prompt[0][0], set()).add(call.prompt[0][1])
            for p in spec.proposals:
                assert 0.0 <= p.reward <= 1.0 and len(p.value_calls) == 3
                assert len({c.prompt for c in p.value_calls}) == 1
                assert all(0.0 <= c.reward <= 1.0 for c in p.value_calls)
    assert set(templates) == {tot.PROPOSE, tot.COT}
    assert all(len(sizes) == 1 for sizes in templates.values())  # one shared template each


def test_equal_parents_are_split(specs):
    step = next(s for s in specs if s.question_id == "937").steps[1]
    parents = [p for p, _ in step.propose]
    assert len(parents) == 5 and len(set(parents)) == 5
    counts = [sum(q.parent == p for q in step.proposals) for p in parents]
    assert counts[3:] == [5, 5]  # split where '2 + 6 = 8' repeats


@pytest.mark.parametrize("widths", NARROW)
def test_narrower_widths_are_subsets(specs, widths):
    total_full = total = 0
    for s in specs:
        full, run = s.run(FULL), s.run(widths)
        assert len(run.calls) <= len(full.calls), s.question_id
        total_full, total = total_full + len(full.calls), total + len(run.calls)
        kept = (-1,)
        for k, (step, full_step) in enumerate(zip(run.steps, full.steps)):
            assert len(step.kept) <= widths[k] and len(step.propose) == len(kept)
            assert all(s.steps[k].proposals[i].parent in kept for i in step.kept)
            if k < len(widths) - 1:
                assert set(step.kept) <= set(full_step.kept)
            kept = step.kept
        assert run.truncated == (not kept)
        assert run.correct == (bool(kept) and check_answer(
            s.numbers, s.steps[-1].proposals[kept[0]].text))
    assert total < total_full


def test_widths_checked(specs):
    with pytest.raises(InputError):
        specs[0].run([5, 5, 5])
    with pytest.raises(InputError):
        specs[0].run([5, 0, 5, 5])
    with pytest.raises(InputError):
        specs[0].run([5, 6, 5, 5])  # wider than the log can replay


def test_token_model_matches_logged_usage(specs):
    report = tot.fit_report()
    assert report["n_puzzles"] == 100
    assert report["prompt_median_abs_pct_err"] < 0.5 and report["prompt_max_abs_pct_err"] < 2
    assert report["completion_median_abs_pct_err"] < 6
    assert report["completion_max_abs_pct_err"] < 30
    for s in specs:
        modelled = tot.modelled_usage(s.run(FULL))
        prompt_err, completion_err = (100 * abs(m - u) / u for m, u in zip(modelled, s.usage))
        assert prompt_err <= report["prompt_max_abs_pct_err"] + 1e-9
        assert completion_err <= report["completion_max_abs_pct_err"] + 1e-9
    assert sum(s.usage[0] for s in specs) == 1387936  # last cumulative prompt_tokens


def test_fit_constants_plausible(specs):
    report = tot.fit_report()
    ratio = report["tokens_per_char"]
    assert 0.45 < ratio < 0.7
    for key, tokens in report["template_tokens"].items():
        estimate = report["template_chars"][key] * ratio  # ToT's template text length
        assert 0.7 * estimate < tokens < 1.3 * estimate, (key, tokens, estimate)
    outs = report["value_output_tokens"]
    assert all(1 <= v < 150 for v in outs.values())
    assert outs["left1"] < outs["left2"] < outs["left3+"]


def _log(tmp_path, mutate):
    good = [{"idx": 1, "ys": ["a\n"], "infos": [{"r": 0}],
             "usage_so_far": {"prompt_tokens": 10, "completion_tokens": 5},
             "steps": [{"step": 0, "x": "1 2 3 4", "ys": [""],
                        "new_ys": ["1 + 2 = 3 (left: 3 3 4)\n"], "values": [1.0],
                        "select_new_ys": ["1 + 2 = 3 (left: 3 3 4)\n"]}]}]
    mutate(good)
    path = tmp_path / "log.json"
    path.write_text(json.dumps(good))
    return path


def test_small_log_parses(tmp_path):
    puzzles = tot._parse(_log(tmp_path, lambda log: None), 0.5)
    assert puzzles[0]["usage"] == (10, 5) and puzzles[0]["steps"][0][0][0][0] == -1


@pytest.mark.parametrize("mutate, field", [
    (lambda log: log[0].pop("steps"), "steps"),
    (lambda log: log[0]["steps"][0].update(values=[1.0, 2.0]), "steps"),
    (lambda log: log[0]["steps"][0].update(values=[99.0]), "values"),
    (lambda log: log[0]["steps"][0].update(ys=["zzz\n"]), "steps"),
    (lambda log: log[0]["steps"][0].update(select_new_ys=["other\n"]), "select_new_ys"),
    (lambda log: log[0].pop("usage_so_far"), "usage_so_far"),
    (lambda log: log[0]["steps"].append(dict(  # a child that extends no parent
        log[0]["steps"][0], ys=log[0]["steps"][0]["select_new_ys"], new_ys=["b\n"])),
     "new_ys"),
    (lambda log: log.clear(), None)])
def test_malformed_log_is_input_error(tmp_path, mutate, field):
    path = _log(tmp_path, mutate)
    with pytest.raises(InputError) as err:
        tot._parse(path, 0.5)
    assert err.value.source == str(path) and err.value.field == field
