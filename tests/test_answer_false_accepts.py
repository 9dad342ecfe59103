"""`answer` / `choice`: answers that used to be accepted wrongly, and a self-correction that must pass.

Each case is a completion as a model writes it; the reason must name the answer that was graded.
"""

from __future__ import annotations

import json

import pytest

from cotforge.checks import create


def answer(gold: str, completion: str, prompt: str = "", **options):
    sample = {"gold": gold, "completion": completion, "prompt": prompt}
    return create("answer", **options).check(sample), sample


@pytest.mark.parametrize("summary", [
    "The answer is 5 or more.", "The answer is at least 5.", "So the answer is about 5.",
    "The answer is approximately 5.", "The answer is \\boxed{5 \\text{ or more}}.", "Answer: 5+",
    "The answer is more than 5.", "The answer is up to 5.",
])
def test_a_hedge_is_not_its_number(summary: str) -> None:
    verdict, _ = answer("5", f"<think>Counting.</think>\n{summary}")
    assert not verdict.passed, verdict
    assert "hedged" in verdict.reason and "5" in verdict.reason


def test_a_plain_answer_or_an_expression_with_plus_still_passes() -> None:
    assert answer("5", "<think>x</think> The answer is 5.")[0].passed
    assert answer("\\sqrt{2}+\\sqrt{5}", "<think>x</think> The answer is $\\boxed{\\sqrt 2+\\sqrt 5}$")[0].passed
    assert answer("5", "<think>x</think> I am about to write it: \\boxed{5}")[0].passed


@pytest.mark.parametrize("summary", [
    "100 - 1 = 100", "The answer is 100 - 1 = 100.", "So the total is \\boxed{100 - 1 = 100}.",
    "Answer: $100 - 1 = 100$", "There are (100 - 1) = 100 apples left.",
])
def test_a_calculation_is_graded_by_its_result_not_by_the_question_it_restates(summary: str) -> None:
    verdict, sample = answer("99", f"<think>One is eaten.</think>\n{summary}")
    assert not verdict.passed, verdict
    assert verdict.reason.startswith("answer 100 != gold 99"), verdict
    assert sample["answer"] == "100"


def test_a_calculation_with_the_right_result_passes_and_equations_with_unknowns_stay_whole() -> None:
    verdict, sample = answer("99", "<think>x</think> The answer is 100 - 1 = 99.")
    assert verdict.passed and sample["answer"] == "99", verdict
    assert answer("y = 2x + 3", "<think>x</think> \\boxed{y = 2x + 3}")[0].passed
    assert answer("x-2y+z-1=0", "<think>x</think> The plane is \\boxed{x-2y+z-1=0}.")[0].passed


def test_a_rounded_decimal_is_not_an_exact_fraction_unless_the_prompt_asks_for_rounding() -> None:
    completion = "<think>1 divided by 3.</think>\nThe answer is \\boxed{0.333}."
    verdict, _ = answer("\\frac{1}{3}", completion, prompt="What fraction of the cake is left?")
    assert not verdict.passed and "0.333" in verdict.reason, verdict
    for prompt in ("Give your answer rounded to three decimal places.", "Express the answer as a decimal.",
                   "Round to the nearest thousandth.", "结果保留三位小数。"):
        assert answer("\\frac{1}{3}", completion, prompt=prompt)[0].passed, prompt
    # the wrong rounding stays wrong even when rounding was asked for
    assert not answer("\\frac{1}{3}", "<think>x</think> \\boxed{0.334}", prompt="Round to 3 decimal places.")[0].passed
    assert not answer("\\frac{8}{3}", "<think>x</think> The answer is 2.6667.")[0].passed
    assert answer("\\frac{8}{3}", "<think>x</think> The answer is 2.6667.", rounding="always")[0].passed


def test_a_comma_in_a_box_separates_items_it_is_not_a_decimal_comma() -> None:
    verdict, _ = answer("3.5", "<think>x</think> The answer is \\boxed{3,5}.")
    assert not verdict.passed, verdict
    assert answer("3, 5", "<think>x</think> The solutions are \\boxed{3,5}.")[0].passed
    assert answer("3.5", "<think>x</think> \\boxed{3{,}5}")[0].passed  # LaTeX's decimal comma
    assert answer("1000.99", "1000,99")[0].passed  # plain text: a decimal comma (math-verify's reading)


def test_choice_a_sentence_starting_with_a_capital_a_is_not_option_a() -> None:
    check = create("choice")
    verdict = check.check({"gold": "A", "completion": "<think>Let me count.</think>\nA careful count gives 12."})
    assert not verdict.passed and "no option letter" in verdict.reason, verdict
    for summary, letter in (("(B)", "B"), ("B) 42", "B"), ("C.", "C"), ("D", "D"), ("**E**", "E"),
                            ("The answer is (A).", "A")):
        verdict = check.check({"gold": letter, "completion": f"<think>x</think>\n{summary}"})
        assert verdict.passed, (summary, verdict)


@pytest.mark.parametrize("prompt", [
    "A conversation between User and Assistant. ... User: How many apples are left? Assistant: <think>",
    "How many apples are left?\n<think>\n",
])
def test_a_think_opened_by_the_prompt_and_never_closed_has_no_final_answer(prompt: str) -> None:
    completion = "We start with 100 apples and one is eaten, so 100 - 1 = 99. Hmm, let me check the total 99 again"
    verdict, _ = answer("99", completion, prompt=prompt)
    assert not verdict.passed and verdict.reason.startswith("no final answer found"), verdict
    fmt = create("format").check({"completion": completion, "prompt": prompt})
    assert not fmt.passed and "never closed" in fmt.reason
    # closed, it is graded normally
    assert answer("99", completion + ".\n</think>\nThe answer is 99.", prompt=prompt)[0].passed


def test_a_self_correcting_summary_is_graded_by_its_last_answer() -> None:
    completion = ("<think>Let me work it out.</think>\nFirst I try \\boxed{12}. Wait, that is wrong: I counted "
                  "one box twice. Recounting, the answer is \\boxed{10}.")
    verdict, sample = answer("10", completion)
    assert verdict.passed and sample["answer"] == "10", verdict
    verdict, _ = answer("12", completion)
    assert not verdict.passed and verdict.reason.startswith("answer 10 != gold 12"), verdict


def test_the_reason_never_says_an_answer_equal_to_the_gold_was_rejected() -> None:
    cases = [("5", "The answer is 5 or more."), ("10", "First \\boxed{12}. Wait, wrong. \\boxed{10}"),
             ("3.5", "\\boxed{3,5}"), ("99", "100 - 1 = 100"), ("\\frac{1}{3}", "\\boxed{0.333}")]
    for gold, summary in cases:
        verdict, _ = answer(gold, f"<think>x</think>\n{summary}")
        assert f"answer {gold} != gold {gold}" not in verdict.reason, verdict


def test_real_traces_agree_with_their_upstream_grades(real_traces):
    """Finished Sky-T1 traces (tests/data/real_traces): the answer check agrees with the grade the
    SkyThought harness gave each one, right or wrong, and never grades an unfinished trace's last number
    when the prompt opened its reasoning."""
    finished = [row for row in real_traces if row["finished"]]
    verdicts = [answer(row["gold"], row["completion"], row["prompt"])[0] for row in finished]
    agree = sum(v.passed == row["upstream_correct"] for v, row in zip(verdicts, finished))
    print(f"\nanswer vs upstream grades on {len(finished)} finished real traces: {agree} agree")
    assert agree == len(finished), [(r["id"], v.reason) for v, r in zip(verdicts, finished)
                                    if v.passed != r["upstream_correct"]][:3]
    unfinished = [row for row in real_traces if not row["finished"] and row["completion"].startswith("<think>")]
    opened = [answer(row["gold"], row["completion"].removeprefix("<think>\n"), "Solve it.\n<think>\n")[0]
              for row in unfinished[:20]]
    assert all(v.reason.startswith("no final answer found") for v in opened), [v.reason for v in opened][:3]


def test_generate_with_r1_zero_template_does_not_grade_an_unclosed_completion(tmp_path):
    """generate sends R1-Zero's plain prompt, which ends inside <think>: a completion that never closes it is
    reasoning cut short, so its last number is not graded (the replay engine serves the completions)."""
    from cotforge.engines.replay import ReplayEngine
    from cotforge.generate import GenerateConfig, generate
    from cotforge.query import run_query

    prompts, recorded = tmp_path / "prompts.jsonl", tmp_path / "recorded.jsonl"
    prompts.write_text(json.dumps({"id": "p0", "prompt": "What is 6 + 6?", "gold": "12"}) + "\n")
    completions = ["6 plus 6 is 12, so the total is 12", "6 plus 6 is 12. </think> <answer>12</answer>"]
    recorded.write_text("".join(json.dumps({"prompt_id": "p0", "prompt": "What is 6 + 6?", "sample_idx": i,
                                            "completion": c}) + "\n" for i, c in enumerate(completions)))
    config = GenerateConfig(engine="replay", checks="answer", jobs=0, k=2, max_rounds=1, template="r1-zero")
    generate(prompts, tmp_path / "run", config, engine=ReplayEngine(recorded))
    _, rows = run_query(tmp_path / "run", "SELECT sample_idx, accepted, summary, verdicts[1].reason FROM samples "
                                          "ORDER BY sample_idx")
    assert rows[0][1] is False and rows[0][2] == "" and rows[0][3].startswith("no final answer found"), rows[0]
    assert rows[1][1] is True, rows[1]
