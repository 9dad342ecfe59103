"""The record schema: one pyarrow schema per record kind, documented field by field.

Every stage reads and writes these. Free-form structures (`tests`, `metadata`) are stored as JSON
strings so that heterogeneous rows share one Parquet schema.
"""

from __future__ import annotations

import pyarrow as pa

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

VERDICT = pa.struct(
    [
        ("check", pa.string()),  # registered check name, e.g. "answer"
        ("passed", pa.bool_()),  # False rejects the sample
        ("score", pa.float64()),  # in [0, 1]; null where the check does not apply
        ("reason", pa.string()),  # what was measured against what, e.g. "answer 17 != gold 18" (for people)
        ("status", pa.string()),  # passed | failed | n/a (checks.base.status_of)
        ("code", pa.string()),  # machine-readable kind, e.g. undecided, missing:gold, timeout, worker_died,
        # unparsed (checks.base); null for a plain judgement. Stages read this, never `reason`.
    ]
)

_PROMPT_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("id", pa.string(), "stable prompt id (given, or a hash of the prompt content)"),
    ("prompt", pa.string(), "the prompt text (null when only `messages` is given)"),
    ("messages", pa.list_(MESSAGE), "chat turns instead of / besides `prompt`"),
    ("gold", pa.string(), "reference answer: bare, LaTeX or a worked solution ending in '#### N'"),
    ("answer_type", pa.string(), "math | choice | numeric | code | text (null: inferred from domain)"),
    ("domain", pa.string(), "math, code, science, logic, general, ..."),
    ("language", pa.string(), "ISO 639-1 code of the expected answer language (null: detect)"),
    ("source", pa.string(), "dataset or file the prompt came from"),
    ("tests", pa.string(), "JSON: code tests, a list of {input, output} pairs or assert strings"),
    ("metadata", pa.string(), "JSON object with any other columns of the input row"),
]

_SAMPLE_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("id", pa.string(), "sample id; '{prompt_id}-{sample_idx}' when generated"),
    ("prompt_id", pa.string(), "id of the prompt this sample answers"),
    ("sample_idx", pa.int32(), "index of the sample among its prompt's samples (stable key with prompt_id)"),
    ("round", pa.int32(), "generation round that produced it (0-based)"),
    ("prompt", pa.string(), "the prompt text, kept so every later stage is self-contained (chat: user turns)"),
    ("messages", pa.list_(MESSAGE), "a chat prompt's own turns (system, user, ...); export writes these"),
    ("gold", pa.string(), "reference answer copied from the prompt"),
    ("answer_type", pa.string(), "answer type copied from the prompt (math | choice | numeric | code | text)"),
    ("domain", pa.string(), "domain copied from the prompt"),
    ("language", pa.string(), "expected language copied from the prompt"),
    ("source", pa.string(), "dataset or file the prompt came from"),
    ("tests", pa.string(), "JSON code tests copied from the prompt"),
    ("model", pa.string(), "model name or path"),
    ("engine", pa.string(), "embedded | vllm | openai | import"),
    ("temperature", pa.float64(), "sampling temperature"),
    ("top_p", pa.float64(), "nucleus sampling p"),
    ("max_tokens", pa.int32(), "generation limit"),
    ("seed", pa.int64(), "deterministic per-sample seed"),
    ("completion", pa.string(), "raw model text"),
    ("reasoning", pa.string(), "chain of thought parsed out of the completion"),
    ("summary", pa.string(), "the part after the reasoning (the user-facing answer)"),
    ("answer", pa.string(), "final answer extracted by the answer check"),
    ("finish_reason", pa.string(), "stop | length | ... as the engine reported"),
    ("prompt_tokens", pa.int32(), "tokens in the rendered prompt"),
    ("completion_tokens", pa.int32(), "tokens generated"),
    ("verdicts", pa.list_(VERDICT), "one verdict per check, in chain order"),
    ("accepted", pa.bool_(), "all checks passed"),
    ("metadata", pa.string(), "JSON object with any other columns of the input row"),
    ("origin_id", pa.string(), "id of the sample this one was rewritten from (`cotforge rewrite`); the original "
     + "stays in its run; a human edit goes to the `reviews` table"),
    ("rewritten_by", pa.string(), "engine:model that rewrote it into the readable pattern (null: not rewritten)"),
]

_QUARANTINE_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("file", pa.string(), "input file"),
    ("line", pa.int64(), "1-based line (JSONL/CSV) or row number (Parquet/datasets)"),
    ("field", pa.string(), "offending field, or '<row>'"),
    ("reason", pa.string(), "what is wrong"),
    ("raw", pa.string(), "the raw row, non-UTF-8 bytes escaped as \\xNN, cut at 64 KiB"),
]


_REVIEW_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("seq", pa.int64(), "decision number in this run (0, 1, ...); the highest per sample is the one that counts"),
    ("sample_id", pa.string(), "id of the reviewed sample"),
    ("decision", pa.string(), "accept | reject | edit (edit keeps the sample with the edited text)"),
    ("note", pa.string(), "the reviewer's note"),
    ("reasoning", pa.string(), "edited reasoning (edit only; the sample's own text stays in `samples`)"),
    ("summary", pa.string(), "edited summary (edit only)"),
    ("reviewer", pa.string(), "who decided (the `cotforge view` user)"),
    ("created", pa.string(), "UTC time of the decision, ISO 8601"),
]


_METRIC_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("scope", pa.string(), "overall | source | domain"),
    ("name", pa.string(), "the source or domain ('all' for overall; '(none)' where the rows name none)"),
    ("metric", pa.string(), "prompts, n, pass@1, pass@k, maj@k, pass@1_ci_low/high, mean_tokens, truncated, stopped"),
    ("value", pa.float64(), "the value (shares and rates in [0, 1]; null: not defined for this split)"),
]

_VOTE_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("id", pa.string(), "sample id"),
    ("prompt_id", pa.string(), "prompt id"),
    ("sample_idx", pa.int32(), "sample index"),
    ("answer_class", pa.int32(), "class of its extracted answer within the prompt (equal answers share one); "
     + "null: no answer"),
]


def _schema(fields: list[tuple[str, pa.DataType, str]]) -> pa.Schema:
    return pa.schema([pa.field(name, typ, metadata={"doc": doc}) for name, typ, doc in fields])


PROMPT_SCHEMA = _schema(_PROMPT_FIELDS)
SAMPLE_SCHEMA = _schema(_SAMPLE_FIELDS)
QUARANTINE_SCHEMA = _schema(_QUARANTINE_FIELDS)
REVIEW_SCHEMA = _schema(_REVIEW_FIELDS)
METRIC_SCHEMA = _schema(_METRIC_FIELDS)  # an eval run's `metrics` table (cotforge.evaluation)
VOTE_SCHEMA = _schema(_VOTE_FIELDS)  # an eval run's `votes` table: answer classes for maj@k

PROMPT_FIELDS = [name for name, _, _ in _PROMPT_FIELDS]
SAMPLE_FIELDS = [name for name, _, _ in _SAMPLE_FIELDS]
# The prompt's fields that each of its samples carries as they are (gold, answer_type, domain, language,
# source, tests, metadata): what the checks read, through generate, filter, rewrite and mix alike.
PROMPT_COPIED = tuple(name for name in PROMPT_FIELDS if name in SAMPLE_FIELDS and name not in ("id", "prompt",
                                                                                             "messages"))


def user_text(messages: list[dict] | None) -> str:
    """A chat prompt as plain text (its user turns): what checks, dedup and decontamination read."""
    return "\n".join(turn["content"] for turn in messages or [] if turn.get("role") == "user")


def describe(schema: pa.Schema) -> str:
    """Field-by-field documentation, for `--help` texts and the data card."""
    return "\n".join(f"{f.name:18} {f.type!s:40} {f.metadata[b'doc'].decode()}" for f in schema)


def to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows (dicts, missing keys = null) to a table of exactly `schema`."""
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)
