"""Counts and the funnel of a run, computed from its committed shards."""

from __future__ import annotations

from pathlib import Path

from cotforge.checks.base import MISSING, NOT_MATH, PASSED, VERIFIED, WORKER_DIED
from cotforge.query import connect


def run_counts(run_path: str | Path, check_order: list[str] | None = None, con=None) -> dict:
    """rows read = accepted + rejected + quarantined; per-check rejections; sequential funnel.
    `con`: a `query.connect` connection to the run to reuse (its views are built once)."""
    con = con if con is not None else connect(run_path)
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
            "funnel": funnel,
            "unverified": [{"missing": m, "rejected": r, "allowed": a} for m, r, a in unverified]}


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
