"""Readability checks: code_block, paragraph, gopher_repetition, length on English and Chinese reasoning."""

from __future__ import annotations

from cotforge.checks import create

EN_REASONING = (
    "We need the total cost of the trip. The train ticket costs $45 and the hotel costs $80 per night "
    "for 3 nights.\n\n"
    "So the hotel comes to 80 * 3 = 240 dollars, and adding the ticket gives 240 + 45 = 285 dollars.\n\n"
    "Let me verify: three nights at eighty is two hundred forty, plus forty-five is two hundred "
    "eighty-five. That matches, so the total is 285 dollars."
)
ZH_REASONING = (
    "我们需要求出这次旅行的总花费。火车票是 45 元，酒店每晚 80 元，一共住了 3 晚。\n\n"
    "所以酒店费用是 80 × 3 = 240 元，再加上车票，总共 240 + 45 = 285 元。\n\n"
    "验证一下：三晚共二百四十元，加上四十五元，得到二百八十五元。结果一致，所以总花费是 285 元。"
)


def run(name: str, reasoning: str, domain: str = "math", **options):
    return create(name, **options).check({"reasoning": reasoning, "summary": "The total is 285.", "domain": domain})


# code_block
def test_plain_reasoning_has_no_code_block():
    assert run("code_block", EN_REASONING).passed
    assert run("code_block", ZH_REASONING).passed


def test_fenced_code_in_math_reasoning_fails():
    text = EN_REASONING + "\n\nLet me check with Python:\n```python\nprint(80 * 3 + 45)\n```\nIt prints 285."
    verdict = run("code_block", text)
    assert not verdict.passed and "fenced code block (```python)" in verdict.reason


def test_indented_code_in_chinese_reasoning_fails():
    text = ZH_REASONING + "\n\n用代码验证：\n\n    total = 80 * 3 + 45\n    print(total)\n\n输出 285。"
    verdict = run("code_block", text)
    assert not verdict.passed and "indented code block" in verdict.reason


def test_indented_latex_and_lists_are_not_code():
    text = ("Set up the system:\n\n$$\n\\begin{aligned}\n    x + y &= 10 \\\\\n    x - y &= 2\n"
            "\\end{aligned}\n$$\n\nSteps:\n\n    - add the equations\n    - divide by two\n\nSo x = 6.")
    assert run("code_block", text).passed


def test_code_domain_may_contain_code():
    text = "I will write a loop.\n```python\nfor i in range(3):\n    print(i)\n```"
    verdict = run("code_block", text, domain="code")
    assert verdict.passed and verdict.score is None


# paragraph
def test_short_paragraphs_pass():
    assert run("paragraph", EN_REASONING).passed
    assert run("paragraph", ZH_REASONING).passed


def test_wall_of_text_fails_in_english_and_chinese():
    english = " ".join(["We add the hotel cost to the ticket price and check it again."] * 40)
    verdict = run("paragraph", EN_REASONING + "\n\n" + english)
    assert not verdict.passed and "paragraph 4/4" in verdict.reason and verdict.score < 1
    chinese = "我们把酒店费用和车票价格加起来，然后再检查一遍。" * 50  # 1,200 characters, weighted 2x
    assert not run("paragraph", ZH_REASONING + "\n\n" + chinese).passed
    assert run("paragraph", ZH_REASONING + "\n\n" + chinese, cjk_char_weight=1.0, max_chars=3000).passed


# gopher_repetition (Gopher's web thresholds; the long-CoT `repetition` check: test_repetition.py)
def test_normal_reasoning_is_not_repetitive():
    assert run("gopher_repetition", EN_REASONING).passed
    assert run("gopher_repetition", ZH_REASONING).passed


def test_looping_english_reasoning_fails():
    loop = "\n".join(["Wait, let me recompute the hotel cost: 80 times 3 is 240, plus 45 is 285."] * 12)
    verdict = run("gopher_repetition", EN_REASONING + "\n" + loop)
    assert not verdict.passed and "duplicate line" in verdict.reason, verdict


def test_looping_chinese_reasoning_without_newlines_fails():
    # A model stuck in a loop inside one paragraph: no duplicate lines, only repeated character n-grams.
    loop = "".join(f"等等，我再算一遍酒店的费用，八十乘以三等于二百四十，第{i}次。" for i in range(15))
    verdict = run("gopher_repetition", ZH_REASONING + loop)
    assert not verdict.passed and "gram chars" in verdict.reason, verdict
    assert " > " in verdict.reason


def test_repetition_thresholds_are_options():
    loop = " ".join(["so the hotel costs 240 and the ticket costs 45"] * 8)
    assert not run("gopher_repetition", EN_REASONING + " " + loop).passed
    assert run("gopher_repetition", EN_REASONING + " " + loop, top_ngrams={2: 0.9, 3: 0.9, 4: 0.9},
               dup_ngrams={5: 0.95}).passed


# length
def test_length_bounds_in_chars_and_words():
    assert run("length", EN_REASONING).passed
    verdict = run("length", "285.")
    assert not verdict.passed and "4 chars < 20" in verdict.reason
    assert not run("length", EN_REASONING, max_chars=100).passed
    # Chinese characters count as words
    assert run("length", ZH_REASONING, min_words=80).passed  # ~12 whitespace-separated pieces
    assert not run("length", ZH_REASONING, max_words=50).passed
