"""Per-shard tallies of a run's end-of-run statistics, kept at commit, so the end reads a few files.

A generate run's summary (counts, funnel, token accounting) used to be DuckDB over every committed
shard: at 1M prompts, 15,625 shards, a query per figure, >15 min and 1.8 GB on the head node. Each
shard's share is small (a handful of groups: accepted / first failed check / finish reason, failed
verdicts by check and reason, the verification stage's missing fields), and shards are never
rewritten, so the scheduler tallies each shard as it commits it (`TallyIndex.record`) and writes the
tallies of every `FLUSH_EVERY` shards into `resume/tally-TABLE-FIRST-LAST.parquet` (atomic, like
every file of the run). The end (`TallyIndex.totals`) sums the tallies.

A tally row names the shard file it was computed from by index, size, mtime and inode; it counts only
while that file is there unchanged (a shard removed, or rewritten after a kill lost it, makes its
tallies void, never wrong). Shards without a valid tally (a run written before tallies, a session
killed before it flushed) are tallied from their file at the end and flushed then, so that only
happens once. The tally of a shard is computed by one function (`tally_samples`) from the shard as
written, whether at commit or from its file; tests check the sums against the DuckDB scan
(`stats.sql_totals`, `accounting.token_accounting`).

Sample ids are unique within a generate run (prompt id and sample index), so samples with a
`worker_died` verdict counted per shard add up to the scan's count of distinct ids.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cotforge.checks.base import FAILED, NOT_APPLICABLE, PASSED, VERIFIED, WORKER_DIED
from cotforge.io.atomic import atomic_write_table
from cotforge.io.rundir import RunDir
from cotforge.stats import Totals, missing_of

FOLDER = "resume"
FLUSH_EVERY = 256  # shards of a table per tally file
SAMPLES, QUARANTINE, CANCELLED = "samples", "quarantine", "cancelled"
TABLES = (SAMPLES, QUARANTINE, CANCELLED)
# One row per group of a shard; `part` says which columns are its key:
#   sample:      accepted, first_check, finish_reason -> rows, tokens (every judged sample)
#   failed:      check, reason -> rows (failed verdicts)
#   unverified:  missing, passed -> rows (the verification stage's verdicts that did not pass)
#   worker_died: rows (samples with a failed worker_died verdict)
#   cancelled:   rows, tokens;  quarantined: rows
TALLY = pa.schema([
    ("table", pa.string()), ("shard", pa.int32()), ("bytes", pa.int64()), ("mtime_ns", pa.int64()),
    ("inode", pa.int64()),
    ("part", pa.string()), ("accepted", pa.bool_()), ("first_check", pa.string()), ("finish_reason", pa.string()),
    ("check", pa.string()), ("reason", pa.string()), ("missing", pa.string()), ("passed", pa.bool_()),
    ("rows", pa.int64()), ("tokens", pa.int64())])


COLUMNS = {SAMPLES: ["id", "accepted", "finish_reason", "completion_tokens", "verdicts"],  # what a tally reads
           CANCELLED: ["completion_tokens"], QUARANTINE: ["reason"]}


def _column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


def _status(verdict: dict) -> str:
    """The stored status, or the query view's rule for verdicts written before statuses."""
    if verdict.get("status") is not None:
        return verdict["status"]
    if verdict["passed"] is False:
        return FAILED
    return NOT_APPLICABLE if verdict.get("score") is None else PASSED


def tally_samples(table: pa.Table) -> list[dict]:
    """A samples shard's groups, as `stats.sql_totals` and `token_accounting` count its rows."""
    sample: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    failed: dict[tuple, int] = defaultdict(int)
    unverified: dict[tuple, int] = defaultdict(int)
    worker_died = set()
    for sample_id, accepted, finish, tokens, verdicts in zip(
            _column(table, "id"), _column(table, "accepted"), _column(table, "finish_reason"),
            _column(table, "completion_tokens"), _column(table, "verdicts")):
        first = None
        for verdict in verdicts or ():
            if verdict["passed"] is False:  # a null `passed` neither fails nor passes (SQL's NOT NULL)
                if first is None:
                    first = verdict["check"]
                failed[verdict["check"], verdict.get("reason")] += 1
                if verdict.get("code") == WORKER_DIED:
                    worker_died.add(sample_id)
            if verdict["check"] == VERIFIED and _status(verdict) != PASSED:
                unverified[missing_of(verdict.get("code")), verdict["passed"]] += 1
        group = sample[accepted, first, finish]
        group[0] += 1
        group[1] += tokens or 0
    rows = [{"part": "sample", "accepted": a, "first_check": c, "finish_reason": f, "rows": n, "tokens": t}
            for (a, c, f), (n, t) in sample.items()]
    rows += [{"part": "failed", "check": c, "reason": r, "rows": n} for (c, r), n in failed.items()]
    rows += [{"part": "unverified", "missing": m, "passed": p, "rows": n} for (m, p), n in unverified.items()]
    rows.append({"part": "worker_died", "rows": len(worker_died)})
    return rows


def tally_of(name: str, table: pa.Table) -> list[dict]:
    """The groups of one shard of table `name`."""
    if name == SAMPLES:
        return tally_samples(table)
    if name == CANCELLED:
        tokens = pc.sum(pc.fill_null(table.column("completion_tokens"), 0)).as_py() if table.num_rows else 0
        return [{"part": "cancelled", "rows": table.num_rows, "tokens": tokens or 0}]
    return [{"part": "quarantined", "rows": table.num_rows}]


def _identity(path: Path) -> tuple[int, int, int]:
    """What tells a shard file from one rewritten at its index (a rename gives it a new inode)."""
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def _shard_index(path: Path) -> int:
    return int(path.stem.split("-")[1])


class TallyIndex:
    """Tallies of committed shards: recorded at commit, flushed every `FLUSH_EVERY` shards of a table."""

    def __init__(self, run: RunDir):
        self.run = run
        self._pending: dict[str, list[pa.Table]] = {name: [] for name in TABLES}
        self._pending_shards: dict[str, list[int]] = {name: [] for name in TABLES}

    def record(self, name: str, index: int, table: pa.Table) -> None:
        """Shard `index` of table `name` was just committed as `table`."""
        self._add(name, index, table, self.run.shard_path(name, index))

    def _add(self, name: str, index: int, table: pa.Table, path: Path) -> pa.Table:
        size, mtime, inode = _identity(path)
        tally = pa.Table.from_pylist([{"table": name, "shard": index, "bytes": size, "mtime_ns": mtime,
                                       "inode": inode, **group}
                                      for group in tally_of(name, table)], TALLY)
        self._pending[name].append(tally)
        self._pending_shards[name].append(index)
        if len(self._pending_shards[name]) >= FLUSH_EVERY:
            self._flush(name)
        return tally

    def _flush(self, name: str) -> None:
        shards = self._pending_shards[name]
        if not shards:
            return
        path = self.run.path / FOLDER / f"tally-{name}-{min(shards):06d}-{max(shards):06d}.parquet"
        copy = 1
        while path.exists():  # another file of the same span (shards rewritten since): keep both
            copy += 1
            path = path.with_name(f"tally-{name}-{min(shards):06d}-{max(shards):06d}-{copy}.parquet")
        atomic_write_table(path, pa.concat_tables(self._pending[name]))
        self._pending[name], self._pending_shards[name] = [], []

    def flush(self) -> None:
        for name in TABLES:
            self._flush(name)

    # -- the end -----------------------------------------------------------------------------------
    def collect(self) -> pa.Table:
        """The tallies of every committed shard: valid files, this session's, and (tallied now, then
        flushed) the shards that had none."""
        current = {name: {_shard_index(p): p for p in self.run.shards(name)} for name in TABLES}
        identity = {name: {i: _identity(p) for i, p in shards.items()} for name, shards in current.items()}
        known: dict[str, set[int]] = {name: set() for name in TABLES}
        parts = []

        def take(table: pa.Table) -> None:
            """The rows of `table` whose shard is there unchanged and not yet taken."""
            stamp = ["table", "shard", "bytes", "mtime_ns", "inode"]
            stamps = table.select(stamp).group_by(stamp).aggregate([])
            valid: dict[str, list[int]] = defaultdict(list)
            for name, shard, *file in zip(*(stamps.column(c).to_pylist() for c in stamp)):
                if name in identity and identity[name].get(shard) == tuple(file) and shard not in known[name]:
                    valid[name].append(shard)
            for name, shards in valid.items():
                known[name].update(shards)
                mask = pc.and_(pc.equal(table.column("table"), name),
                               pc.is_in(table.column("shard"), value_set=pa.array(shards, pa.int32())))
                parts.append(table.filter(mask))

        for name in TABLES:
            for pending in self._pending[name]:
                take(pending)
        for path in sorted((self.run.path / FOLDER).glob("tally-*.parquet")):
            try:
                table = pq.ParquetFile(path).read().cast(TALLY)
            except (OSError, pa.ArrowException, ValueError):
                continue  # damaged: its shards are tallied from their files below
            take(table)
        for name in TABLES:
            for index in sorted(set(current[name]) - known[name]):
                path = current[name][index]
                file = pq.ParquetFile(path)
                table = file.read(columns=[c for c in COLUMNS[name] if c in file.schema_arrow.names])
                parts.append(self._add(name, index, table, path))
        self.flush()
        return pa.concat_tables(parts) if parts else TALLY.empty_table()

    def totals(self) -> tuple[Totals, list[tuple], tuple[int, int]]:
        """(the run's `Totals`, token accounting's sample groups, cancelled (samples, tokens))."""
        tallies = self.collect()
        part = tallies.column("part")

        def groups(name: str, keys: list[str], sums: list[str]) -> list[tuple]:
            rows = tallies.filter(pc.equal(part, name))
            grouped = rows.group_by(keys, use_threads=False).aggregate([(s, "sum") for s in sums])
            return list(zip(*(grouped.column(c).to_pylist() for c in keys + [f"{s}_sum" for s in sums])))

        sample = groups("sample", ["accepted", "first_check", "finish_reason"], ["rows", "tokens"])
        totals = Totals()
        for accepted, first, _, rows, tokens in sample:
            totals.tokens += tokens or 0
            if accepted is True:
                totals.accepted += rows
            elif accepted is False:
                totals.rejected += rows
                totals.first_fail[first] = totals.first_fail.get(first, 0) + rows
        failed = groups("failed", ["check", "reason"], ["rows"])
        for check, _, rows in failed:
            totals.by_check[check] = totals.by_check.get(check, 0) + rows
        totals.by_check = dict(sorted(totals.by_check.items(), key=lambda kv: (kv[0] is None, kv[0] or "")))
        if totals.by_check:
            worst = min(totals.by_check.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or ""))[0]
            reasons = [(reason, rows) for check, reason, rows in failed if check == worst]
            reason = min(reasons, key=lambda r: (r[0] is None, -r[1], r[0] or ""))[0]
            totals.top = (worst, totals.by_check[worst], reason)
        unverified: dict = defaultdict(lambda: [0, 0])
        for missing, passed, rows in groups("unverified", ["missing", "passed"], ["rows"]):
            counts = unverified[missing]  # a null `passed` counts as neither (SQL's FILTER), the group stays
            if passed is not None:
                counts[0 if passed is False else 1] += rows
        totals.unverified = [(m, r, a) for m, (r, a) in sorted(unverified.items(),
                                                               key=lambda kv: (kv[0] is None, kv[0] or ""))]
        totals.worker_died = sum(rows for (rows,) in groups("worker_died", [], ["rows"]) if rows)
        totals.quarantined = sum(rows for (rows,) in groups("quarantined", [], ["rows"]) if rows)
        cancelled = groups("cancelled", [], ["rows", "tokens"])
        cancelled = (cancelled[0][0] or 0, cancelled[0][1] or 0) if cancelled else (0, 0)
        return totals, [(a, c, f, n, t) for a, c, f, n, t in sample], cancelled
