"""What a prompt says it is travels with its samples: generate, the sample schema, a re-filter, rewrite's
copy and the export all keep `answer_type` (and every prompt field a check reads); a re-filter keeps the
generation's own record (engine, sampling settings) instead of relabelling it `import`.

Generate replays recorded completions (`engines.replay`), so the same texts can be judged by generate
and by filter and compared row by row.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from cotforge.engines.replay import ReplayEngine
from cotforge.export import export
from cotforge.filtering import filter_samples
from cotforge.generate import GenerateConfig, generate
from cotforge.io.errors import BadRow
from cotforge.io.normalize import Normalizer
from cotforge.io.readers import RawRow
from cotforge.query import run_query
from cotforge.schema import PROMPT_COPIED, PROMPT_FIELDS, SAMPLE_FIELDS

# (prompt, gold, answer_type, completion, accepted): each completion is graded differently as math,
# so a lost answer_type shows as a different verdict.
PROMPTS = [
    ("g on Earth in m/s^2, to two significant figures?", "9.81", "numeric",
     "<think>g is about 9.8</think> g is about 9.8 m/s^2, so the answer is 9.8.", True),  # math: 9.8 != 9.81
    ("Which is prime? A) 21 B) 23 C) 25", "B", "choice",
     "<think>23 is prime</think> Answer: B) 23", True),  # math grades the 23 against B
    # a free-text gold: how the answer check treats it (compare, or leave it to a judge) is its own
    # business; what matters here is that generate and filter agree
    ("Capital of France?", "Paris", "text", "<think>France</think> The capital is Paris.", None),
    ("2+2?", "4", "math", "<think>2 and 2</think> The answer is 5.", False),
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def runs(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [
        {"id": f"p{k}", "prompt": p, "gold": g, "answer_type": t} for k, (p, g, t, _, _) in enumerate(PROMPTS)])
    recorded = write_jsonl(tmp_path / "recorded.jsonl", [
        {"prompt_id": f"p{k}", "sample_idx": 0, "prompt": p, "completion": c} for k, (p, _, _, c, _) in
        enumerate(PROMPTS)])
    samples = write_jsonl(tmp_path / "samples.jsonl", [
        {"id": f"p{k}-0", "prompt_id": f"p{k}", "sample_idx": 0, "prompt": p, "gold": g, "answer_type": t,
         "completion": c} for k, (p, g, t, c, _) in enumerate(PROMPTS)])
    config = GenerateConfig(engine="replay", k=1, accept=1, max_rounds=1, checks="format,answer", jobs=0,
                            temperature=0.6, top_p=0.95, max_tokens=512)
    generate(prompts, tmp_path / "generated", config, engine=ReplayEngine(recorded))
    filter_samples([samples], tmp_path / "filtered", checks="format,answer", jobs=0)
    filter_samples([tmp_path / "generated"], tmp_path / "refiltered", checks="format,answer", jobs=0)
    return tmp_path


def rows(run, sql="SELECT id, answer_type, accepted, verdicts FROM samples ORDER BY id"):
    columns, values = run_query(run, sql)
    return [dict(zip(columns, row)) for row in values]


def test_generate_grades_as_filter_does_and_keeps_answer_type(runs):
    expected = [accepted for *_, accepted in PROMPTS]
    generated, filtered, refiltered = (rows(runs / name) for name in ("generated", "filtered", "refiltered"))
    assert [r["accepted"] for r, want in zip(filtered, expected) if want is not None] == \
        [want for want in expected if want is not None]
    assert [r["answer_type"] for r in generated] == [t for _, _, t, _, _ in PROMPTS]
    for run in (generated, refiltered):
        assert [(r["id"], r["answer_type"], r["accepted"], r["verdicts"]) for r in run] == \
            [(r["id"], r["answer_type"], r["accepted"], r["verdicts"]) for r in filtered]


def test_a_refilter_keeps_the_generation_record(runs):
    sql = "SELECT id, engine, model, temperature, top_p, max_tokens, seed FROM samples ORDER BY id"
    generated, refiltered = rows(runs / "generated", sql), rows(runs / "refiltered", sql)
    assert {r["engine"] for r in generated} == {"replay"}
    assert refiltered == generated
    assert {r["engine"] for r in rows(runs / "filtered", sql)} == {"import"}  # rows that name no engine
    metadata = [json.loads(m or "{}") for (m,) in run_query(runs / "refiltered", "SELECT metadata FROM samples")[1]]
    assert not any("engine" in m or "temperature" in m for m in metadata)  # columns, not metadata


def test_export_carries_the_fields_a_check_reads(runs, tmp_path):
    export(runs / "generated", tmp_path / "dataset")
    table = pq.read_table(next((tmp_path / "dataset" / "data").glob("*.parquet")))
    got = sorted(zip(table.column("gold").to_pylist(), table.column("answer_type").to_pylist()))
    accepted = dict(run_query(runs / "generated", "SELECT gold, answer_type FROM samples WHERE accepted")[1])
    assert got == sorted(accepted.items()) and ("9.81", "numeric") in got and ("B", "choice") in got


def test_every_prompt_field_a_sample_can_hold_is_copied():
    assert set(PROMPT_COPIED) == set(PROMPT_FIELDS) & set(SAMPLE_FIELDS) - {"id", "prompt", "messages"}
    assert "answer_type" in PROMPT_COPIED and "gold" in PROMPT_COPIED


def test_generation_record_fields_are_validated():
    normalize = Normalizer("sample")
    row = normalize(RawRow("s.jsonl", 1, {"prompt": "p", "completion": "c", "temperature": "0.7", "seed": 3}))
    assert row["temperature"] == 0.7 and row["seed"] == 3
    with pytest.raises(BadRow, match="temperature"):
        normalize(RawRow("s.jsonl", 2, {"prompt": "p", "completion": "c", "temperature": "warm"}))
    with pytest.raises(BadRow, match="top_p"):
        normalize(RawRow("s.jsonl", 3, {"prompt": "p", "completion": "c", "top_p": [0.9]}))
