"""Human review: accept / reject / edit decisions on samples, kept in the run's `reviews` table.

```
RUN/reviews/part-000000.parquet   one decision per file (seq = the file's number), append-only
```
Each decision is published with a no-replace hard link (io/atomic.py), so two reviewers writing at
once never overwrite each other: the loser takes the next number. The latest decision per sample
(highest `seq`) counts, and it is final: `reject` drops the sample downstream whatever its checks
said, `accept` keeps it, `edit` keeps it with the edited reasoning/summary (the sample's own text
stays in `samples`). `cotforge query` applies them in its `accepted` / `rejected` views, which
`export` and `mix` read.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import threading

from cotforge.io.atomic import atomic_create_table
from cotforge.errors import CotforgeError
from cotforge.io.lock import FolderLock
from cotforge.io.rundir import RunDir
from cotforge.schema import REVIEW_SCHEMA, to_table

DECISIONS = ("accept", "reject", "edit")
TABLE = "reviews"
_write_lock = threading.Lock()  # one writer per process at a time; other processes: see the hard link


def default_reviewer() -> str:
    try:
        return os.environ.get("COTFORGE_REVIEWER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid (containers)
        return "unknown"


def append_review(run_path, sample_id: str, decision: str, note: str = "", reasoning: str | None = None,
                  summary: str | None = None, reviewer: str | None = None) -> dict:
    """Record one decision; returns the row written."""
    if decision not in DECISIONS:
        raise CotforgeError(f"review decision {decision!r}: choose one of {', '.join(DECISIONS)}")
    if decision != "edit" and (reasoning is not None or summary is not None):
        raise CotforgeError("review: edited text goes with decision 'edit' only")
    if decision == "edit" and reasoning is None and summary is None:
        raise CotforgeError("review: an edit needs the edited reasoning or summary")
    run = RunDir(run_path)
    run.manifest()  # a clear error for a folder that is not a run
    row = {"sample_id": sample_id, "decision": decision, "note": note or None, "reasoning": reasoning,
           "summary": summary, "reviewer": reviewer or default_reviewer(),
           "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    # Under the run's writer lock, held for this one file: a writer that would clear the folder
    # (--overwrite) cannot start while a decision is being written, and one that holds the folder (a run
    # still being written, or cleared) makes the review one clear line instead of a file it erases.
    with _write_lock, FolderLock.acquire(run.path, "review"):
        seq = run.next_shard_index(TABLE)
        while True:
            row["seq"] = seq
            if atomic_create_table(run.shard_path(TABLE, seq), to_table([row], REVIEW_SCHEMA)):
                return row
            seq += 1  # another process published this number first


def has_reviews(run_path) -> bool:
    return bool(RunDir(run_path).shards(TABLE))
