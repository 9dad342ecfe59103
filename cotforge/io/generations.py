"""Rows that hold several generations of one prompt, expanded into one sample row per generation.

OpenR1-Math-220k (and the sets derived from it) keep a problem's R1 traces in one row:
`generations` (a list of texts) beside per-generation lists of the same length, such as
`finish_reasons`, `is_reasoning_complete`, `correctness_math_verify`, `correctness_llama` or
`generation_token_length`. `filter` judges samples, so such a row becomes one sample per generation:
generation i is its `completion`, `finish_reasons[i]` its `finish_reason`, every other per-generation
column keeps its i-th value under its own name (so it lands in the sample's `metadata`: the dataset's
own labels, next to cotforge's verdicts), and row-level columns are copied to each sample.

A per-generation column is any list column of exactly the generations' length, except chat turns
(`messages`: in OpenR1 they repeat one generation as an assistant turn, so they are dropped rather
than kept as the prompt) and tests. A row id becomes the samples' `prompt_id`; sample i's id is then
`PROMPT_ID-i` (normalize.py), stable across reruns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from cotforge.io.errors import BadRow
from cotforge.io.normalize import ALIASES
from cotforge.io.readers import RawRow

GENERATION_LISTS = ("generations",)
# Per-generation list column -> the sample field its element is read as.
RENAMED = {"finish_reasons": "finish_reason"}
_ROW_LEVEL_LISTS = set(ALIASES["messages"]) | set(ALIASES["tests"])


def generations_column(data: dict) -> str | None:
    """The column holding a list of generations, when the row has no single completion column."""
    if any(data.get(alias) is not None for alias in ALIASES["completion"]):
        return None
    return next((name for name in GENERATION_LISTS if isinstance(data.get(name), list)), None)


def expand_generations(raw_rows: Iterable[RawRow]) -> Iterator[RawRow]:
    """Each multi-generation row as one row per generation (same file and line); others as they are."""
    for raw in raw_rows:
        column = None if raw.data is None else generations_column(raw.data)
        if column is None:
            yield raw
            continue
        yield from _expand(raw, column)


def _expand(raw: RawRow, column: str) -> Iterator[RawRow]:
    data = raw.data
    texts = data[column]
    if not texts:
        yield RawRow(raw.file, raw.line, None, BadRow(raw.file, raw.line, column, "empty list of generations",
                                                      raw.raw), raw.raw)
        return
    per_generation = [name for name, value in data.items() if name != column and name not in _ROW_LEVEL_LISTS
                      and isinstance(value, list) and len(value) == len(texts)]
    shared = {name: value for name, value in data.items()
              if name != column and name not in per_generation and name not in ALIASES["messages"]}
    id_column = next((alias for alias in ALIASES["id"] if shared.get(alias) is not None), None)
    if id_column is not None and "prompt_id" not in shared:
        shared["prompt_id"] = shared.pop(id_column)  # the row is a prompt; its samples get -i ids
    for i, text in enumerate(texts):
        row = dict(shared)
        row["completion"] = text
        row["sample_idx"] = i
        for name in per_generation:
            row[RENAMED.get(name, name)] = data[name][i]
        yield RawRow(raw.file, raw.line, row, raw.error, raw.raw)
