"""A mix source as a DuckDB relation over Parquet.

A cotforge run folder is read in place (its committed `samples` shards, accepted rows only). Any
other input (JSONL / Parquet / CSV / `datasets` folder of prompt + response or chat messages) and the
self-cognition templates are normalized into one temporary Parquet file, chunk by chunk, so memory
stays flat. A chat row's last assistant turn becomes the completion (summary-only when it has no
`<think>` block); the turns before it become the sample's `messages` (a list column) for the formatters.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from cotforge.io.normalize import ALIASES, Normalizer
from cotforge.io.readers import RawRow, is_run_folder, read_rows
from cotforge.io.rows import chunks
from cotforge.mix.recipe import Source
from cotforge.mix.selfcog import load_spec, self_cognition_rows
from cotforge.query import connect, sql_literal
from cotforge.io.review import has_reviews
from cotforge.schema import SAMPLE_SCHEMA, to_table

STAGE_CHUNK_ROWS = 5000
_ROW_KEY = "union_by_name=true, filename=true, file_row_number=true"
_ROLE_NAMES = {"human": "user", "gpt": "assistant"}




def _chat_to_completion(raw: RawRow) -> RawRow:
    """A prompt + response chat row: last assistant turn -> completion, earlier turns -> prompt."""
    data = raw.data
    if data is None or any(alias in data for alias in ALIASES["completion"]):
        return raw
    key = next((alias for alias in ALIASES["messages"] if isinstance(data.get(alias), list)), None)
    if key is None:
        return raw
    turns = [{"role": _ROLE_NAMES.get(t.get("role", t.get("from")), t.get("role", t.get("from"))),
              "content": t.get("content", t.get("value"))} for t in data[key] if isinstance(t, dict)]
    if not turns or turns[-1]["role"] != "assistant":
        return raw
    prompt_turns = turns[:-1]
    users = [t["content"] for t in prompt_turns if t["role"] == "user"]
    data = {k: v for k, v in data.items() if k != key}
    data["completion"] = turns[-1]["content"]
    if not any(alias in data for alias in ALIASES["prompt"]) and users:
        data["prompt"] = users[-1]
    if prompt_turns:
        data["messages"] = prompt_turns
    return RawRow(raw.file, raw.line, data, raw.error, raw.raw)


def _normalized_rows(source: Source) -> Iterator[dict]:
    if source.self_cognition is not None:
        yield from self_cognition_rows(load_spec(source.self_cognition))
        return
    normalize = Normalizer("sample", source.fields)
    for raw in read_rows(source.path):
        row = normalize(_chat_to_completion(raw))
        row["accepted"] = True  # imported rows have passed no checks: every row is a candidate
        yield row


def source_relation(source: Source, workdir: Path) -> str:
    """SQL for the source's candidate rows, staging a Parquet file if needed.

    Columns: SAMPLE_SCHEMA's, plus `filename` and `file_row_number`, a unique row key."""
    if source.path is not None and is_run_folder(source.path) and has_reviews(source.path):
        staged = workdir / f"source-{source.name}.parquet"
        _stage_reviewed(source.path, staged)
        relation = f"(SELECT * FROM read_parquet({sql_literal(staged)}, {_ROW_KEY}))"
    elif source.path is not None and is_run_folder(source.path):
        shards = sorted((source.path / "samples").glob("part-*.parquet"))
        if not shards:
            return "(SELECT *, '' AS filename, 0::BIGINT AS file_row_number FROM _empty_samples)"
        files = ", ".join(sql_literal(s) for s in shards)
        relation = f"(SELECT * FROM read_parquet([{files}], {_ROW_KEY}) WHERE accepted)"
    else:
        staged = workdir / f"source-{source.name}.parquet"
        with pq.ParquetWriter(staged, SAMPLE_SCHEMA, compression="zstd") as writer:
            for rows in chunks(_normalized_rows(source), STAGE_CHUNK_ROWS):
                writer.write_table(to_table(rows, SAMPLE_SCHEMA))
        relation = f"(SELECT * FROM read_parquet({sql_literal(staged)}, {_ROW_KEY}))"
    if source.pass_rate is not None:
        relation = f"(SELECT * FROM {relation} WHERE prompt_id IN ({_prompts_in_range(source)}))"
    if source.where:
        relation = f"(SELECT * FROM {relation} WHERE {source.where})"
    return relation


def _prompts_in_range(source: Source) -> str:
    """SQL: the prompt ids of a run-folder source whose pass rate (accepted / judged, over all its
    samples, as the checks judged them) lies in the source's `pass_rate` range."""
    low, high = source.pass_rate
    shards = sorted((source.path / "samples").glob("part-*.parquet"))
    if not shards:
        return "SELECT NULL::VARCHAR WHERE false"
    files = ", ".join(sql_literal(s) for s in shards)
    return (f"SELECT prompt_id FROM read_parquet([{files}], union_by_name=true) GROUP BY prompt_id "
            f"HAVING avg(accepted::INTEGER) BETWEEN {low!r} AND {high!r}")


def _stage_reviewed(run_path: Path, staged: Path) -> None:
    """A reviewed run's accepted rows as `cotforge query` defines them (a person's decision wins over
    the checks, edits replace the text), copied to one Parquet file by DuckDB in file order: the mix
    reads sources twice by row position, which a view with a join does not promise to keep."""
    con = connect(run_path)
    try:
        con.execute("SET preserve_insertion_order=true")
        con.execute(f"COPY (SELECT * FROM accepted) TO {sql_literal(staged)} (FORMAT parquet, COMPRESSION zstd)")
    finally:
        con.close()


def upstream_funnel(source: Source) -> list | None:
    """The funnel a run-folder source recorded (its checks' rejections), for the data card."""
    if source.path is None or not is_run_folder(source.path):
        return None
    manifest = json.loads((source.path / "manifest.json").read_text())
    return manifest.get("funnel")
