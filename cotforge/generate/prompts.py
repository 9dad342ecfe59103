"""A generate run's prompts, read from the run folder a batch at a time, never all held.

The input is normalized once, streaming, into the run's `prompts/part-000000.parquet` (one row group
per `BATCH` rows, published atomically after the id check); every session then reads prompts back
from that shard in order, so a million-prompt input costs the driver the rows it is working on, not
the whole file (`benchmarks/generate_scale.py`). A resumed run reads the shard it wrote, not the input
(whose fingerprint the run folder already checked), so both sessions see the very same rows.

Duplicate ids are found on the written file by Arrow (`value_counts` over the id column, ~12 MB at
1M prompts) rather than a Python set of every id.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cotforge.io.atomic import atomic_write
from cotforge.errors import CotforgeError
from cotforge.io.normalize import Normalizer
from cotforge.io.readers import read_rows
from cotforge.io.rows import chunks, split_bad_rows
from cotforge.io.rundir import RunDir
from cotforge.schema import PROMPT_SCHEMA, QUARANTINE_SCHEMA, to_table

BATCH = 4096  # prompts normalized, written and read back per step


class PromptFile:
    """The run's prompts shard: written from the input on the first session, read back in order."""

    def __init__(self, run: RunDir, source: str | Path, fields: dict | None, bad_rows: str):
        self.path = run.shard_path("prompts", 0)
        if not self.path.exists():
            self._write(run, source, fields, bad_rows)
        self.count = pq.ParquetFile(self.path).metadata.num_rows

    def _write(self, run: RunDir, source: str | Path, fields: dict | None, bad_rows: str) -> None:
        normalize = Normalizer("prompt", fields)
        quarantined: list[dict] = []

        def write(tmp: Path) -> None:
            written = 0
            with pq.ParquetWriter(tmp, PROMPT_SCHEMA, compression="zstd") as writer:
                for raw in chunks(read_rows(source), BATCH):
                    rows, bad = split_bad_rows(raw, normalize, bad_rows)
                    quarantined.extend(bad)
                    writer.write_table(to_table(rows, PROMPT_SCHEMA))
                    written += len(rows)
            if not written:  # nothing to ask: one line, never an empty "complete" run (nothing is committed)
                if quarantined:
                    first = quarantined[0]
                    raise CotforgeError(f"{source}: no usable prompts: all {len(quarantined)} rows are bad (first, "
                                        f"line {first['line']}: field '{first['field']}': {first['reason']})")
                raise CotforgeError(f"{source}: no prompts to generate from (the input is empty)")
            _refuse_duplicate_ids(tmp, source)
            # Bad rows land before the prompts shard: a run with a prompts shard has its quarantine.
            if quarantined:
                run.write_shard("quarantine", 0, to_table(quarantined, QUARANTINE_SCHEMA))

        atomic_write(self.path, write)

    def batches(self, skip: pa.Array | None = None) -> Iterator[list[dict]]:
        """Prompt rows in input order, a row group (`BATCH` rows) at a time, less those whose id is in
        `skip` (prompts done in an earlier session: a row group of only those is not even read)."""
        file = pq.ParquetFile(self.path)
        done = None
        if skip is not None and len(skip):
            done = pc.is_in(file.read(columns=["id"]).column("id"), value_set=skip)
        offset = 0
        for group in range(file.metadata.num_row_groups):
            size = file.metadata.row_group(group).num_rows
            wanted = None if done is None else pc.invert(done.slice(offset, size))
            offset += size
            if wanted is not None and not pc.any(wanted).as_py():
                continue
            table = file.read_row_group(group)
            yield (table if wanted is None else table.filter(wanted)).to_pylist()


def _refuse_duplicate_ids(path: Path, source: str | Path) -> None:
    ids = pq.read_table(path, columns=["id"]).column("id")
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
    if len(repeated):
        first = ids.filter(pc.is_in(ids, value_set=repeated))[0].as_py()  # in input order
        raise CotforgeError(f"{source}: prompt id {first!r} appears twice; ids must be unique")


class FreshPrompts:
    """The prompts not started yet, pulled from the prompts shard as the scheduler asks for them.

    Behaves as the deque the scheduler used to build up front: truthy while a prompt is left,
    `popleft()` / `appendleft()`. Each prompt handed out goes through `start(id, row)` (the scheduler
    keeps its row while working on it); `appendleft` gives one back through `stop(id)`, to be handed
    out again first. Prompts whose id is in `skip` (done in an earlier session) are passed over.
    """

    def __init__(self, prompts: PromptFile, start: Callable[[str, dict], None], stop: Callable[[str], dict],
                 skip: pa.Array | None = None):
        self._batches = prompts.batches(skip)
        self._start, self._stop = start, stop
        self._ready: deque[dict] = deque()  # rows read ahead, not handed out yet

    def __bool__(self) -> bool:
        while not self._ready:
            batch = next(self._batches, None)
            if batch is None:
                return False
            self._ready.extend(batch)
        return True

    def popleft(self) -> str:
        if not self:
            raise IndexError("no prompt left")
        row = self._ready.popleft()
        self._start(row["id"], row)
        return row["id"]

    def appendleft(self, prompt_id: str) -> None:
        self._ready.appendleft(self._stop(prompt_id))
