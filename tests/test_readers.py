"""Readers and column mapping per format; each kind of bad row gives its FILE:LINE: field message."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl

from cotforge.io import BadRow, Normalizer, parse_field_overrides, read_rows
from cotforge.errors import CotforgeError

ROWS = [
    {"question": "What is 2+2?", "answer": "4", "category": "math"},
    {"question": "Name a prime.", "solution": "#### 7", "lang": "en"},
]


def normalized(path, kind="prompt", **kw):
    normalize = Normalizer(kind, **kw)
    return [normalize(raw) for raw in read_rows(path)]


def test_jsonl_maps_common_columns(tmp_path):
    rows = normalized(write_jsonl(tmp_path / "p.jsonl", ROWS))
    assert [r["prompt"] for r in rows] == ["What is 2+2?", "Name a prime."]
    assert [r["gold"] for r in rows] == ["4", "#### 7"]
    assert rows[0]["domain"] == "math" and rows[1]["language"] == "en"
    assert rows[0]["id"] != rows[1]["id"] and rows[0]["id"].startswith("p")


def test_ids_are_deterministic(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    assert [r["id"] for r in normalized(path)] == [r["id"] for r in normalized(path)]


def test_parquet_csv_and_datasets_folder_agree(tmp_path):
    table = pa.Table.from_pylist([{"problem": "1+1?", "ground_truth": "2"}, {"problem": "3*3?", "ground_truth": "9"}])
    pq.write_table(table, tmp_path / "p.parquet")
    (tmp_path / "p.csv").write_text("problem,ground_truth\n1+1?,2\n\"3*3?\",9\n")
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(table.to_pylist()).save_to_disk(str(tmp_path / "ds"))
    expected = [("1+1?", "2"), ("3*3?", "9")]
    for source in ("p.parquet", "p.csv", "ds"):
        got = [(r["prompt"], r["gold"]) for r in normalized(tmp_path / source)]
        assert got == expected, source


def test_field_override(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"q_text": "Why?", "question": "ignored", "ref": "42"}])
    rows = normalized(path, overrides=parse_field_overrides(["prompt=q_text", "gold=ref"]))
    assert rows[0]["prompt"] == "Why?" and rows[0]["gold"] == "42"
    assert json.loads(rows[0]["metadata"]) == {"question": "ignored"}
    with pytest.raises(CotforgeError, match="unknown field"):
        parse_field_overrides(["nope=x"])


def test_samples_split_completion_and_keep_given_parts(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [
        {"prompt": "q", "completion": "<think>step</think> final"},
        {"prompt": "q", "completion": "|special_token|r|special_token|s"},
        {"prompt": "q", "reasoning": "because", "summary": "so"},
    ])
    rows = normalized(path, "sample")
    assert [(r["reasoning"], r["summary"]) for r in rows] == [("step", "final"), ("r", "s"), ("because", "so")]
    assert "because" in rows[2]["completion"]
    assert len({r["id"] for r in rows}) == 3 and len({r["prompt_id"] for r in rows}) == 1


@pytest.mark.parametrize("line, field, problem", [
    (b'{"prompt": "x", "completion": "ok"', "<row>", "invalid JSON"),
    (b'["a list"]', "<row>", "expected a JSON object"),
    (b'{"prompt": "x"}', "completion", "missing required field"),
    (b'{"prompt": 5, "completion": "c"}', "prompt", "expected text, got int"),
    (b'{"prompt": "x", "completion": "c", "sample_idx": "two"}', "sample_idx", "expected an integer"),
    (b'{"prompt": "x", "completion": "bad \xff byte"}', "completion", "invalid UTF-8"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, line, field, problem):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "fine", "completion": "<think>a</think> b"}\n\n' + line + b"\n")
    normalize = Normalizer("sample")
    rows = list(read_rows(path))
    normalize(rows[0])
    with pytest.raises(BadRow) as err:
        normalize(rows[1])
    message = str(err.value)
    assert message.startswith(f"{path}:3: field '{field}': "), message
    assert problem in message


def test_oversized_text_and_row(tmp_path):
    path = write_jsonl(tmp_path / "big.jsonl", [{"prompt": "x", "completion": "a" * 2000}])
    with pytest.raises(BadRow, match=r"big.jsonl:1: field 'completion': 2,000 characters is over"):
        normalized(path, "sample", max_text_chars=1000)
    from cotforge.io.readers import read_jsonl

    rows = list(read_jsonl(path, max_row_bytes=500))
    assert rows[0].error and "over the 500-byte limit" in str(rows[0].error)


def test_missing_input_is_one_clear_error(tmp_path):
    with pytest.raises(CotforgeError, match="no such file"):
        list(read_rows(tmp_path / "nope.jsonl"))


@pytest.mark.parametrize("line", [b'{"prompt": "x", "completion": "\\udcff"}', b'{"prompt": "x", "completion": "\\uDCFF"}',
                                  b'{"prompt": "x", "metadata": {"k": ["\\udc80"]}, "completion": "c"}'])
def test_an_escaped_undecodable_byte_is_still_found_on_a_valid_utf8_line(tmp_path, line):
    """read_jsonl skips the walk over every value for a valid UTF-8 line with no \\ud escape; a line
    with one is walked as before."""
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"prompt": "caf\xc3\xa9 \xe4\xb8\xad", "completion": "<think>a</think> \\\\udc"}\n' + line + b"\n")
    first, second = read_rows(path)
    assert first.error is None and first.data["prompt"] == "café 中"
    assert second.error is not None and second.error.field in ("completion", "metadata.k[0]")


def test_column_choices_made_once_per_row_shape_are_each_rows_own(tmp_path):
    """Normalizer plans which column each field is read from once per row shape (columns and which
    are null): rows of several shapes in one input read as a fresh Normalizer reads each alone."""
    rows = [{"question": "q1", "answer": "1"}, {"problem": "q2", "solution": "#### 2", "extra": 5},
            {"question": "q3", "answer": None, "ground_truth": "3"}, {"question": "q4", "answer": "4"},
            {"question": "q5", "answer": "5", "ground_truth": "6"},  # two golds: refused, whatever came before
            {"question": "q6", "answer": None, "ground_truth": "7"}, {"prompt": None, "question": "q7"}]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    shared = Normalizer("prompt")

    def outcome(normalize, raw):
        try:
            return normalize(raw)
        except CotforgeError as err:
            return type(err), str(err)

    raws = list(read_rows(path))
    assert [outcome(shared, raw) for raw in raws] == [outcome(Normalizer("prompt"), raw) for raw in raws]
    assert isinstance(outcome(shared, raws[4]), tuple) and not isinstance(outcome(shared, raws[5]), tuple)
