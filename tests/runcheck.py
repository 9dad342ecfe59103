"""What a resumed or disturbed generate run must share with an undisturbed one (issue 18's guarantee).

Sample i of a prompt is always generated with seed(prompt) + i, so a sample both runs hold is the same
sample. Timing decides only which siblings of a prompt that has its accepted samples got cancelled (or
were never started) before they ended: so the prompts that reach `accept` are the same, a prompt that
does not reach it holds the same samples (its whole budget) in both, and any sample only one run holds
belongs to a prompt both runs finished.
"""

from __future__ import annotations

from cotforge.query import run_query

SAMPLES = "SELECT id, prompt_id, seed, completion, accepted FROM samples"


def samples(run) -> dict[str, tuple]:
    _, rows = run_query(run, SAMPLES)
    ids = [row[0] for row in rows]
    assert len(ids) == len(set(ids)), "a sample was generated twice"
    return {row[0]: row[1:] for row in rows}


def assert_same_up_to_cancellation(run, reference, accept: int = 1) -> None:
    ours, theirs = samples(run), samples(reference)
    for key in ours.keys() & theirs.keys():
        assert ours[key] == theirs[key], f"sample {key} differs between the runs"

    def done(rows: dict) -> set:
        counts: dict[str, int] = {}
        for prompt_id, _, _, accepted in rows.values():
            counts[prompt_id] = counts.get(prompt_id, 0) + bool(accepted)
        return {p for p, n in counts.items() if n >= accept}

    assert done(ours) == done(theirs), "the prompts that reached accept differ"
    for key in ours.keys() ^ theirs.keys():
        prompt_id = (ours.get(key) or theirs.get(key))[0]
        assert prompt_id in done(ours), f"sample {key} of unfinished prompt {prompt_id} is in one run only"
