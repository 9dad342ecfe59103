"""Where a generate run's tokens went: accepted, rejected by each check, stopped early, cancelled.

Read from the run folder, so a resumed run reports its whole history: judged samples from `samples/`
(a rejected one is charged to the first check that failed it; one the engine or cotforge stopped early
is also counted under `stopped_early`, keyed by why it stopped), cancelled samples from `cancelled/`
(siblings cut once their prompt had its accepted samples: never judged, never exported; their token
counts are what the engine reported, 0 where it cannot know). `per_accepted` is all completion tokens
over accepted samples: the figure a run is planned to keep low.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from cotforge.engines.base import REPETITION
from cotforge.io.rundir import RunDir

CANCELLED_TABLE = "cancelled"
CANCELLED_SCHEMA = pa.schema([("prompt_id", pa.string()), ("sample_idx", pa.int64()), ("round", pa.int32()),
                              ("seed", pa.int64()), ("completion_tokens", pa.int64())])
STOPPED_PREFIX = "stopped:"  # finish reason of a sample cotforge's own early stop ended: "stopped:<check>"


def stop_reason(finish_reason: str | None) -> str | None:
    """Why a sample was stopped before its end (None: it was not): `repetition` (the engine's loop
    detection) or the name of the check whose early stop ended it."""
    if finish_reason == REPETITION:
        return REPETITION
    if finish_reason and finish_reason.startswith(STOPPED_PREFIX):
        return finish_reason[len(STOPPED_PREFIX):]
    return None


def token_accounting(run: RunDir, check_order: list[str] | None = None) -> dict:
    accepted = {"samples": 0, "tokens": 0}
    rejected: dict[str, dict] = {}
    stopped: dict[str, dict] = {}
    for shard in run.shards("samples"):
        table = pq.read_table(shard, columns=["accepted", "completion_tokens", "finish_reason", "verdicts"])
        for ok, tokens, finish, verdicts in zip(*(table.column(c).to_pylist() for c in table.column_names)):
            tokens = tokens or 0
            if ok:
                accepted["samples"] += 1
                accepted["tokens"] += tokens
                continue
            check = next((v["check"] for v in verdicts or [] if not v["passed"]), "unknown")
            bucket = rejected.setdefault(check, {"samples": 0, "tokens": 0})
            bucket["samples"] += 1
            bucket["tokens"] += tokens
            if (why := stop_reason(finish)) is not None:
                bucket = stopped.setdefault(why, {"samples": 0, "tokens": 0})
                bucket["samples"] += 1
                bucket["tokens"] += tokens
    cancelled = {"samples": 0, "tokens": 0}
    for shard in run.shards(CANCELLED_TABLE):
        table = pq.read_table(shard, columns=["completion_tokens"])
        cancelled["samples"] += table.num_rows
        cancelled["tokens"] += sum(t or 0 for t in table.column("completion_tokens").to_pylist())
    order = {name: i for i, name in enumerate(check_order or [])}
    rejected = dict(sorted(rejected.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    total = accepted["tokens"] + sum(b["tokens"] for b in rejected.values()) + cancelled["tokens"]
    return {"total": total, "accepted": accepted, "rejected": rejected, "stopped_early": stopped,
            "cancelled": cancelled,
            "per_accepted": round(total / accepted["samples"], 1) if accepted["samples"] else None}


def format_accounting(tokens: dict) -> str:
    """Two lines for the summary a user reads."""
    parts = [f"accepted {tokens['accepted']['tokens']}"]
    parts += [f"rejected by {check} {b['tokens']}" for check, b in tokens["rejected"].items()]
    parts.append(f"cancelled {tokens['cancelled']['tokens']} ({tokens['cancelled']['samples']} samples)")
    stopped = ", ".join(f"{why} {b['samples']} samples / {b['tokens']} tokens"
                        for why, b in tokens["stopped_early"].items()) or "none"
    per = tokens["per_accepted"]
    return (f"tokens {tokens['total']}: {', '.join(parts)}; per accepted sample "
            f"{per if per is not None else 'n/a'}\nstopped early: {stopped}")
