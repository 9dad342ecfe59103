"""The `answer` check against labels others wrote: GSM8K `is_correct` and math-verify's own cases."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cotforge.checks import create
from gsm8k_labelled import read_labelled_solutions


def grader_options(text: str) -> dict:
    """math-verify's `compare_strings` options as `answer` check options.

    `match_types=[...]` -> `match_types`, `precision=N` -> `precision`. A value written as a name
    (`precision=precision`, `strict=strict`) was a pytest parameter the row does not record: the
    check's defaults (math-verify's) apply. math-verify compares a decimal at the places it states
    (`0.33` for 1/3) whatever the prompt, so its cases run with `rounding="always"`; cotforge's own
    default accepts that only when the prompt asks for rounding (tests/test_answer_false_accepts.py).
    """
    options = {"rounding": "always"}
    match = re.search(r"match_types=\[([^\]]*)\]", text)
    if match:
        options["match_types"] = ",".join(re.findall(r"'(\w+)'", match.group(1)))
    match = re.search(r"precision=(\d+)", text)
    if match:
        options["precision"] = int(match.group(1))
    return options


def test_gsm8k_agreement_with_is_correct(shared_dir: Path) -> None:
    check = create("answer")
    agree = total = 0
    disagreements = []
    for question in read_labelled_solutions(shared_dir / "data/gsm8k/example_model_solutions.jsonl"):
        for solution, is_correct in question.solutions:
            verdict = check.check({"gold": question.gold, "completion": solution})
            total += 1
            if verdict.passed == is_correct:
                agree += 1
            else:
                disagreements.append((is_correct, verdict.reason))
    print(f"\ngsm8k is_correct agreement: {agree}/{total} = {100 * agree / total:.2f}%")
    assert total == 5276
    assert agree / total >= 0.999, disagreements[:10]


def test_math_verify_conformance(shared_dir: Path) -> None:
    lines = (shared_dir / "conformance/math_verify_cases.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    wrong = []
    for index, row in enumerate(rows):
        verdict = create("answer", **grader_options(row["grader_options"])).check(
            {"gold": row["gold"], "completion": row["pred"]})
        if verdict.passed != row["expected"]:
            wrong.append((index, row["expected"], verdict.reason))
    right = len(rows) - len(wrong)
    print(f"\nmath-verify conformance (grader options mapped): {right}/{len(rows)} = {100 * right / len(rows):.2f}%; "
          f"wrong: {[index for index, _, _ in wrong]}")
    assert len(rows) == 254
    assert 1 - len(wrong) / len(rows) >= 0.97, wrong
