"""The judge's lines of a run's funnel: judged, yes, no, unparsed, and the calls the rules saved."""

from __future__ import annotations

from pathlib import Path

from cotforge.checks.base import DECIDED_BY_RULE, NO_REFERENCE, REJECTED_BY_RULES, UNPARSED
from cotforge.query import connect


def judge_funnel(run_path: str | Path, names: list[str], session: dict | None = None) -> dict:
    """Per judge name: counts from the run's committed verdicts, plus this session's calls and cache hits."""
    con = connect(run_path)
    out = {}
    for name in names:
        row = con.execute("""
            SELECT count(*) FILTER (WHERE score = 1), count(*) FILTER (WHERE score = 0),
                   count(*) FILTER (WHERE code = ?), count(*) FILTER (WHERE code = ?),
                   count(*) FILTER (WHERE code = ?), count(*) FILTER (WHERE code = ?)
            FROM verdicts WHERE "check" = ?""",
            [UNPARSED, DECIDED_BY_RULE, REJECTED_BY_RULES, NO_REFERENCE, name]).fetchone()
        yes, no, unparsed, by_answer, by_rules, not_applicable = row
        out[name] = {"yes": yes, "no": no, "unparsed": unparsed, "saved_by_answer": by_answer,
                     "saved_by_rules": by_rules, "not_applicable": not_applicable,
                     **{f"session_{k}": v for k, v in (session or {}).get(name, {}).items()
                        if k in ("calls", "cache_hits", "engine_batches")}}
    return out


def format_judge_funnel(funnel: dict) -> str:
    lines = []
    for name, c in funnel.items():
        lines.append(f"  {name}: yes {c['yes']}, no {c['no']}, judge unparsed {c['unparsed']}; calls saved by "
                     f"rules: {c['saved_by_answer']} (answer check decided) + {c['saved_by_rules']} (already "
                     f"rejected); no reference/rubric {c['not_applicable']}")
        if "session_calls" in c or "session_cache_hits" in c:
            lines.append(f"  {name} this session: {c.get('session_calls', 0)} model calls in "
                         f"{c.get('session_engine_batches', 0)} engine batches, {c.get('session_cache_hits', 0)} "
                         f"from the verdict cache")
    return "\n".join(lines)
