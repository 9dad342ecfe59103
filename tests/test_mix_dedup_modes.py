"""`dedup.text` compares exactly what its name says, between samples of one prompt as well as across."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cotforge.mix import mix
from cotforge.query import run_query

# One prompt X with three samples: a and b share the final answer S but reason differently; c answers T.
# Prompt Y has a's reasoning and answer.
ROWS = [("a", "X?", "reason one, carefully", "S"), ("b", "X?", "another line of thought", "S"),
        ("c", "X?", "a third way", "T"), ("d", "Y?", "reason one, carefully", "S")]


def run_mix(tmp_path: Path, text: str, near: bool) -> dict[str, str | None]:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"id": i, "prompt": p, "completion": f"<think>{r}</think> {s}"}) + "\n"
                            for i, p, r, s in ROWS))
    near_line = "  near: {threshold: 0.9, ngram: 2}\n" if near else "  near: false\n"
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(f"name: modes\nseed: 3\nsources:\n  - name: rows\n    path: rows.jsonl\n    select: shortest\n"
                      f"dedup:\n  exact: true\n{near_line}  text: {text}\n")
    mix(recipe, tmp_path / "out")
    _, rows = run_query(tmp_path / "out", "SELECT id, accepted, list_filter(verdicts, lambda v: v.check = 'mix')[1].reason "
                                          "FROM samples ORDER BY id")
    return {row_id: None if accepted else reason for row_id, accepted, reason in rows}


@pytest.mark.parametrize("near", [False, True])
def test_sample_mode_compares_prompt_and_whole_completion(tmp_path, near):
    assert run_mix(tmp_path, "sample", near) == {"a": None, "b": None, "c": None, "d": None}


@pytest.mark.parametrize("near", [False, True])
def test_prompt_summary_mode_compares_prompt_and_final_answer(tmp_path, near):
    decided = run_mix(tmp_path, "prompt_summary", near)
    kept = sorted(row_id for row_id, reason in decided.items() if reason is None)
    assert kept in (["a", "c", "d"], ["b", "c", "d"]), decided  # a and b: one prompt, one answer
    dropped = next(row_id for row_id in "ab" if decided[row_id] is not None)
    assert decided[dropped].startswith("exact duplicate of "), decided


@pytest.mark.parametrize("near", [False, True])
def test_prompt_mode_compares_the_prompt_only(tmp_path, near):
    decided = run_mix(tmp_path, "prompt", near)
    kept = sorted(row_id for row_id, reason in decided.items() if reason is None)
    assert len(kept) == 2 and "d" in kept, decided  # one sample of X, and Y
    assert all(decided[row_id].startswith("exact duplicate of ") for row_id in "abc" if row_id not in kept)
