"""`cotforge select RUN --pass-rate LO:HI --out PROMPTS.jsonl`: the prompts of a run (eval or generate)
whose pass rate lies in [LO, HI], as a prompt file for the next generate, eval or RL run.

A prompt's pass rate is accepted / judged samples in the run (the chain's verdicts); prompts the run
could not verify (no gold, no tests) or never sampled are not selected. Each row is the prompt as
the run read it, its other input columns back at the top level, plus `pass_rate` and `samples`.
Anchors: open-r1's compute_pass_rate keeps 0.1 < rate < 0.9; DAPO drops all-right and all-wrong
groups (`--pass-rate 0.01:0.99` with n samples keeps 0 < c < n when n < 100).
"""

from __future__ import annotations

import json
from pathlib import Path

from cotforge.io.atomic import atomic_write_bytes
from cotforge.errors import CotforgeError
from cotforge.io.rundir import source_marks

PROMPT_COLUMNS = ("id", "prompt", "messages", "gold", "answer_type", "domain", "language", "source", "tests")


def parse_range(text: str | tuple | list, what: str = "--pass-rate") -> tuple[float, float]:
    """`0.1:0.9` (or a pair) -> (0.1, 0.9), both in [0, 1], low <= high."""
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = str(text).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        low, high = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise CotforgeError(f"{what} {text!r}: give LO:HI, e.g. 0.1:0.9") from None
    if not (0 <= low <= high <= 1):
        raise CotforgeError(f"{what} {text!r}: needs 0 <= LO <= HI <= 1")
    return low, high


def pass_rates(run: str | Path) -> dict[str, tuple[float, int]]:
    """prompt id -> (pass rate, samples) over the run's verifiable prompts."""
    from cotforge.evaluation.run import load_results

    return {r.prompt_id: (r.pass_rate, r.n) for r in load_results(run, votes=False)}


def select_prompts(run: str | Path, pass_rate: str | tuple, out: str | Path, allow_partial: bool = False) -> dict:
    """Write the selected prompts to `out` (JSONL, atomically); returns counts."""
    from cotforge.query import connect

    low, high = parse_range(pass_rate)
    source_marks([run], "select", allow_partial)
    rates = pass_rates(run)
    con = connect(run)
    cursor = con.execute("SELECT * FROM prompts ORDER BY id")
    names = [d[0] for d in cursor.description]
    lines = []
    for values in cursor.fetchall():
        row = dict(zip(names, values))
        if row["id"] not in rates:
            continue
        rate, samples = rates[row["id"]]
        if not low <= rate <= high:
            continue
        out_row = {key: row.get(key) for key in PROMPT_COLUMNS if row.get(key) is not None}
        if isinstance(row.get("metadata"), str):
            try:
                out_row.update({k: v for k, v in json.loads(row["metadata"]).items() if k not in out_row})
            except ValueError:
                out_row["metadata"] = row["metadata"]
        out_row.update(pass_rate=rate, samples=samples)
        lines.append(json.dumps(out_row, ensure_ascii=False, default=str))
    atomic_write_bytes(Path(out), ("\n".join(lines) + ("\n" if lines else "")).encode())
    return {"selected": len(lines), "prompts": len(rates), "low": low, "high": high, "out": str(out)}
