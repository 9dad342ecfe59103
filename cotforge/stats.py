"""Counts and the funnel of a run, computed from its committed shards."""

from __future__ import annotations

from pathlib import Path

from cotforge.query import connect


def run_counts(run_path: str | Path, check_order: list[str] | None = None) -> dict:
    """rows read = accepted + rejected + quarantined; per-check rejections; sequential funnel."""
    con = connect(run_path)
    accepted, rejected, tokens = con.execute(
        "SELECT count(*) FILTER (WHERE accepted), count(*) FILTER (WHERE NOT accepted), "
        "coalesce(sum(completion_tokens), 0) FROM samples").fetchone()
    quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()[0]
    by_check = dict(con.execute(
        'SELECT "check", count(*) FROM verdicts WHERE NOT passed GROUP BY "check"').fetchall())
    first_fail = dict(con.execute("""
        SELECT first_check, count(*) FROM (
          SELECT list_filter(verdicts, lambda v: NOT v.passed)[1].check AS first_check FROM samples WHERE NOT accepted)
        GROUP BY first_check""").fetchall())
    # Rows rejected because their item killed a fresh worker again: not a judgement of the text.
    worker_died = con.execute("SELECT count(DISTINCT id) FROM verdicts WHERE NOT passed AND "
                              "starts_with(reason, 'worker died')").fetchone()[0]
    top = con.execute("""
        SELECT "check", count(*) AS n, mode(reason) FROM verdicts WHERE NOT passed
        GROUP BY "check" ORDER BY n DESC, "check" LIMIT 1""").fetchone()
    order = check_order or sorted(by_check)
    remaining = accepted + rejected
    funnel = [{"stage": "rows in", "rows": accepted + rejected + quarantined},
              {"stage": "quarantined", "rows": quarantined}]
    for name in order:
        dropped = first_fail.get(name, 0)
        remaining -= dropped
        funnel.append({"stage": name, "rejected": dropped, "rejected_total": by_check.get(name, 0),
                       "remaining": remaining})
    return {"rows_read": accepted + rejected + quarantined, "accepted": accepted, "rejected": rejected,
            "quarantined": quarantined, "completion_tokens": int(tokens), "rejected_by_check": by_check,
            "rejected_worker_died": worker_died,
            "top_rejection": {"check": top[0], "rows": top[1], "reason": top[2]} if top else None,
            "funnel": funnel}


def top_rejection(run_path: str | Path) -> dict | None:
    """The check that rejected the most rows, with its most common reason."""
    return run_counts(run_path)["top_rejection"]


def format_summary(counts: dict) -> str:
    lines = [(f"rows read {counts['rows_read']}: accepted {counts['accepted']}, rejected {counts['rejected']}, "
             f"quarantined {counts['quarantined']}")]
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
