"""Hostile answers neither hang nor crash: guards reject most fast, the chain's kill stops the rest."""

from __future__ import annotations

import time

import pytest

from cotforge.checks import create
from cotforge.checks.chain import Chain, CheckSpec

HOSTILE = [
    ("power tower", "\\boxed{9^{9^{9^{9}}}}"),
    ("plain tower", "The answer is 9^9^9^9^9^9."),
    ("huge exponent", "\\boxed{10^{10^{100}}}"),
    ("huge factorial", "\\boxed{99999999!}"),
    ("long number", "\\boxed{" + "7" * 5000 + "}"),
    ("deep nesting", "\\boxed{" + "(" * 300 + "1" + ")" * 300 + "}"),
    ("deep fractions", "\\boxed{" + "\\frac{1}{" * 60 + "2" + "}" * 60 + "}"),
    ("nested parentheses", "$" + "(" * 19 + "1" + ")" * 19 + "$ " * 1000),
    ("unclosed boxes", "\\boxed{" * 150_000),
    ("many spans", "$x$ and " * 100_000),
    ("megabyte completion", "blah 1 + " * 150_000 + "\nThe answer is 7."),
    ("megabyte of latex", "$" + "x^2 + " * 200_000 + "1$"),
    ("control characters", "The answer is \x00\x01\x1b[31m7\x07\x7f."),
]
SLOW = ("(x+y+z)^{60}", "\\boxed{(x+y+z)^{59}(x+y+2z)}")  # passes the guards; sympy takes seconds


@pytest.mark.parametrize("name,completion", HOSTILE)
def test_guards_answer_fast(name: str, completion: str) -> None:
    check = create("answer")
    check.check({"gold": "1", "completion": "\\boxed{1}"})  # imports paid before timing
    started = time.process_time()  # CPU, not wall: a loaded machine must not make a guard look slow
    verdict = check.check({"gold": "7", "completion": completion})
    elapsed = time.process_time() - started
    assert elapsed < 3.0, (name, elapsed, verdict)
    assert isinstance(verdict.passed, bool)


def test_megabyte_completion_still_finds_its_answer() -> None:
    verdict = create("answer").check({"gold": "7", "completion": "blah 1 + " * 150_000 + "\nThe answer is 7."})
    assert verdict.passed, verdict.reason


def test_chain_kills_an_overrunning_item_and_goes_on() -> None:
    limit = 1.5
    samples = [{"gold": str(n), "completion": f"The answer is {n}."} for n in range(40)]
    samples += [{"gold": "7", "completion": completion} for _, completion in HOSTILE]
    samples.insert(10, {"gold": SLOW[0], "completion": SLOW[1]})
    with Chain([CheckSpec("answer", timeout_s=limit)], jobs=2) as chain:
        chain._start()  # worker start-up is not the item's cost
        started = time.perf_counter()
        results = chain.run(samples)
        elapsed = time.perf_counter() - started
    slow = results[10].verdicts[0]
    assert not slow.passed and slow.reason.startswith("timeout"), slow
    normal = [r for i, r in enumerate(results) if i != 10][:40]
    assert all(r.verdicts[0].passed for r in normal)
    assert all(len(r.verdicts) == 1 for r in results)
    assert chain.infrastructure()["worker_deaths"] == 0  # the overrun was killed as one, not taken for a crash
    # What a kill costs in wall time is the load's as much as the chain's: printed, not asserted.
    print(f"\nchain jobs=2: {len(samples)} items, {len(HOSTILE)} hostile + 1 over its {limit}s limit, "
          f"{elapsed:.2f}s wall")
