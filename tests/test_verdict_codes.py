"""Verdicts carry a machine-readable status and code; the stages read those, never the reason's wording.

The reason is for people: the tests below reword every stored reason of a real run and check that the
funnel, the unverified summary, the worker-death count and the judge's funnel do not move.
"""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
from servers import ScriptedServer, chat_answer

from cotforge.checks.base import (DECIDED_BY_RULE, NO_REFERENCE, NOT_MATH, REJECTED_BY_RULES, UNDECIDED,
                                  UNPARSED, WORKER_DIED, Verdict)
from cotforge.checks.chain import Chain, CheckSpec, VerificationGate
from cotforge.filtering import filter_samples
from cotforge.judge import judge_funnel
from cotforge.judge.stage import rule_decides
from cotforge.query import connect
from cotforge.stats import run_counts


def test_verdict_status_and_code_constructors():
    assert Verdict.ok().record("format") == {"check": "format", "passed": True, "score": 1.0, "reason": "ok",
                                             "status": "passed", "code": None}
    skipped = Verdict.skip("no gold", missing="gold")
    assert (skipped.status, skipped.code, skipped.reason) == ("n/a", "missing:gold", "n/a: no gold")
    failed = Verdict.fail("timeout: over 5s", code="timeout")
    assert (failed.status, failed.code) == ("failed", "timeout")
    # pickled through the worker pipe and rebuilt from a plain tuple (chain.run_checks does that)
    assert Verdict(*tuple(failed)) == failed


def test_gate_codes_name_every_missing_field():
    gate = VerificationGate({0: "answer", 1: "code"}, allow_unverified=False)
    none_judged = [Verdict.skip("no gold", missing="gold"), Verdict.skip("no tests", missing="tests")]
    verdict = gate.verdict(none_judged)
    assert (verdict.status, verdict.code) == ("failed", "missing:gold,tests")
    allowed = VerificationGate({0: "answer", 1: "code"}, allow_unverified=True).verdict(none_judged)
    assert (allowed.status, allowed.code) == ("n/a", "missing:gold,tests")
    assert gate.verdict([Verdict.ok(), none_judged[1]]).code == "judged"


def test_the_judge_gate_reads_the_code_not_the_wording():
    sample = {"answer_type": "math"}
    # an undecided answer verdict goes to the judge, however its reason is worded
    assert not rule_decides(Verdict.fail("could not find anything final", code=UNDECIDED), sample)
    # and a wrong answer whose wording happens to start like an undecided one is still decided
    assert rule_decides(Verdict.fail("no final answer found? no: answer 6 != gold 5"), sample)
    assert rule_decides(Verdict.ok("answer 5 = gold 5"), sample)


def test_answer_check_codes_undecided_and_decided():
    chain = Chain([CheckSpec("answer")], jobs=0)
    rows = [{"prompt": "2+3?", "gold": "5", "completion": "<think>x</think> The answer is 5."},
            {"prompt": "2+3?", "gold": "5", "completion": "<think>x</think> The answer is 6."},
            {"prompt": "2+3?", "gold": "5", "completion": "<think>2 plus 3 is</think>"},
            {"prompt": "2+3?", "completion": "<think>x</think> The answer is 5."},
            {"prompt": "area?", "gold": "9.81", "answer_type": "numeric", "completion": "<think>g is</think>"}]
    got = [(r.verdicts[0].status, r.verdicts[0].code) for r in chain.run(rows)]
    assert got == [("passed", None), ("failed", None), ("failed", UNDECIDED), ("n/a", "missing:gold"),
                   ("failed", UNDECIDED)]


def judge_script(body: dict) -> tuple:
    """Yes when the reference is in the answer; rambles (unparsed) when the answer says RAMBLE."""
    text = body["messages"][-1]["content"]
    reference = re.search(r"Reference answer:\n(.*?)\n\n", text, re.DOTALL)
    prediction = re.search(r"(?:Model's answer|Response):\n(.*?)\n\nDoes", text, re.DOTALL).group(1)
    if "RAMBLE" in prediction:
        answer = "It depends."
    else:
        yes = reference is not None and reference.group(1).lower() in prediction.lower()
        answer = f"Judgement: {'Yes' if yes else 'No'}"
    return 200, {}, {**chat_answer(), "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                                   "finish_reason": "stop"}]}


def reword_every_reason(run) -> None:
    """Replace every stored reason with one meaningless word, as a future rewording might."""
    for shard in (run / "samples").glob("part-*.parquet"):
        table = pq.read_table(shard)
        column = table.schema.get_field_index("verdicts")
        rows = [[{**v, "reason": "reworded"} for v in row] for row in table.column("verdicts").to_pylist()]
        table = table.set_column(column, "verdicts", pa.array(rows, table.schema.field("verdicts").type))
        pq.write_table(table, shard)


def test_counts_and_judge_funnel_survive_rewording(tmp_path):
    rows = [
        {"id": "decided", "prompt": "2+3?", "gold": "5", "completion": "<think>2 plus 3</think> The answer is 5."},
        {"id": "wrong", "prompt": "2+3?", "gold": "5", "completion": "<think>2 plus 3</think> The answer is 6."},
        {"id": "open", "prompt": "Capital of Italy?", "gold": "Rome", "answer_type": "text",
         "completion": "<think>Italy</think> It is Milan."},  # a free-text gold: the judge decides
        {"id": "open-paris", "prompt": "Capital of France?", "gold": "Paris", "answer_type": "text",
         "completion": "<think>France</think> It is Paris, on the Seine."},
        {"id": "ramble", "prompt": "Capital of Spain?", "gold": "Madrid", "answer_type": "text",
         "completion": "<think>Spain</think> Madrid RAMBLE"},
        {"id": "cut", "prompt": "Greet me", "gold": "hi", "completion": "<think>a greeting that never"},
        {"id": "no-gold", "prompt": "Greet me", "completion": "<think>a greeting</think> hello friend"},
    ]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ScriptedServer([judge_script]) as server:
        preset = [{"check": "format"}, {"check": "answer"},
                  {"check": "judge", "engine": "openai", "model": "judge-m", "cache": False,
                   "engine_options": {"base_url": server.base_url, "backoff_s": 0.01}}]
        filter_samples([data], tmp_path / "run", checks=preset, jobs=0)
    run = tmp_path / "run"
    codes = dict(((i, c), code) for i, c, code in connect(run).execute(
        'SELECT id, "check", code FROM verdicts').fetchall())
    assert codes[("decided", "judge")] == DECIDED_BY_RULE and codes[("wrong", "judge")] == DECIDED_BY_RULE
    # a gold in words is n/a for `answer` from the start (not_math), so the judge's verdict counts
    assert codes[("open", "answer")] == NOT_MATH and codes[("open-paris", "answer")] == NOT_MATH
    assert codes[("ramble", "judge")] == UNPARSED and codes[("cut", "judge")] == REJECTED_BY_RULES
    assert codes[("no-gold", "judge")] == NO_REFERENCE and codes[("no-gold", "verified")] == "missing:gold"
    before = run_counts(run, ["format", "answer", "judge", "verified"]), judge_funnel(run, ["judge"])
    assert before[1]["judge"] == {"yes": 1, "no": 1, "unparsed": 1, "saved_by_answer": 2, "saved_by_rules": 1,
                                  "not_applicable": 1}
    assert before[0]["unverified"] == [{"missing": "gold", "rejected": 1, "allowed": 0}]
    reword_every_reason(run)
    after = run_counts(run, ["format", "answer", "judge", "verified"]), judge_funnel(run, ["judge"])
    assert after[0]["funnel"] == before[0]["funnel"] and after[0]["unverified"] == before[0]["unverified"]
    assert after[1] == before[1]


def test_worker_deaths_are_counted_by_code(tmp_path):
    """A row whose item killed its worker twice is counted apart from judgements, by its code."""
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "prompt": "q", "completion": "<think>a</think> b"}) + "\n"
                            for i in range(3)))
    run = tmp_path / "run"
    filter_samples([data], run, checks="format", jobs=0)
    shard = next((run / "samples").glob("part-*.parquet"))
    table = pq.read_table(shard)
    rows = table.column("verdicts").to_pylist()
    rows[1] = [Verdict.fail("the worker is gone (said differently)", code=WORKER_DIED).record("format")]
    table = table.set_column(table.schema.get_field_index("verdicts"), "verdicts",
                             pa.array(rows, table.schema.field("verdicts").type))
    table = table.set_column(table.schema.get_field_index("accepted"), "accepted",
                             pa.array([True, False, True]))
    pq.write_table(table, shard)
    assert run_counts(run)["rejected_worker_died"] == 1
