"""`cotforge query`: DuckDB views over a run folder's committed Parquet shards.

Views: samples, accepted, rejected, metrics (an eval run's metrics, one row per split and metric;
empty for other runs), verdicts (one row per sample and check, with its `status`
passed/failed/n/a and machine-readable `code`, see checks.base), prompts, quarantine,
reviews (every human decision, cotforge/io/review.py). `samples` is as the checks left it; `accepted` and
`rejected` apply the latest review of each sample (a human decision is final; an edit's text replaces
reasoning and summary), so everything downstream of them (export, mix) honours the reviews.
Only published `part-*.parquet` files are read, so a run that another process is still writing can
be queried: it shows the shards committed so far.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa

from cotforge.errors import CotforgeError
from cotforge.io.rundir import RunDir
from cotforge.schema import METRIC_SCHEMA, PROMPT_SCHEMA, QUARANTINE_SCHEMA, REVIEW_SCHEMA, SAMPLE_SCHEMA

FORMATS = ("table", "csv", "json", "jsonl")


def sql_literal(text: str | Path) -> str:
    """A quoted SQL string literal for DuckDB (paths in read_parquet, settings)."""
    return "'" + str(text).replace("'", "''") + "'"


def _table_view(con: duckdb.DuckDBPyConnection, run: RunDir, name: str, schema: pa.Schema,
                folder: str | None = None) -> bool:
    """View `name` over the run's `folder` shards (default: same name), or an empty table of `schema`."""
    shards = run.shards(folder or name)
    if shards:
        files = ", ".join(sql_literal(s) for s in shards)
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{files}], union_by_name=true)")
        return True
    # Typed NULLs in SQL, not a registered empty Arrow table: DuckDB imports pandas (~0.5 s) to inspect any
    # Python object it is given, and every `cotforge query` would pay for it.
    columns = ", ".join(f"NULL::{sql_type(field.type)} AS {sql_identifier(field.name)}" for field in schema)
    con.execute(f"CREATE VIEW {name} AS SELECT * FROM (SELECT {columns}) WHERE false")
    return False


def sql_identifier(name: str) -> str:
    """A quoted SQL identifier (a column may be named like a keyword: `check`, `round`)."""
    return '"' + name.replace('"', '""') + '"'


# Arrow types the record schemas use, as DuckDB names them (what DuckDB makes of the same Arrow table).
_SQL_TYPES = {pa.string(): "VARCHAR", pa.large_string(): "VARCHAR", pa.bool_(): "BOOLEAN",
              pa.int8(): "TINYINT", pa.int16(): "SMALLINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
              pa.float32(): "FLOAT", pa.float64(): "DOUBLE", pa.binary(): "BLOB"}


def sql_type(arrow_type: pa.DataType) -> str:
    """The DuckDB type of an Arrow type (lists and structs nest)."""
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return sql_type(arrow_type.value_type) + "[]"
    if pa.types.is_struct(arrow_type):
        members = ", ".join(f"{sql_identifier(f.name)} {sql_type(f.type)}" for f in arrow_type)
        return f"STRUCT({members})"
    if arrow_type in _SQL_TYPES:
        return _SQL_TYPES[arrow_type]
    raise TypeError(f"no DuckDB type for Arrow type {arrow_type}")


def connect(run_path: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the run's views defined."""
    run = RunDir(run_path)
    run.manifest()  # fails clearly on a folder that is not a run
    con = duckdb.connect()
    _table_view(con, run, "samples", SAMPLE_SCHEMA)
    _table_view(con, run, "quarantine", QUARANTINE_SCHEMA)
    _table_view(con, run, "metrics", METRIC_SCHEMA)  # written by `cotforge eval`
    if _table_view(con, run, "reviews", REVIEW_SCHEMA):
        _reviewed_views(con)
    else:  # nothing reviewed: the checks' verdict alone (and no join on the export's path)
        con.execute("CREATE VIEW accepted AS SELECT * FROM samples WHERE accepted")
        con.execute("CREATE VIEW rejected AS SELECT * FROM samples WHERE NOT accepted")
    # Run folders written before verdicts had a status and a code read the same: status by
    # base.status_of's rule, no code.
    stored = _verdict_fields(con)
    status = "v.status" if "status" in stored else "NULL"
    code = "v.code" if "code" in stored else "NULL"
    con.execute(f"""CREATE VIEW verdicts AS
        SELECT id, prompt_id, sample_idx, v.check AS "check", v.passed AS passed,
               coalesce({status}, CASE WHEN NOT v.passed THEN 'failed' WHEN v.score IS NULL THEN 'n/a'
                                       ELSE 'passed' END) AS status,
               {code} AS code, v.score AS score, v.reason AS reason
        FROM (SELECT id, prompt_id, sample_idx, unnest(verdicts) AS v FROM samples)""")
    con.execute("""CREATE VIEW _prompt_stats AS
        SELECT prompt_id, count(*) AS samples, count(*) FILTER (WHERE accepted) AS accepted,
               count(*) FILTER (WHERE accepted) / count(*) AS pass_rate,
               sum(completion_tokens) AS completion_tokens
        FROM samples GROUP BY prompt_id""")
    if run.shards("prompts"):  # generate wrote its prompts: add what each one cost and yielded
        _table_view(con, run, "_prompt_rows", PROMPT_SCHEMA, folder="prompts")
        con.execute("""CREATE VIEW prompts AS
            SELECT p.*, coalesce(s.samples, 0) AS samples, coalesce(s.accepted, 0) AS accepted,
                   s.pass_rate, coalesce(s.completion_tokens, 0) AS completion_tokens
            FROM _prompt_rows p LEFT JOIN _prompt_stats s ON s.prompt_id = p.id""")
    else:  # a filtered samples file: prompts as the samples name them
        con.execute("""CREATE VIEW prompts AS
            SELECT prompt_id AS id, any_value(prompt) AS prompt, any_value(gold) AS gold,
                   any_value(answer_type) AS answer_type,
                   any_value(domain) AS domain, any_value(language) AS language, any_value(source) AS source,
                   count(*) AS samples, count(*) FILTER (WHERE accepted) AS accepted,
                   count(*) FILTER (WHERE accepted) / count(*) AS pass_rate,
                   sum(completion_tokens) AS completion_tokens
            FROM samples GROUP BY prompt_id""")
    return con


# A scan of every shard by an end-of-run statistic (filter, rewrite): bounded, so that on a head node
# shared with engines and checks it takes neither every core nor memory that grows with the run (an
# uncapped scan of a 1M-prompt run's 15,625 shards reached 1.8 GB). What exceeds the limit spills to
# a temporary folder of its own, not to `.tmp` in the user's working directory.
SCAN_THREADS = 2
SCAN_MEMORY = os.environ.get("COTFORGE_DUCKDB_MEMORY", "1GB")


@contextlib.contextmanager
def capped(run_path: str | Path, threads: int = SCAN_THREADS, memory_limit: str = SCAN_MEMORY):
    """`connect`, with DuckDB's threads and memory capped and its spill folder temporary."""
    with tempfile.TemporaryDirectory(prefix="cotforge-duckdb-") as spill:
        con = connect(run_path)
        try:
            con.execute(f"SET threads = {int(threads)}")
            con.execute(f"SET memory_limit = {sql_literal(memory_limit)}")
            con.execute(f"SET temp_directory = {sql_literal(spill)}")
            con.execute("SET preserve_insertion_order = false")  # aggregates only: order is not needed
            yield con
        finally:
            con.close()


def _verdict_fields(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Which of the later verdict fields (`status`, `code`) the stored verdicts have."""
    present = set()
    for name in ("status", "code"):
        try:
            con.execute(f"SELECT v.{name} FROM (SELECT unnest(verdicts) AS v FROM samples) LIMIT 0")
            present.add(name)
        except duckdb.BinderException:
            pass
    return present


def _reviewed_views(con: duckdb.DuckDBPyConnection) -> None:
    """`accepted` / `rejected` with each sample's latest review applied (the reviews are few: the
    join's hash table holds them, the samples stream past it)."""
    con.execute("""CREATE VIEW review_latest AS
        SELECT sample_id, arg_max(decision, seq) AS decision, arg_max(reasoning, seq) AS reasoning,
               arg_max(summary, seq) AS summary
        FROM reviews GROUP BY sample_id""")
    con.execute("""CREATE VIEW _reviewed AS
        SELECT s.* REPLACE (
                 CASE r.decision WHEN 'reject' THEN false WHEN 'accept' THEN true WHEN 'edit' THEN true
                      ELSE s.accepted END AS accepted,
                 CASE WHEN r.decision = 'edit' THEN coalesce(r.reasoning, s.reasoning) ELSE s.reasoning END
                      AS reasoning,
                 CASE WHEN r.decision = 'edit' THEN coalesce(r.summary, s.summary) ELSE s.summary END AS summary)
        FROM samples s LEFT JOIN review_latest r ON r.sample_id = s.id""")
    con.execute("CREATE VIEW accepted AS SELECT * FROM _reviewed WHERE accepted")
    con.execute("CREATE VIEW rejected AS SELECT * FROM _reviewed WHERE NOT accepted")


def run_query(run_path: str | Path, sql: str) -> tuple[list[str], list[tuple]]:
    con = connect(run_path)
    try:
        result = con.execute(sql)
    except duckdb.Error as err:
        message = str(err).splitlines()[0]
        if 'at or near "check"' in message:
            message += ' (`check` is an SQL keyword: quote the column, "check")'
        raise CotforgeError(f"query failed: {message}") from None
    if result.description is None:
        return [], []
    columns = [d[0] for d in result.description]
    return columns, result.fetchall()


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def render(columns: list[str], rows: list[tuple], fmt: str) -> str:
    if fmt not in FORMATS:
        raise CotforgeError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    records = [dict(zip(columns, map(_jsonable, row))) for row in rows]
    if fmt == "json":
        return json.dumps(records, ensure_ascii=False, indent=1)
    if fmt == "jsonl":
        return "\n".join(json.dumps(r, ensure_ascii=False) for r in records)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for record in records:
            writer.writerow(json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                            for v in record.values())
        return out.getvalue().rstrip("\n")
    return _table(columns, records)


def _table(columns: list[str], records: list[dict]) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, show_lines=False)
    for record in records:
        table.add_row(*("" if v is None else str(v)[:200] for v in record.values()))
    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    console.print(table)
    console.print(f"({len(records)} rows)")
    return console.file.getvalue().rstrip("\n")
