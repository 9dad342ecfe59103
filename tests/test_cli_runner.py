"""The `cotforge` process itself: what it imports to start, and the in-process runner the tests use
(conftest.cotforge_in_process) showing what the real process shows."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, cotforge, cotforge_in_process, write_jsonl

# Imports a command pays for only where it needs them (each costs 0.1-2 s of CPU at start).
HEAVY = ("pyarrow", "duckdb", "pandas", "numpy", "torch", "transformers", "sympy", "datasets", "ray", "vllm")

ROWS = [{"id": "a", "prompt": "2+2?", "completion": "<think>2+2 is 4, so the answer is four.</think> 4"},
        {"id": "b", "prompt": "3+3?", "completion": "no reasoning here"}]


def imported_by(*commands: list[str], status: int = 0) -> set[str]:
    """The modules of HEAVY that a fresh process has imported once it ran each of `commands` (argument
    lists) through cotforge.cli.run, one after the other, each exiting with `status`."""
    script = ("import json, sys\nfrom cotforge.cli import run\n"
              "print(json.dumps([run(args) for args in json.loads(sys.argv[1])]))\n"
              f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n")
    argv = json.dumps([[str(arg) for arg in args] for args in commands])
    result = subprocess.run([sys.executable, "-c", script, argv], capture_output=True, text=True, cwd=REPO,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    statuses, modules = result.stdout.strip().splitlines()[-2:]
    assert json.loads(statuses) == [status] * len(commands), result.stderr
    return set(json.loads(modules))


def test_help_imports_none_of_the_heavy_libraries():
    assert imported_by(["--help"], ["filter", "--help"], ["generate", "--help"], ["--version"]) == set()


def test_a_wrong_engine_option_is_found_before_the_engine_is_imported(tmp_path):
    """The embedded engine's options are checked against its signature: without torch or transformers
    (~4 s of CPU), as a wrong option of any engine is refused before anything heavy starts."""
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "1+1?", "gold": "2"}])
    loaded = imported_by(["generate", prompts, "--out", tmp_path / "run", "--engine", "embedded",
                          "--engine-option", "warp=9"], status=1)
    assert not loaded & {"torch", "transformers"}, loaded


def test_query_imports_duckdb_and_pyarrow_but_not_pandas(tmp_path):
    # DuckDB imports pandas to inspect any Python object registered with it (an empty Arrow table for
    # a table the run lacks did that): the run below has no reviews, quarantine or metrics.
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    cotforge_in_process("filter", data, "--out", tmp_path / "run", "--checks", "format", "--jobs", "0", check=True)
    loaded = imported_by(["query", tmp_path / "run", "SELECT count(*) FROM reviews"])
    assert loaded == {"duckdb", "pyarrow", "numpy"} or loaded == {"duckdb", "pyarrow"}, loaded


def test_empty_views_have_the_types_of_the_stored_tables(tmp_path):
    """A table the run lacks is a view of typed NULLs: it must read exactly like the Arrow table of the
    same schema would (columns, DuckDB types, nested verdict structs)."""
    import duckdb

    from cotforge import schema
    from cotforge.query import sql_identifier, sql_type

    for name in ("SAMPLE_SCHEMA", "PROMPT_SCHEMA", "QUARANTINE_SCHEMA", "REVIEW_SCHEMA", "METRIC_SCHEMA",
                 "VOTE_SCHEMA"):
        arrow_schema = getattr(schema, name)
        con = duckdb.connect()
        con.register("stored", arrow_schema.empty_table())
        columns = ", ".join(f"NULL::{sql_type(f.type)} AS {sql_identifier(f.name)}" for f in arrow_schema)
        typed = con.execute(f"DESCRIBE SELECT * FROM (SELECT {columns}) WHERE false").fetchall()
        assert typed == con.execute("DESCRIBE SELECT * FROM stored").fetchall(), name


def test_sql_type_refuses_a_type_it_does_not_know():
    import pyarrow as pa

    from cotforge.query import sql_type

    assert sql_type(pa.list_(pa.struct([("a b", pa.int32())]))) == 'STRUCT("a b" INTEGER)[]'
    with pytest.raises(TypeError, match="dictionary"):
        sql_type(pa.dictionary(pa.int8(), pa.string()))


@pytest.mark.process
def test_in_process_runner_shows_what_the_process_shows(tmp_path):
    """Status, stdout and stderr of the in-process runner equal the subprocess's, for a success, a
    usage error (click's exit 2), a bad row and an SQL error (one line each)."""
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"\n')
    cotforge_in_process("filter", data, "--out", tmp_path / "run", "--checks", "format", "--jobs", "0", check=True)
    cases = {
        "usage error": (2, ["filter", data, "--no-such-option"]),
        "bad row": (1, ["filter", tmp_path / "bad.jsonl", "--out", tmp_path / "bad-run", "--checks", "format"]),
        "bad sql": (1, ["query", tmp_path / "run", "SELEC 1"]),
        "query": (0, ["query", tmp_path / "run", "SELECT id, accepted FROM samples ORDER BY id", "--format", "json"]),
    }
    for name, (status, args) in cases.items():
        real, here = cotforge(*args), cotforge_in_process(*args)
        assert real.returncode == status, (name, real.stderr)
        assert (here.returncode, here.stdout, here.stderr) == (real.returncode, real.stdout, real.stderr), name
        if status == 1:
            assert len(real.stderr.strip().splitlines()) == 1, (name, real.stderr)
    assert json.loads(cotforge_in_process(*cases["query"][1]).stdout) == [{"id": "a", "accepted": True},
                                                                          {"id": "b", "accepted": False}]


def test_in_process_runner_shows_warnings_logs_and_file_descriptor_output(tmp_path, monkeypatch):
    """What a process would print on its stderr reaches the runner's stderr even where pytest would
    otherwise take it: a warning, a log record with no handler configured, a write to file descriptor 2."""
    import logging
    import os
    import warnings

    import typer

    import cotforge.cli

    extra = typer.Typer()

    @extra.callback()
    def options() -> None:
        pass

    @extra.command()
    def noisy() -> None:
        warnings.warn("a warning", UserWarning)
        logging.getLogger("somewhere").warning("a log record")
        os.write(2, b"raw bytes on fd 2\n")
        print("out")

    monkeypatch.setattr(cotforge.cli, "app", extra)
    result = cotforge_in_process("noisy")
    assert result.returncode == 0 and result.stdout == "out\n"
    assert "UserWarning: a warning" in result.stderr
    assert "a log record" in result.stderr
    assert "raw bytes on fd 2" in result.stderr
