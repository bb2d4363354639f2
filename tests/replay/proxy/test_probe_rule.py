"""The proxy decides by dynasim's Dynasor-CoT rule: the same function objects, and the
same stop probe as the offline rule and as a from-the-paper reference, on hand-written,
random and real (governor_cot_probes) probe sequences."""

from __future__ import annotations

import random

import pytest

from dynasim.certaindex import math_equal
from dynasim.policies import cot
from replay.proxy import probe as cot_probe


def test_the_proxy_uses_dynasims_rule():
    assert cot_probe.should_stop is cot.should_stop
    assert cot_probe.consistency is cot.consistency
    assert cot_probe.probe_answer is cot.probe_answer


def reference_stop(answers, hesitant, window, tau):
    """Dynasor §2.1 written out: C_k = (1/w) Σ_{j=k-w+1..k} 1[y_j = y_k] over the last w
    probes, a hesitant or blank probe equal to nothing; the first k >= w - 1 (0-based)
    with C_k >= tau."""
    ys = [None if h or not (a or "").strip() else a for a, h in zip(answers, hesitant)]
    for k in range(window - 1, len(ys)):
        if ys[k] is None:
            continue
        same = sum(1 for y in ys[k - window + 1:k + 1]
                   if y is not None and math_equal(y, ys[k]))
        if same / window >= tau:
            return k
    return None


def proxy_stop(answers, hesitant, window, tau):
    """As replay/proxy/session.py evaluates probes: append each probe's answer (None when
    it hesitated) and ask the rule after each."""
    seen = []
    for k, (a, h) in enumerate(zip(answers, hesitant)):
        seen.append(None if h else cot_probe.extract_answer(f"{a}}} \\]") if a else None)
        if cot_probe.should_stop(seen, window, tau):
            return k
    return None


HAND = [
    (["1", "2", "2"], [False] * 3, 2, 1.0, 2),
    (["5", "5", "5", "5"], [False, True, False, False], 2, 1.0, 3),
    (["\\dfrac{1}{2}", "0.5", "9"], [False] * 3, 2, 1.0, 1),
    (["(C)", "C", "\\text{C}"], [False] * 3, 3, 1.0, 2),
    (["4", "", "4", "4"], [False] * 4, 3, 2 / 3, 2),
    (["1", "2", "3"], [False] * 3, 2, 1.0, None),
]


@pytest.mark.parametrize("answers, hesitant, w, tau, k", HAND)
def test_hand_sequences(answers, hesitant, w, tau, k):
    seq = [cot.probe_answer(a, h) for a, h in zip(answers, hesitant)]
    assert cot.first_stop(seq, w, tau) == k
    assert reference_stop(answers, hesitant, w, tau) == k
    assert proxy_stop(answers, hesitant, w, tau) == k


def test_random_sequences_agree():
    rng = random.Random(17)
    pool = ["1", "2", "0.5", "\\frac{1}{2}", "1/2", "(B)", "B", "", "30^\\circ", "30"]
    for _ in range(600):
        n = rng.randint(1, 14)
        answers = [rng.choice(pool) for _ in range(n)]
        hesitant = [rng.random() < 0.15 for _ in range(n)]
        w, tau = rng.choice([1, 2, 3, 4]), rng.choice([1.0, 0.75, 2 / 3, 0.5])
        seq = [cot.probe_answer(a, h) for a, h in zip(answers, hesitant)]
        want = reference_stop(answers, hesitant, w, tau)
        assert cot.first_stop(seq, w, tau) == want, (answers, hesitant, w, tau)
        assert proxy_stop(answers, hesitant, w, tau) == want, (answers, hesitant, w, tau)


def test_real_probe_sequences_agree(data_dir):
    from dynasim.workloads.cot import load_cot

    w = load_cot("cot-r1-qwen7b-amc23")
    for t in w.trajectories[:60]:
        for window in (2, 4):
            seq = [cot.probe_answer(a, h) for a, h in zip(t.answers, t.hesitant)]
            want = reference_stop(t.answers, t.hesitant, window, 1.0)
            assert cot.first_stop(seq, window, 1.0) == want
            # the proxy path re-extracts from the probe text; answers holding a "}"
            # of their own are outside that text form
            if all("}" not in (a or "") or "{" in (a or "") for a in t.answers):
                assert proxy_stop(t.answers, t.hesitant, window, 1.0) == want
