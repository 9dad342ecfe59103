"""What a resumed generate run knows from its committed samples, read in seconds at any run size.

A resume rebuilds every prompt's state from the keys of its committed samples (prompt id, sample
index, round, verdict). A run of 1M prompts at k=4 commits ~16K shards of 256; opening each one costs
~2 ms of CPU (footer, column chunks), so reading the keys shard by shard would take over 30 s before
the first request. So the scheduler also writes the keys of every `INDEX_EVERY` consecutive shards
into one file, `resume/keys-FIRST-LAST.parquet` (atomic, like every file of the run), and a resume
reads those files plus the few shards after the last one.

The index is derived data: a file counts only when it covers a run of shards that starts where the
covered prefix ends and whose shards all exist (committed shards are never rewritten, and
`--overwrite` clears the whole folder, index included). A missing, damaged or out-of-line file is
ignored, and its shards are read themselves; a run written before the index resumes that way too.
The `resume/` folder is not a table: `query`, `view`, stats and exports read `samples/` only.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cotforge.io.atomic import atomic_write_table
from cotforge.io.rundir import RunDir

INDEX_EVERY = 256  # shards per index file
KEYS = pa.schema([("prompt_id", pa.string()), ("sample_idx", pa.int32()), ("round", pa.int32()),
                  ("accepted", pa.bool_())])
FOLDER = "resume"


def _index_path(run: RunDir, first: int, last: int) -> Path:
    return run.path / FOLDER / f"keys-{first:06d}-{last:06d}.parquet"


def _shard_index(path: Path) -> int:
    return int(path.stem.split("-")[1])


def read_committed_keys(run: RunDir) -> tuple[pa.Table, KeyIndex]:
    """(the keys of every committed sample, the index writer to record the next shards with).
    `ParquetFile.read`, not `pq.read_table`: the latter imports pyarrow.dataset and pandas (~2 s)."""
    shards = {_shard_index(s): s for s in run.shards("samples")}
    parts, covered = [], 0
    for path in sorted((run.path / FOLDER).glob("keys-*.parquet")):
        first, last = (int(x) for x in path.stem.split("-")[1:3])
        if first != covered or not all(i in shards for i in range(first, last + 1)):
            continue  # stale or out of line: those shards are read one by one below
        try:
            keys = pq.ParquetFile(path).read().cast(KEYS)
        except (OSError, pa.ArrowException):
            continue  # damaged
        parts.append(keys)
        covered = last + 1
    tail = {i: pq.ParquetFile(shards[i]).read(columns=KEYS.names).cast(KEYS) for i in sorted(shards) if i >= covered}
    index = KeyIndex(run, covered, list(tail.values()) if list(tail) == list(range(covered, covered + len(tail)))
                     else [])
    tables = parts + list(tail.values())
    return (pa.concat_tables(tables) if tables else KEYS.empty_table()), index


class KeyIndex:
    """Collects the keys of each shard as it is committed; writes an index file every `INDEX_EVERY`."""

    def __init__(self, run: RunDir, first: int, pending: list[pa.Table]):
        self.run = run
        self._first = first  # the first shard not in an index file
        self._pending = pending  # keys of shards first, first + 1, ... (consecutive)

    def record(self, index: int, rows: list[dict]) -> None:
        """Shard `index` was just committed with `rows`."""
        self.record_table(index, pa.Table.from_pylist([{k: row[k] for k in KEYS.names} for row in rows], KEYS))

    def record_table(self, index: int, table: pa.Table) -> None:
        """Shard `index` was just committed as `table` (any table with the KEYS columns)."""
        if index != self._first + len(self._pending):  # not the next shard in line: start a new run of them
            self._first, self._pending = index, []
        self._pending.append(table.select(KEYS.names).cast(KEYS))
        if len(self._pending) >= INDEX_EVERY:
            atomic_write_table(_index_path(self.run, self._first, index), pa.concat_tables(self._pending))
            self._first, self._pending = index + 1, []
