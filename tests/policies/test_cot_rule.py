"""The Dynasor-CoT stop rule and its offline evaluators (dynasim/policies/cot.py), and
the answer normaliser they compare with (dynasim/certaindex.py), on hand-computed cases."""

from __future__ import annotations

import pytest

from dynasim.certaindex import answer_key, answers_equal, math_equal, normalize_answer
from dynasim.policies import cot


@pytest.mark.parametrize("a, b", [
    ("\\dfrac{1}{2}", "0.5"), ("\\frac{3}{4}", "\\tfrac34"), ("\\frac9{19}", "9/19"),
    ("\\frac{\\sqrt{3}}{2}", "\\dfrac{\\sqrt3}{2}"), ("\\text{(C)}", "C"), ("(C)", "c"),
    ("\\textbf{Evelyn}", "evelyn"), ("30^\\circ", "30"), ("30^{\\circ}", "30°"),
    ("45 degrees", "45"), ("50\\%", "50"), ("12.5%", "\\frac{25}{2}"),
    ("\\$18.90", "18.90"), ("5.4 \\text{ cents}", "5.4"), ("073", "73"),
    ("0.09", "\\frac{9}{100}"), ("1,000", "1000"), ("x = 5", "5"), ("\\boxed{7}", "7"),
    ("x \\in [-2,7]", "[-2, 7]"), ("1Ġ+Ġ\\sqrt{5}", "1+\\sqrt5"),
    ("\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}",
     "\\begin{pmatrix}\\frac{1}{5}\\\\-\\frac{18}{5}\\end{pmatrix}"),
])
def test_plain_and_latex_forms_compare_equal(a, b):
    assert math_equal(a, b) and math_equal(b, a) and answers_equal(a, b)
    assert answer_key(a) == answer_key(b)


@pytest.mark.parametrize("a, b", [
    ("1,2", "12"),            # a list is not a thousands separator
    ("52", "52_8"),           # a base subscript counts (the data's grader agrees)
    ("(5)(2)", "52"), ("(C)", "D"), ("30", "300"), ("\\frac{1}{2}", "2"), ("0.1", "1"),
])
def test_different_answers_stay_different(a, b):
    assert not math_equal(a, b) and answer_key(a) != answer_key(b)


def test_missing_answers_never_agree():
    assert not answers_equal(None, None) and not answers_equal("", "")
    assert not answers_equal("None", "None") and answer_key("  ") is None
    assert normalize_answer("\\left( 1, 2 \\right)") == "(1,2)"


@pytest.mark.parametrize("answers, w, tau, k", [
    (["1", "2", "2"], 2, 1.0, 2),                     # first agreement at probe 3
    (["1", "2", "3", "4"], 2, 1.0, None),             # never agrees
    (["5", None, "5", "5"], 2, 1.0, 3),               # a hesitant probe breaks the run
    (["5", None, "5"], 3, 2 / 3, 2),                  # C = 2/3 >= 2/3
    (["5", None, "5"], 3, 0.7, None),                 # 2/3 < 0.7
    (["\\frac{1}{2}", "0.5"], 2, 1.0, 1),             # equal after normalising
    ([None, None, None], 2, 1.0, None),               # no answers never agree
    (["7"], 2, 1.0, None),                            # window never fills
    (["2", "1", "2", "1", "1", "1"], 4, 0.75, 4),     # window 1,2,1,1: 3/4 (before: 2/4)
    (["3"], 1, 1.0, 0),                               # w = 1: the first answered probe
])
def test_first_stop_hand_computed(answers, w, tau, k):
    assert cot.first_stop(answers, w, tau) == k
    last = len(answers) if k is None else k + 1      # the incremental form agrees
    assert [cot.should_stop(answers[:j + 1], w, tau) for j in range(last)] == \
        [False] * (last - 1) + [k is not None]


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="window"):
        cot.first_stop(["1"], 0, 1.0)
    with pytest.raises(ValueError, match="window"):
        cot.consistency(["1"], 0)


POS = (64, 128, 192, 256, 320, 384)
ANS = ("9", "4", "4", "4", "3", "4")
HES = (False, False, False, True, False, False)
OUT = (5, 6, 7, 8, 9, 10)


def test_dynasor_cot_on_a_hand_trajectory():
    # T = 64, w = 2: probes 2 and 3 agree ("4") -> stop at 192 tokens, 3 probes paid
    o = cot.dynasor_cot(POS, ANS, HES, OUT, 400, "4", probe_interval=64, window=2)
    assert o == cot.CotOutcome(192, 5 + 6 + 7, 3, "4", True)
    # T = 128: probes at 128 ("4"), 256 (hesitant), 384 ("4"): never two in a row
    o = cot.dynasor_cot(POS, ANS, HES, OUT, 400, "5", probe_interval=128, window=2)
    assert o == cot.CotOutcome(400, 6 + 8 + 10, 3, "5", False)
    # T = 128, w = 3, tau = 2/3: C at 384 = 2/3 -> stop there
    o = cot.dynasor_cot(POS, ANS, HES, OUT, 400, "5", probe_interval=128, window=3,
                        threshold=2 / 3)
    assert o == cot.CotOutcome(384, 24, 3, "4", True)
    with pytest.raises(ValueError, match="multiple"):
        cot.dynasor_cot(POS, ANS, HES, OUT, 400, "5", probe_interval=100, window=2)


def test_budget_and_full_on_a_hand_trajectory():
    assert cot.budget(POS, ANS, OUT, 400, "4", 500) == cot.CotOutcome(400, 0, 0, "4", False)
    assert cot.budget(POS, ANS, OUT, 400, "4", 400) == cot.CotOutcome(400, 0, 0, "4", False)
    # truncated at 300: the last probe at or before 300 is at 256 (answer "4", hesitant
    # or not: the budget's probe forces an answer)
    assert cot.budget(POS, ANS, OUT, 400, "4", 300) == cot.CotOutcome(300, 8, 1, "4", True)
    assert cot.budget(POS, ANS, OUT, 400, "4", 64) == cot.CotOutcome(64, 5, 1, "9", True)
    assert cot.budget(POS, ANS, OUT, 400, "4", 10) == cot.CotOutcome(10, 0, 0, None, True)
    assert cot.full(400, "4") == cot.CotOutcome(400, 0, 0, "4", False)
    with pytest.raises(ValueError):
        cot.budget(POS, ANS, OUT, 400, "4", -1)
