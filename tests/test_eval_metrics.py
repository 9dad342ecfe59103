"""Eval metrics against hand-computed values on constructed verdict matrices (cotforge.evaluation.metrics),
and answer classes by the answer check's own equivalence (cotforge.evaluation.votes)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from cotforge.evaluation.metrics import (PromptResult, bootstrap_ci, compare_results, evaluate_results, ks_for,
                                         majority_correct, pass_at_k, summarize)
from cotforge.evaluation.votes import answer_classes


def result(pid, correct, classes=None, source=None, domain="math", tokens=None, finish=None, votable=True):
    n = len(correct)
    return PromptResult(pid, list(correct), list(classes if classes is not None else range(n)),
                        tokens or [10] * n, finish or ["stop"] * n, source, domain, votable, f"prompt {pid}")


@pytest.mark.parametrize("n,c,k,expected", [
    (4, 1, 2, 1 - 3 / 6),  # 1 - C(3,2)/C(4,2)
    (4, 2, 2, 1 - 1 / 6),  # 1 - C(2,2)/C(4,2)
    (5, 1, 3, 1 - 4 / 10),  # 1 - C(4,3)/C(5,3)
    (16, 3, 4, 1 - 715 / 1820),  # 1 - C(13,4)/C(16,4)
    (8, 0, 8, 0.0), (8, 8, 1, 1.0), (8, 5, 4, 1.0),  # n - c < k: every draw holds a correct one
    (10, 3, 1, 0.3),  # pass@1 is c / n
])
def test_pass_at_k_is_the_closed_form(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_equals_the_share_of_k_subsets_holding_a_correct_sample():
    """The estimator's definition, by enumeration: every k-subset of the n samples, equally likely."""
    for correct in ([1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1, 0], [1, 1, 0, 1, 0, 1, 1, 0]):
        n, c = len(correct), sum(correct)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(correct, k))
            assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_ks_are_powers_of_two_then_n():
    assert ks_for(16) == [1, 2, 4, 8, 16]
    assert ks_for(6) == [1, 2, 4, 6]
    assert ks_for(1) == [1]


def test_majority_plain_votes_ties_and_no_answer():
    # classes: 0 = wrong answer, 1 = right answer
    assert majority_correct(result("a", [0, 1, 1, 0, 1], [0, 1, 1, 0, 1]), 5)  # 3 votes for right
    assert not majority_correct(result("a", [0, 0, 1, 0, 1], [0, 0, 1, 0, 1]), 5)  # 3 votes for wrong
    # a 2-2 tie goes to the class whose first vote came first in sample order (lighteval's MajAtK)
    assert majority_correct(result("t", [1, 0, 0, 1], [1, 0, 0, 1]), 4)
    assert not majority_correct(result("t", [0, 1, 1, 0], [0, 1, 1, 0]), 4)
    # maj@k looks at the first k samples only
    votes = result("k", [1, 0, 0, 0], [1, 0, 0, 0])
    assert majority_correct(votes, 1) and majority_correct(votes, 2) and not majority_correct(votes, 3)
    # no answer is one class of its own, never correct: it wins 2-1 here
    assert not majority_correct(result("n", [0, 0, 1], [None, None, 1]), 3)
    assert majority_correct(result("n", [0, 1, 1], [None, 1, 1]), 3)
    # a class is right when one of its samples among the k was accepted (another check may reject one)
    assert majority_correct(result("f", [0, 1, 0], [4, 4, 2]), 3)


def test_summary_values_and_per_source_splits_by_hand():
    results = [
        result("p1", [1, 1, 1, 1], [0, 0, 0, 0], source="gsm8k", tokens=[10, 20, 30, 40]),
        result("p2", [0, 0, 0, 1], [0, 0, 1, 2], source="gsm8k", finish=["length", "stop", "stop", "stop"]),
        result("p3", [0, 1, 0, 1], [0, 1, 0, 1], source="math", domain="algebra",
               finish=["repetition", "stop", "stop", "length"]),
    ]
    metrics = evaluate_results(results)
    overall = metrics["overall"]
    assert list(overall)[:2] == ["prompts", "n"] and (overall["prompts"], overall["n"]) == (3, 4)
    assert overall["pass@1"] == pytest.approx((1 + 0.25 + 0.5) / 3)
    assert overall["pass@2"] == pytest.approx((1 + 0.5 + (1 - 1 / 6)) / 3)
    assert overall["pass@4"] == pytest.approx(1.0)
    # maj@2: p1 right; p2 0-vs-0 one class (wrong); p3 tie 0,1 -> first (class 0, wrong)
    assert overall["maj@2"] == pytest.approx(1 / 3)
    # maj@4: p1 right; p2 class 0 has 2 votes (wrong); p3 tie 2-2 -> class 0 first (wrong)
    assert overall["maj@4"] == pytest.approx(1 / 3)
    assert overall["mean_tokens"] == pytest.approx((100 + 80) / 12)
    assert overall["truncated"] == pytest.approx(2 / 12) and overall["stopped"] == pytest.approx(1 / 12)
    gsm = metrics["by_source"]["gsm8k"]
    assert gsm["prompts"] == 2 and gsm["pass@1"] == pytest.approx(0.625) and gsm["maj@4"] == pytest.approx(0.5)
    assert metrics["by_source"]["math"]["pass@1"] == pytest.approx(0.5)
    assert set(metrics["by_domain"]) == {"math", "algebra"}
    assert metrics["by_domain"]["algebra"]["prompts"] == 1


def test_code_prompts_are_left_out_of_maj_only():
    results = [result("m", [1, 1], [0, 0]), result("c", [0, 0], [None, None], domain="code", votable=False)]
    overall = summarize(results)
    assert overall["pass@1"] == pytest.approx(0.5)
    assert overall["maj@2"] == pytest.approx(1.0)  # over the votable prompt only
    assert summarize([results[1]])["maj@2"] is None


def test_bootstrap_ci_brackets_the_mean_and_is_exact_for_constants():
    rng = np.random.default_rng(3)
    values = rng.uniform(0, 1, 200)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high
    half_width = 1.96 * values.std(ddof=1) / math.sqrt(len(values))  # normal approximation
    assert high - low == pytest.approx(2 * half_width, rel=0.15)
    assert bootstrap_ci(np.full(50, 0.25)) == [0.25, 0.25]
    assert bootstrap_ci(values) == bootstrap_ci(values)  # seeded


def test_paired_comparison_differences_and_the_prompts_that_differ_most():
    base = [result(f"p{i}", [0, 0, 0, 0], [0, 0, 0, 0]) for i in range(6)] + [result("only-a", [1, 1, 1, 1])]
    tuned = [result(f"p{i}", [1 if j < i else 0 for j in range(4)], [0 if j < i else 1 for j in range(4)])
             for i in range(6)] + [result("only-b", [0])]
    out = compare_results(base, tuned, top=3)
    assert (out["prompts"], out["only_a"], out["only_b"]) == (6, 1, 1)
    rates = [min(i, 4) / 4 for i in range(6)]
    assert out["metrics"]["pass@1"]["a"] == 0 and out["metrics"]["pass@1"]["diff"] == pytest.approx(np.mean(rates))
    low, high = out["metrics"]["pass@1"]["ci"]
    assert 0 < low <= np.mean(rates) <= high <= 1
    assert [row["prompt_id"] for row in out["differ_most"]] == ["p4", "p5", "p3"]  # ties in id order
    # identical runs: every difference and CI is exactly zero
    same = compare_results(base, base)
    assert all(m["diff"] == 0 and m["ci"] == [0.0, 0.0] for m in same["metrics"].values())
    assert same["differ_most"] == []


def test_equivalent_answers_written_differently_are_one_class():
    """`1/2`, `0.5` and `\\frac{1}{2}` are one vote by the answer check's equivalence; choices by letter."""
    rows = []
    for idx, answer in enumerate(["1/2", "0.5", "\\frac{1}{2}", "0.25", None, " 1/2 ", "\\dfrac{2}{4}"]):
        rows.append({"id": f"m-{idx}", "prompt_id": "m", "sample_idx": idx, "answer": answer,
                     "prompt": "What is one half?", "domain": "math"})
    for idx, answer in enumerate(["x + 1", "1 + x", "x - 1"]):
        rows.append({"id": f"s-{idx}", "prompt_id": "s", "sample_idx": idx, "answer": answer,
                     "prompt": "Simplify.", "domain": "math"})
    for idx, answer in enumerate(["B", "C", "B"]):
        rows.append({"id": f"c-{idx}", "prompt_id": "c", "sample_idx": idx, "answer": answer,
                     "answer_type": "choice", "prompt": "Pick one. A) 1 B) 2 C) 3 D) 4", "domain": "science"})
    classes = answer_classes(rows, "format,answer")
    assert [classes[f"m-{i}"] for i in range(7)] == [0, 0, 0, 1, None, 0, 0]
    assert [classes[f"s-{i}"] for i in range(3)] == [0, 0, 1]
    assert [classes[f"c-{i}"] for i in range(3)] == [0, 1, 0]
    # the vote counts them as one class each: a 2-2 tie of halves and quarters goes to the halves (first)
    votes = result("m", [1, 0, 1, 0, 0], [classes[f"m-{i}"] for i in (0, 3, 1, 3, 4)])
    assert votes.classes == [0, 1, 0, 1, None] and majority_correct(votes, 5) is True
