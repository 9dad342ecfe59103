"""Labelled model solutions in the layout of GSM8K's `example_model_solutions.jsonl` (../shared).

Read by the benchmarks and the tests (tests/conftest.py puts this folder on the path), not by cotforge
itself: the package reads samples through `cotforge.io`, and this layout is only our test data's.

Each line holds `question`, `ground_truth` (a worked solution ending in `A: N` or `#### N`) and one
column per model with `{is_correct, solution}` (a JSON object, or its Python repr as the upstream
file writes it, read with `ast.literal_eval`: literals only, never code).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

GSM8K_MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


@dataclass(frozen=True)
class LabelledQuestion:
    index: int  # 0-based line in the file
    question: str
    gold: str
    solutions: list[tuple[str, bool]]  # (solution text, is_correct), one per model in GSM8K_MODELS order


def read_labelled_solutions(path: str | Path, limit: int | None = None) -> Iterator[LabelledQuestion]:
    with open(path, encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if limit is not None and index >= limit:
                return
            row = json.loads(line)
            cells = [row[m] if isinstance(row[m], dict) else ast.literal_eval(row[m]) for m in GSM8K_MODELS]
            yield LabelledQuestion(index, row["question"], row["ground_truth"],
                                   [(cell["solution"], bool(cell["is_correct"])) for cell in cells])
