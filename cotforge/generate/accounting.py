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


def token_accounting(run: RunDir, check_order: list[str] | None = None, con=None) -> dict:
    """One DuckDB aggregate over the committed shards (`con`: a `query.connect` connection to reuse),
    grouped by verdict, first failed check and finish reason: Python sees a handful of groups, not
    every row (a row loop took minutes at 1M prompts' 4M samples). A generate run's end reads the
    same groups from its per-shard tallies instead (`cotforge.tally`)."""
    from cotforge.query import connect, sql_literal

    con = con if con is not None else connect(run.path)
    groups = con.execute("""
        SELECT accepted, list_filter(verdicts, lambda v: NOT v.passed)[1].check AS first_check, finish_reason,
               count(*), sum(coalesce(completion_tokens, 0)) FROM samples GROUP BY ALL""").fetchall()
    cancelled = (0, 0)
    shards = run.shards(CANCELLED_TABLE)
    if shards:
        files = ", ".join(sql_literal(shard) for shard in shards)
        cancelled = con.execute(f"SELECT count(*), sum(coalesce(completion_tokens, 0)) "
                                f"FROM read_parquet([{files}])").fetchone()
    return accounting_of(groups, cancelled, check_order)


def accounting_of(groups, cancelled: tuple, check_order: list[str] | None = None) -> dict:
    """The accounting from (accepted, first failed check, finish reason, samples, tokens) groups and
    the cancelled samples' (samples, tokens)."""
    accepted = {"samples": 0, "tokens": 0}
    rejected: dict[str, dict] = {}
    stopped: dict[str, dict] = {}
    for ok, check, finish, samples, tokens in groups:
        tokens = int(tokens or 0)
        if ok:
            accepted["samples"] += samples
            accepted["tokens"] += tokens
            continue
        bucket = rejected.setdefault(check or "unknown", {"samples": 0, "tokens": 0})
        bucket["samples"] += samples
        bucket["tokens"] += tokens
        if (why := stop_reason(finish)) is not None:
            bucket = stopped.setdefault(why, {"samples": 0, "tokens": 0})
            bucket["samples"] += samples
            bucket["tokens"] += tokens
    stopped = dict(sorted(stopped.items()))
    cancelled = {"samples": int(cancelled[0] or 0), "tokens": int(cancelled[1] or 0)}
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
