"""Counts and the funnel of a run, computed from its committed shards."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cotforge.checks.base import MISSING, NOT_MATH, PASSED, VERIFIED, WORKER_DIED


@dataclasses.dataclass
class Totals:
    """What the end-of-run statistics are made of, however they were counted: by DuckDB over every
    shard (`sql_totals`) or from per-shard tallies kept at commit (`cotforge.tally`)."""

    accepted: int = 0
    rejected: int = 0
    tokens: int = 0  # completion tokens of every judged sample (null counts 0)
    quarantined: int = 0
    by_check: dict = dataclasses.field(default_factory=dict)  # check -> failed verdicts
    first_fail: dict = dataclasses.field(default_factory=dict)  # check -> rejected samples it failed first
    unverified: list = dataclasses.field(default_factory=list)  # (missing, rejected, allowed), by missing
    worker_died: int = 0  # samples with a failed `worker_died` verdict
    # The check with the most failed verdicts (ties: by name), with its most common reason (ties: the
    # first by sort order; null reasons only where it has no other): deterministic, so both ways agree.
    top: tuple | None = None


def missing_of(code: str | None) -> str | None:
    """The group a verification stage's code falls in: `missing:gold,tests` -> `gold or tests`."""
    if code is None or code == NOT_MATH:
        return code
    return code[len(MISSING):].replace(",", " or ")


def sql_totals(con) -> Totals:
    """DuckDB over every committed shard (`con`: a `query.connect` connection)."""
    accepted, rejected, tokens = con.execute(
        "SELECT count(*) FILTER (WHERE accepted), count(*) FILTER (WHERE NOT accepted), "
        "coalesce(sum(completion_tokens), 0) FROM samples").fetchone()
    quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()[0]
    by_check = dict(con.execute(
        'SELECT "check", count(*) FROM verdicts WHERE NOT passed GROUP BY "check" ORDER BY "check"').fetchall())
    first_fail = dict(con.execute("""
        SELECT first_check, count(*) FROM (
          SELECT list_filter(verdicts, lambda v: NOT v.passed)[1].check AS first_check FROM samples WHERE NOT accepted)
        GROUP BY first_check""").fetchall())
    # The verification stage's codes name what was missing: `missing:gold`, `missing:gold,tests`.
    unverified = con.execute(
        """SELECT CASE WHEN code = ? THEN code ELSE replace(substr(code, ?), ',', ' or ') END AS missing, count(*) FILTER (WHERE NOT passed),
                  count(*) FILTER (WHERE passed) FROM verdicts
           WHERE "check" = ? AND status <> ? GROUP BY missing ORDER BY missing""",
        [NOT_MATH, len(MISSING) + 1, VERIFIED, PASSED]).fetchall()
    # Rows rejected because their item killed a fresh worker again: not a judgement of the text.
    worker_died = con.execute("SELECT count(DISTINCT id) FROM verdicts WHERE NOT passed AND code = ?",
                              [WORKER_DIED]).fetchone()[0]
    top = con.execute("""
        WITH failed AS (SELECT "check", reason, count(*) AS n FROM verdicts WHERE NOT passed GROUP BY ALL),
             worst AS (SELECT "check", sum(n) AS n FROM failed GROUP BY "check" ORDER BY n DESC, "check" LIMIT 1)
        SELECT worst."check", worst.n, (SELECT reason FROM failed WHERE failed."check" = worst."check"
                                        ORDER BY reason IS NULL, n DESC, reason LIMIT 1) FROM worst""").fetchone()
    return Totals(accepted, rejected, int(tokens), quarantined, by_check, first_fail,
                  [tuple(group) for group in unverified], worker_died,
                  (top[0], int(top[1]), top[2]) if top else None)


def counts_of(totals: Totals, check_order: list[str] | None = None) -> dict:
    """rows read = accepted + rejected + quarantined; per-check rejections; sequential funnel."""
    accepted, rejected, quarantined = totals.accepted, totals.rejected, totals.quarantined
    order = check_order or sorted(totals.by_check)
    remaining = accepted + rejected
    funnel = [{"stage": "rows in", "rows": accepted + rejected + quarantined},
              {"stage": "quarantined", "rows": quarantined}]
    for name in order:
        dropped = totals.first_fail.get(name, 0)
        remaining -= dropped
        funnel.append({"stage": name, "rejected": dropped, "rejected_total": totals.by_check.get(name, 0),
                       "remaining": remaining})
    top = totals.top
    return {"rows_read": accepted + rejected + quarantined, "accepted": accepted, "rejected": rejected,
            "quarantined": quarantined, "completion_tokens": totals.tokens, "rejected_by_check": totals.by_check,
            "rejected_worker_died": totals.worker_died,
            "top_rejection": {"check": top[0], "rows": top[1], "reason": top[2]} if top else None,
            "funnel": funnel,
            "unverified": [{"missing": m, "rejected": r, "allowed": a} for m, r, a in totals.unverified]}


def run_counts(run_path: str | Path, check_order: list[str] | None = None, con=None) -> dict:
    """The run's counts and funnel by DuckDB over every shard. `con`: a `query.connect` connection
    to reuse (its views are built once); without one, a connection capped in threads and memory
    (`query.capped`: on a shared head node, a scan of thousands of shards must not take it all)."""
    if con is not None:
        return counts_of(sql_totals(con), check_order)
    from cotforge.query import capped

    with capped(run_path) as own:
        return counts_of(sql_totals(own), check_order)


# Input columns read as each field a verifying check needs (io/normalize.py ALIASES), for the summary.
def _columns(field: str) -> str:
    from cotforge.io.normalize import ALIASES

    return "/".join(ALIASES.get(field, (field,)))


def format_unverified(counts: dict) -> str | None:
    """'unverified 12 (rejected 12): 12 with no gold (no column gold/answer/...; --field gold=COLUMN)'."""
    groups = counts.get("unverified") or []
    if not groups:
        return None
    rejected = sum(g["rejected"] for g in groups)
    allowed = sum(g["allowed"] for g in groups)
    state = f"rejected {rejected}" + (f", accepted {allowed} as allow_unverified says" if allowed else "")
    parts = []
    for group in groups:
        if group["missing"] == NOT_MATH:  # a gold in words that no judge read
            parts.append(f"{group['rejected'] + group['allowed']} with a gold in words, not math "
                         f"(only a judge grades those: add judge to --checks)")
            continue
        fields = group["missing"].split(" or ") if group["missing"] else ["gold"]
        columns = "; ".join(f"no {_columns(f)} column, or map one with --field {f}=COLUMN" for f in fields)
        parts.append(f"{group['rejected'] + group['allowed']} with no {group['missing'] or 'gold'} ({columns})")
    return f"unverified {rejected + allowed} ({state}): " + ", ".join(parts)


def top_rejection(run_path: str | Path) -> dict | None:
    """The check that rejected the most rows, with its most common reason."""
    return run_counts(run_path)["top_rejection"]


def format_summary(counts: dict) -> str:
    lines = [(f"rows read {counts['rows_read']}: accepted {counts['accepted']}, rejected {counts['rejected']}, "
             f"quarantined {counts['quarantined']}")]
    unverified = format_unverified(counts)
    if unverified:
        lines.append(unverified)
    for step in counts["funnel"][2:]:
        lines.append(f"  {step['stage']:<12} rejected {step['rejected']:>8} (fails {step['rejected_total']:>8} "
                     f"in all)  remaining {step['remaining']:>8}")
    top = counts.get("top_rejection")
    if counts["accepted"] == 0 and counts["rejected"] and top:
        lines.append(f"  nothing was accepted: check '{top['check']}' rejected {top['rows']} of "
                     f"{counts['rejected']} rows; its most common reason: {top['reason']}")
    infra = counts.get("infrastructure") or {}
    if infra.get("worker_deaths") or counts.get("rejected_worker_died"):
        lines.append(f"  infrastructure: {infra.get('worker_deaths', 0)} check worker deaths this session, "
                     f"{infra.get('retried', 0)} items retried on a fresh worker; "
                     f"{counts.get('rejected_worker_died', 0)} rows rejected because their item killed a "
                     f"fresh worker again (included above under their check; reason `worker died ...`)")
    if counts.get("judge"):
        from cotforge.judge.funnel import format_judge_funnel

        lines.append(format_judge_funnel(counts["judge"]))
    return "\n".join(lines)
