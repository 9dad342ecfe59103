"""`format`: one reasoning block, then a summary; broken templates rejected with their reason.

Cases marked TRL are TRL's own `think_format_reward` tests (huggingface/trl tests/test_rewards.py,
ThinkFormatRewardTester), with cotforge's verdict where it deliberately differs (see format.py); cases
marked open-r1 follow open-r1's `format_reward` layout (src/open_r1/rewards.py).
"""

from __future__ import annotations

import pytest

from cotforge.train import rewards
from cotforge.checks.base import create

OK, BAD = True, False


@pytest.mark.parametrize(("completion", "passed", "reason"), [
    # TRL test_valid_format: all valid there
    ("<think>This is my reasoning.</think>This is my answer.", OK, None),
    ("<think>\nThis is my reasoning.\n</think>\nThis is my answer.", OK, None),
    ("<think>\nThis is\nmy reasoning.\n</think>\nThis is my answer.", OK, None),
    ("<think>\nThis is <some tag> my reasoning.</think>\nThis is my answer.", OK, None),
    ("<think></think>\nThis is my answer.", BAD, "no reasoning block"),  # differs: empty reasoning
    # TRL test_invalid_format: all invalid there
    ("<think>\nThis is my reasoning.\nThis is my answer.", BAD, "never closed"),
    ("<think>This is my reasoning.\nThis is my answer.", BAD, "never closed"),
    ("This is my reasoning. This is my answer.", BAD, "no reasoning block"),
    ("This is my reasoning.</think>\nThis is my answer.", OK, None),  # differs: the template opened it
    ("This is my reasoning.</think>This is my answer.", OK, None),  # differs: the template opened it
    ("This<think>is my reasoning.</think>\nThis is my answer.", BAD, "text before the opening <think>: 'This'"),
    ("<think>This is<think>my reasoning.</think></think>This is my answer.", BAD, "nested <think>"),
    ("<think>This is</think>\nmy\n<think>reasoning.</think>\nThis is my answer.", BAD, "a second <think> block"),
    # open-r1's R1-Zero layout; cotforge does not insist on its exact newlines
    ("<think>\n2 + 3 = 5\n</think>\n<answer>\n5\n</answer>", OK, None),
    ("<think>2 + 3 = 5</think> <answer>5</answer>", OK, None),
    ("<think>2 + 3 = 5</think>\n<answer>\n</answer>", BAD, "empty summary"),
    # R1-style generations, written for these tests
    ("<think>\nLet me compute 12 * 7. 12 * 7 = 84.\n</think>\n\nThe answer is **84**.", OK, None),
    ("Sure! Here is how I think about it.\n<think>\n12 * 7 = 84\n</think>\n\nThe answer is 84.", BAD,
     "text before the opening <think>: 'Sure! Here is how I think about it.'"),
    ("<think>\n12 * 7 = 84\n</think>\n\nWait, let me double-check.\n<think>\n12 * 7 = 84 indeed.\n</think>\n\n84",
     BAD, "a second <think> block after the first"),
    ("<think>\n12 * 7 is <think> hmm, 84.\n</think>\n\nThe answer is 84.", BAD, "nested <think>"),
    ("<think>\n12 * 7 = 84\n</think>\n\nThe answer is 84.\n</think>", BAD, "a second </think>"),
    ("12 * 7 = 84, so that is it.\n</think>\n\nThe answer is 84.\n<think>\nAnother thought.\n</think>\n84", BAD,
     "a second <think> block"),
    ("  \n<think>\n12 * 7 = 84\n</think>\n\nThe answer is 84.", OK, None),  # leading whitespace is no text
])
def test_think_layouts(completion, passed, reason):
    verdict = create("format").check({"completion": completion})
    assert verdict.passed is passed, verdict.reason
    if reason:
        assert reason in verdict.reason, verdict.reason
    if not passed:
        assert verdict.score == 0.0


def test_a_prompt_that_opened_think():
    prompt = "A conversation between User and Assistant... User: What is 12 * 7? Assistant: <think>"
    check = create("format")
    # the completion starts inside the block; repeating the opener is harmless (the parser takes it as it)
    assert check.check({"prompt": prompt, "completion": "12 * 7 = 84\n</think>\n<answer>84</answer>"}).passed
    assert check.check({"prompt": prompt, "completion": "<think>12 * 7 = 84</think> <answer>84</answer>"}).passed
    # but an opener after reasoning text is a nested block
    nested = check.check({"prompt": prompt, "completion": "12 * 7 <think> = 84\n</think>\n<answer>84</answer>"})
    assert not nested.passed and "nested <think>" in nested.reason
    # generate marks the sample when the prompt it sent ended inside <think>
    cut = check.check({"think_opened": True, "completion": "12 * 7 = 84 and then"})
    assert not cut.passed and "never closed" in cut.reason


def test_fields_given_apart_are_checked_too():
    check = create("format")
    assert check.check({"reasoning": "12 * 7 = 84", "summary": "The answer is 84."}).passed
    stray = check.check({"reasoning": "12 * 7 = 84", "summary": "The answer is 84. <think>more</think> 84"})
    assert not stray.passed and "second <think> block" in stray.reason


def test_readable_pattern_has_two_special_tokens():
    check = create("format")
    assert check.check({"completion": "|special_token|12 * 7 = 84|special_token|The answer is 84."}).passed
    extra = check.check({"completion": "|special_token|12 * 7|special_token|= 84|special_token|The answer is 84."})
    assert not extra.passed and "appears 3 times" in extra.reason


def test_empty_reasoning_is_allowed_where_the_preset_says_so():
    assert create("format", require_reasoning=False).check({"completion": "<think></think>\nThe answer is 84."}).passed


def test_the_reward_follows_the_check():
    completions = ["<think>12 * 7 = 84</think> 84", "<think>a</think> b <think>c</think> d", "x<think>a</think> b"]
    assert rewards.format(completions=completions) == [1.0, 0.0, 0.0]
