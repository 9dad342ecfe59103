"""`repetition` for long chains of thought: loops caught, a summary restating its reasoning kept."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cotforge.checks import create
from cotforge.checks.repetition import tandem_repeat

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from filter_real_traces import group, sample_of

# A clean R1-distill-style GSM8K trace: its summary restates the reasoning step by step, as R1's do.
REASONING = (
    "Okay, so Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
    "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 per "
    "fresh duck egg. I need to find how much she makes every day.\n\n"
    "First, the eggs she uses: she eats 3 and bakes with 4, so she uses 3 + 4 = 7 eggs per day.\n\n"
    "Then the eggs she sells: 16 - 7 = 9 eggs per day.\n\n"
    "Each egg sells for $2, so she makes 9 * 2 = 18 dollars per day.\n\n"
    "Wait, let me double-check. 16 eggs, minus 3 eaten is 13, minus 4 for muffins is 9. 9 eggs at $2 each "
    "is $18. Yes, that's right.")
SUMMARY = (
    "Janet's ducks lay 16 eggs per day. She eats 3 for breakfast and uses 4 for muffins, so she uses "
    "3 + 4 = 7 eggs per day.\n\nThe eggs she sells: 16 - 7 = 9 eggs per day.\n\n"
    "Each egg sells for $2, so she makes 9 * 2 = 18 dollars per day.\n\n**Final Answer**\n\\boxed{18}")
CLEAN = f"<think>\n{REASONING}\n</think>\n\n{SUMMARY}"


def judge(completion: str, **options):
    return create("repetition", **options).check({"completion": completion})


def test_a_clean_trace_whose_summary_restates_its_reasoning_passes():
    verdict = judge(CLEAN)
    assert verdict.passed and verdict.score == 1.0, verdict
    # Gopher's web-page thresholds reject the same trace: the summary duplicates the reasoning's 5-grams
    gopher = create("gopher_repetition", field="both").check({"completion": CLEAN})
    assert not gopher.passed and "gram chars" in gopher.reason, gopher


def test_the_same_sentence_over_and_over_fails():
    # not back to back: each time after a different attempt, as a model circles between two ideas
    loop = "\n\n".join(f"Maybe the middle elements are {i} and {i + 3}, so their sum is {2 * i + 3}.\n\n"
                         "Wait, perhaps I need to consider that the median is not in the list at all."
                         for i in range(9))
    verdict = judge(f"<think>\n{REASONING}\n\n{loop}\n</think>\n\n{SUMMARY}")
    assert not verdict.passed and verdict.reason.startswith("reasoning loops: "), verdict
    assert "the same 16-word sentence or line 9 times" in verdict.reason and "> 6" in verdict.reason
    assert 0 < verdict.score < 1


def test_a_back_to_back_run_fails_even_when_each_copy_is_a_different_sentence_mix():
    block = ("2200 / 288 = 2200 ÷ 16 / 288 ÷ 16 = 137.5 / 18. But 137.5 / 18 is not a perfect square. "
             "Wait, perhaps I need to express it as a fraction. ")
    verdict = judge(f"<think>\n{REASONING}\n\n{block * 4}")
    assert not verdict.passed and "repeated 4 times back to back" in verdict.reason, verdict


def test_a_loop_in_chinese_without_newlines_fails():
    loop = "等等，我再算一遍酒店的费用，八十乘以三等于二百四十，再加上四十五等于二百八十五。" * 6
    verdict = judge(f"<think>\n我们先算酒店的费用。{loop}\n</think>\n\n答案是 285。")
    assert not verdict.passed and "back to back" in verdict.reason, verdict


def test_the_final_answer_restated_again_and_again_fails():
    restated = "\n\n".join(f"{reason}, so the final answer is \\boxed{{18}}." for reason in (
        "Nine eggs at two dollars", "Sixteen minus seven is nine", "She sells what she does not use",
        "Three and four make seven", "The market pays two dollars an egg", "Every day is the same"))
    verdict = judge(f"<think>\n{REASONING}\n</think>\n\n{SUMMARY}\n\n{restated}")
    assert not verdict.passed and verdict.reason.startswith("summary loops: the final answer stated"), verdict


def test_reasoning_and_summary_are_measured_apart():
    # the summary copies the reasoning word for word: no field repeats itself
    assert judge(f"<think>\n{REASONING}\n</think>\n\n{REASONING}\n\n\\boxed{{18}}").passed
    # a loop only in the summary is named as such
    looped = "\n".join(["She makes 9 * 2 = 18 dollars per day, which is the answer to this question."] * 8)
    verdict = judge(f"<think>\n{REASONING}\n</think>\n\n{looped}")
    assert not verdict.passed and verdict.reason.startswith("summary loops"), verdict
    assert judge(f"<think>\n{REASONING}\n</think>\n\n{looped}", field="reasoning").passed


def test_short_repeated_lines_and_rechecks_are_not_loops():
    rechecks = "\n\n".join(f"Wait.\n\nLet me check step {i} again: {i} + {i} = {2 * i}." for i in range(20))
    assert judge(f"<think>\n{REASONING}\n\n{rechecks}\n</think>\n\n{SUMMARY}").passed


def test_tandem_repeat_finds_period_and_copies():
    words = ["a", "b", "c", "d", "e", "f", "g", "h"] + ["x", "y", "z", "w", "v"] * 5 + ["end", "of", "it"]
    assert tandem_repeat(words, 3, 3, 10) == (5, 5, 8)
    assert tandem_repeat(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"], 3, 3, 5) is None


def test_rates_on_real_traces(real_traces):
    """Calibration figures quoted in the check's docstring (benchmarks/filter_real_traces.py prints them)."""
    check = create("repetition")
    groups: dict[str, list[bool]] = {}
    for row in real_traces:
        groups.setdefault(group(row), []).append(not check.check(sample_of(row)).passed)
    finished, looping = groups["finished"], groups["looping"]
    print(f"\nrepetition on real traces: false rejects {sum(finished)}/{len(finished)} finished, "
          f"catches {sum(looping)}/{len(looping)} looping")
    assert len(finished) >= 50 and len(looping) >= 30
    assert sum(finished) == 0
    assert sum(looping) / len(looping) >= 0.85


@pytest.mark.parametrize("preset", ["r1", "strict", "lenient", "quickstart"])
def test_presets_build(preset):
    from cotforge.checks.chain import Chain

    assert "repetition" in Chain.for_data(preset, jobs=0).names


def test_gsm8k_solutions_restated_as_their_own_summary_pass(shared_dir):
    """Every GSM8K worked solution as the reasoning, restated word for word as the summary: no loop."""
    import json

    rows = [json.loads(line) for line in (shared_dir / "data" / "gsm8k" / "test.jsonl").open()]
    check = create("repetition")
    failed = [r["answer"] for r in rows
              if not check.check({"completion": f"<think>\n{r['answer']}\n</think>\n\n{r['answer']}"}).passed]
    print(f"\nrepetition on {len(rows)} GSM8K solutions restated as summaries: {len(failed)} rejected")
    assert not failed, failed[:2]
