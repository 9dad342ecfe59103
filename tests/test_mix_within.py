"""mix's within-prompt near-duplicate pass at a size where its sketches outgrow DuckDB's memory limit.

One ORDER BY over every sketch failed at 1M samples under mix's default 256MB ("failed to pin block",
`python benchmarks/mix_scale.py`); the same failure shows here at 300K one-kilobyte sketches under
64MB (checked by hand with the single query: OutOfMemoryException), so the test needs no million rows."""

from __future__ import annotations

from itertools import groupby

import duckdb
import pytest

from cotforge.mix.within import _sketches_by_prompt, memory_limit_bytes

ROWS = 300_000
ORDER = "_length, _rand"


@pytest.fixture(scope="module")
def sketches(tmp_path_factory):
    """An on-disk database (as mix's work folder is) holding `_sigs` as `_signatures` makes it:
    ~300 MB of sketches, ~3 rows per prompt, under a 64MB limit."""
    con = duckdb.connect(str(tmp_path_factory.mktemp("within") / "work.duckdb"))
    con.execute("SET memory_limit='64MB'; SET threads=2; SET preserve_insertion_order=false")
    con.execute(f"""CREATE TABLE _sigs AS SELECT hash(i) AS _fkey, i AS _frn, 's' || i AS id,
                        'p' || (i * 7919 % 100003) AS prompt_id, (i * 31 % 97)::BIGINT AS _length,
                        hash(i * 3) AS _rand, hash(i * 5) AS _key, repeat(chr((65 + i % 26)::INTEGER), 1024)::BLOB AS _sig
                    FROM range({ROWS}) t(i)""")
    yield con
    con.close()


def test_sketches_beyond_the_memory_limit_come_back_whole_grouped_and_in_order(sketches):
    rows = [row for batch in _sketches_by_prompt(sketches, ORDER) for row in batch.to_pylist()]
    assert len(rows) == ROWS and len({row["id"] for row in rows}) == ROWS  # each sketch once
    assert all(len(row["_sig"]) == 1024 for row in rows)
    detail = {row[0]: row[1:] for row in sketches.execute("SELECT id, _length, _rand, _fkey, _frn FROM _sigs").fetchall()}
    seen = set()
    for prompt, group in groupby(rows, key=lambda row: row["prompt_id"]):
        assert prompt not in seen, f"{prompt}'s rows are split"  # a prompt's rows come together
        seen.add(prompt)
        keys = [detail[row["id"]] for row in group]
        assert keys == sorted(keys)  # ... in the source's select order
    assert len(seen) == 100003


def test_memory_limit_is_read_in_bytes():
    con = duckdb.connect()  # DuckDB shows these as '244.1 MiB', '3.7 GiB', '97.6 KiB'
    for setting, expected in (("256MB", 256e6), ("4GB", 4e9), ("100KB", 1e5)):
        con.execute(f"SET memory_limit='{setting}'")
        assert abs(memory_limit_bytes(con) - expected) / expected < 0.01, setting
