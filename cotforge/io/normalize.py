"""Map input columns onto the schema, validate types, fill deterministic ids.

Common column names map automatically (question/problem/instruction -> prompt;
answer/solution/ground_truth -> gold; ...); `--field prompt=COLUMN` overrides. Every problem raises
`BadRow` naming the file, line and field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from cotforge.errors import CotforgeError
from cotforge.io.errors import BadRow
from cotforge.io.readers import RawRow
from cotforge.parsing import split_sample
from cotforge.schema import user_text

MAX_TEXT_CHARS = 4 * 1024 * 1024  # one text field; longer is "pathological", reported as bad

# Schema field -> accepted input column names, first match wins.
ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "uid", "problem_id", "task_id", "question_id"),
    "prompt": ("prompt", "question", "problem", "instruction", "query", "input"),
    "messages": ("messages", "conversations", "conversation"),
    "gold": ("gold", "answer", "solution", "ground_truth", "reference", "final_answer", "target", "label"),
    "answer_type": ("answer_type",),
    "domain": ("domain", "category", "task"),
    "language": ("language", "lang"),
    "source": ("source", "dataset"),
    "tests": ("tests", "test_cases", "test_list"),
    "prompt_id": ("prompt_id",),
    "sample_idx": ("sample_idx", "sample_index"),
    "round": ("round",),
    "completion": ("completion", "response", "output", "generation", "model_output"),
    "reasoning": ("reasoning", "reasoning_content", "thinking"),
    "summary": ("summary",),
    "model": ("model",),
    # what a generated sample records about its generation: kept through a re-filter, never re-labelled
    "engine": ("engine",),
    "temperature": ("temperature",),
    "top_p": ("top_p",),
    "max_tokens": ("max_tokens",),
    "seed": ("seed",),
    "origin_id": ("origin_id",),
    "rewritten_by": ("rewritten_by",),
    "finish_reason": ("finish_reason",),
    "prompt_tokens": ("prompt_tokens",),
    "completion_tokens": ("completion_tokens",),
}
# Fields whose value decides a verdict: two candidate columns for one of them are an error, never a pick.
UNAMBIGUOUS = ("gold",)
TEXT_FIELDS = ("prompt", "gold", "answer_type", "domain", "language", "source", "completion", "reasoning",
               "summary", "model", "finish_reason", "prompt_id", "engine", "origin_id", "rewritten_by")
INT_FIELDS = ("sample_idx", "round", "prompt_tokens", "completion_tokens", "max_tokens", "seed")
FLOAT_FIELDS = ("temperature", "top_p")
PROMPT_KEYS = ("id", "prompt", "messages", "gold", "answer_type", "domain", "language", "source", "tests")
SAMPLE_KEYS = PROMPT_KEYS + ("prompt_id", "sample_idx", "round", "completion", "reasoning", "summary",
                             "model", "finish_reason", "prompt_tokens", "completion_tokens", "engine",
                             "temperature", "top_p", "max_tokens", "seed", "origin_id", "rewritten_by")


def parse_field_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """`["prompt=question_text", ...]` -> {"prompt": "question_text"}."""
    mapping = {}
    for pair in pairs:
        if "=" not in pair:
            raise CotforgeError(f"--field {pair!r}: expected FIELD=COLUMN")
        field, column = (part.strip() for part in pair.split("=", 1))
        if field not in ALIASES:
            raise CotforgeError(f"--field {pair!r}: unknown field '{field}' (one of {', '.join(ALIASES)})")
        mapping[field] = column
    return mapping


def short_hash(*parts: str, size: int = 8) -> str:
    digest = hashlib.blake2b(digest_size=size)
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


def default_domain(row: dict) -> str:
    if row.get("tests"):
        return "code"
    return "math" if row.get("gold") else "general"


class Normalizer:
    """Turns raw rows into schema rows of one kind ('prompt' or 'sample')."""

    def __init__(self, kind: str, overrides: dict[str, str] | None = None, max_text_chars: int = MAX_TEXT_CHARS):
        if kind not in ("prompt", "sample"):
            raise ValueError(kind)
        self.kind = kind
        self.overrides = overrides or {}
        self.max_text_chars = max_text_chars
        self.keys = PROMPT_KEYS if kind == "prompt" else SAMPLE_KEYS
        # Which column each field is read from depends only on the row's columns and which of them
        # are null; rows of one input nearly all share those, so the choice is made once per shape
        # (it was 9 alias scans a row: a quarter of the cost of normalizing a prompt).
        self._plans: dict[tuple, list[tuple[str, str]]] = {}

    def _plan(self, data: dict, raw: RawRow | None) -> list[tuple[str, str]]:
        """(field, column) for every field this row's columns give, in `self.keys` order."""
        shape = tuple(key if value is not None else (key,) for key, value in data.items())
        plan = self._plans.get(shape)
        if plan is None:
            plan = [(field, column) for field in self.keys
                    if (column := self._column(field, data, raw)) is not None]
            if len(self._plans) < 1024:  # a bound for inputs whose rows all differ in shape
                self._plans[shape] = plan
        return plan

    def _column(self, field: str, data: dict, raw: RawRow | None = None) -> str | None:
        if field in self.overrides:
            return self.overrides[field]
        present = [alias for alias in ALIASES[field] if data.get(alias) is not None]
        if field in UNAMBIGUOUS and len(present) > 1 and field not in present:
            # `answer` and `ground_truth` may be a final answer and a worked solution, or two different
            # references: grading against a silently picked one could accept or reject a whole dataset.
            where = f"{raw.file}:{raw.line}: " if raw else ""
            raise CotforgeError(f"{where}columns {' and '.join(repr(c) for c in present)} would all be read as "
                                f"'{field}'; choose one with --field {field}=COLUMN")
        for alias in ALIASES[field]:
            if alias in data:
                return alias
        return None

    def __call__(self, raw: RawRow) -> dict:
        if raw.error:
            raise raw.error
        data = raw.data
        used: set[str] = set()
        row: dict = {}

        def bad(field: str, problem: str) -> BadRow:
            return BadRow(raw.file, raw.line, field, problem, raw.raw if raw.raw is not None else _dump(data))

        for field, column in self._plan(data, raw):
            if field in self.overrides and column not in data:
                raise bad(column, f"column given by --field {field}={column} is missing")
            used.add(column)
            value = data[column]
            if value is None:
                continue
            row[field] = self._convert(field, value, lambda problem, c=column: bad(c, problem))

        self._require(row, data, bad)
        extra = {k: v for k, v in data.items() if k not in used}
        row["metadata"] = _dump(extra) if extra else None
        if not row.get("domain"):
            row["domain"] = default_domain(row)
        return self._fill_ids(row)

    def _convert(self, field: str, value, bad):
        if field == "messages":
            return _messages(value, bad)
        if field == "tests":
            if isinstance(value, str):
                return value
            if isinstance(value, (list, dict)):
                return _dump(value)
            raise bad(f"expected a list of tests or a JSON string, got {type(value).__name__}")
        if field in FLOAT_FIELDS:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value.strip())
                except ValueError:
                    pass
            raise bad(f"expected a number, got {type(value).__name__} {_preview(value)}")
        if field in INT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                    return int(value)
                raise bad(f"expected an integer, got {type(value).__name__} {_preview(value)}")
            return value
        if field in ("id", "gold", "prompt_id"):
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise bad(f"expected text or a number, got {type(value).__name__} {_preview(value)}")
            value = str(value)
        elif not isinstance(value, str):
            raise bad(f"expected text, got {type(value).__name__} {_preview(value)}")
        if len(value) > self.max_text_chars:
            raise bad(f"{len(value):,} characters is over the {self.max_text_chars:,}-character limit")
        return value

    def _require(self, row: dict, data: dict, bad) -> None:
        if self.kind == "prompt":
            if not row.get("prompt") and not row.get("messages"):
                raise bad("prompt", "missing required field (no prompt, question, problem, instruction "
                                    "or messages column)")
            return
        if row.get("completion") is None and (row.get("reasoning") is None or row.get("summary") is None):
            missing = "completion" if row.get("reasoning") is None and row.get("summary") is None else (
                "summary" if row.get("reasoning") is not None else "reasoning")
            raise bad(missing, "missing required field (a sample needs `completion`, or `reasoning` "
                               "and `summary`)")

    def _fill_ids(self, row: dict) -> dict:
        if self.kind == "prompt":
            if "id" not in row:  # not computed for rows that have one (most inputs)
                row["id"] = "p" + short_hash(row.get("prompt") or _dump(row.get("messages")) or "")
            return row
        prompt_key = row.get("prompt") or _dump(row.get("messages"))
        if row.get("completion") is None:
            row["completion"] = f"<think>\n{row['reasoning']}\n</think>\n\n{row['summary']}"
        else:
            parsed = split_sample(row)
            row.setdefault("reasoning", parsed.reasoning)
            row.setdefault("summary", parsed.summary)
        if "prompt_id" not in row:
            row["prompt_id"] = "p" + short_hash(prompt_key or "")
        if "id" not in row:
            if "sample_idx" in row:
                row["id"] = f"{row['prompt_id']}-{row['sample_idx']}"
            else:
                row["id"] = "s" + short_hash(prompt_key or "", row["completion"])
        row.setdefault("sample_idx", 0)
        row.setdefault("engine", "import")
        if not row.get("prompt") and row.get("messages"):  # ids above hash the turns; text stages read this
            row["prompt"] = user_text(row["messages"])
        return row


def _messages(value, bad) -> list[dict]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise bad("expected a list of {role, content} messages, got text that is not JSON") from None
    if not isinstance(value, list):
        raise bad(f"expected a list of {{role, content}} messages, got {type(value).__name__}")
    out = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise bad(f"message {i}: expected an object, got {type(turn).__name__}")
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if not isinstance(role, str) or not isinstance(content, str):
            raise bad(f"message {i}: needs text 'role' and 'content'")
        out.append({"role": {"human": "user", "gpt": "assistant"}.get(role, role), "content": content})
    return out


def _dump(value) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _preview(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
