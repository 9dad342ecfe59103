"""What a new user hits in the first hour: each mistake is one line and a non-zero exit, or handled."""

from __future__ import annotations

import json
import re

import pytest
from conftest import REPO, write_jsonl

ROW = {"prompt": "2+2?", "completion": "<think>2+2=4</think> 4"}


def one_line(result) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("size", ["0", "-5"])
def test_chunk_rows_must_be_positive(cli, tmp_path, size):
    data = write_jsonl(tmp_path / "in.jsonl", [ROW])
    line = one_line(cli("filter", data, "--out", tmp_path / "run", "--checks", "format", "--chunk-rows", size))
    assert line == f"--chunk-rows {size}: must be at least 1"


def test_empty_input_says_so(cli, tmp_path):
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    line = one_line(cli("filter", data, "--out", tmp_path / "run", "--checks", "format"))
    assert line == f"{data}: no rows to filter (the input is empty)"
    data.write_text(json.dumps(ROW) + "\n")  # fixed input: the empty run committed nothing, so it restarts
    assert "rows read 1" in cli("filter", data, "--out", tmp_path / "run", "--checks", "format", check=True).stdout


def test_duplicate_ids_are_bad_rows(cli, tmp_path):
    rows = [{"id": "a", **ROW}, {"id": "b", **ROW}, {"id": "a", "prompt": "3+3?", "completion": "<think>6</think> 6"}]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    line = one_line(cli("filter", data, "--out", tmp_path / "run", "--checks", "format"))
    assert line == f"{data}:3: field 'id': duplicate id 'a': an earlier row has it"
    # --chunk-rows 1: the duplicate is in another chunk than the first 'a', and the run resumes over it
    result = cli("filter", data, "--out", tmp_path / "run", "--checks", "format", "--bad-rows", "quarantine",
                 "--chunk-rows", "1", check=True)
    assert "rows read 3: accepted 2, rejected 0, quarantined 1" in result.stdout
    quarantined = json.loads(cli("query", tmp_path / "run", "SELECT line, field, reason FROM quarantine",
                                 "--format", "json", check=True).stdout)
    assert quarantined == [{"line": 3, "field": "id", "reason": "duplicate id 'a': an earlier row has it"}]


def test_refused_fail_run_resumes_in_quarantine_mode_without_overwrite(cli, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", [ROW, {"prompt": "x"}])
    run = tmp_path / "run"
    assert cli("filter", data, "--out", run, "--checks", "format").returncode == 1
    result = cli("filter", data, "--out", run, "--checks", "format", "--bad-rows", "quarantine", check=True)
    assert "rows read 2: accepted 1, rejected 0, quarantined 1" in result.stdout


def test_fail_then_quarantine_keeps_committed_chunks(cli, tmp_path):
    rows = [{"id": f"r{i}", **ROW} for i in range(4)] + [{"id": "bad", "prompt": "x"}]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    run = tmp_path / "run"
    assert cli("filter", data, "--out", run, "--checks", "format", "--chunk-rows", "2").returncode == 1
    committed = sorted(p.name for p in (run / "samples").iterdir())
    assert committed == ["part-000000.parquet", "part-000001.parquet"]
    before = (run / "samples" / "part-000000.parquet").stat().st_mtime_ns
    result = cli("filter", data, "--out", run, "--checks", "format", "--chunk-rows", "2", "--bad-rows",
                 "quarantine", check=True)
    assert "rows read 5: accepted 4, rejected 0, quarantined 1" in result.stdout
    assert (run / "samples" / "part-000000.parquet").stat().st_mtime_ns == before, "committed chunk rewritten"


def test_datasets_dict_reads_every_split(cli, tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list([{**ROW, "id": f"t{i}"} for i in range(3)]),
                 "test": Dataset.from_list([{**ROW, "id": f"e{i}"} for i in range(2)])}).save_to_disk(tmp_path / "dd")
    result = cli("filter", tmp_path / "dd", "--out", tmp_path / "run", "--checks", "format", check=True)
    assert "rows read 5: accepted 5" in result.stdout
    splits = cli("query", tmp_path / "run", "SELECT json_extract_string(metadata, '$.split') AS split, count(*) AS n "
                 "FROM samples GROUP BY 1 ORDER BY 1", "--format", "json", check=True).stdout
    assert json.loads(splits) == [{"split": "test", "n": 2}, {"split": "train", "n": 3}]


def test_json_array_file_is_read(cli, tmp_path):
    data = tmp_path / "rows.json"
    data.write_text(json.dumps([{**ROW, "id": "a"}, {**ROW, "id": "b"}, 7], indent=2))
    result = cli("filter", data, "--out", tmp_path / "run", "--checks", "format", "--bad-rows", "quarantine",
                 check=True)
    assert "rows read 3: accepted 2, rejected 0, quarantined 1" in result.stdout
    data.write_text('[{"prompt": "x",')
    line = one_line(cli("filter", data, "--out", tmp_path / "run2", "--checks", "format"))
    assert line.startswith(f"{data}:1: invalid JSON array:") and "JSONL" in line


def test_oversized_row_keeps_a_bounded_escaped_prefix(tmp_path):
    from cotforge.io.errors import RAW_KEEP_BYTES
    from cotforge.io.readers import read_jsonl

    data = tmp_path / "big.jsonl"
    big = b'{"prompt": "' + b"\xfe" + b"x" * 300_000 + b'"}'
    data.write_bytes(big + b"\n" + json.dumps(ROW).encode() + b"\n")
    rows = list(read_jsonl(data, max_row_bytes=100_000))
    assert [r.line for r in rows] == [1, 2] and rows[1].data == ROW
    record = rows[0].error.quarantine_record()
    assert record["reason"] == f"row of {len(big):,} bytes is over the 100,000-byte limit"
    assert record["raw"].startswith('{"prompt": "\\xfexxx')
    assert record["raw"].endswith(f"...[{len(big) - RAW_KEEP_BYTES:,} more bytes of {len(big):,}]")
    assert len(record["raw"]) < RAW_KEEP_BYTES + 100


def test_export_reasoning_field_needs_messages_and_leaves_nothing(cli, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", [ROW])
    cli("filter", data, "--out", tmp_path / "run", "--checks", "format", check=True)
    line = one_line(cli("export", tmp_path / "run", "--out", tmp_path / "ds", "--style", "special-token",
                        "--reasoning-field"))
    assert "--reasoning-field" in line and "--style messages" in line
    assert not (tmp_path / "ds" / "data").exists()
    cli("export", tmp_path / "run", "--out", tmp_path / "ds", "--style", "special-token", check=True)


def test_run_folder_arguments_name_the_problem(cli, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", [ROW])
    for command in (["query", data, "SELECT 1"], ["export", data, "--out", tmp_path / "ds"]):
        assert one_line(cli(*command)).startswith(f"{data}: is a file; give the run folder")
    missing = tmp_path / "nope"
    assert one_line(cli("query", missing, "SELECT 1")) == f"{missing}: no such run folder"
    assert one_line(cli("export", missing, "--out", tmp_path / "ds")) == f"{missing}: no such run folder"


def test_zero_acceptance_prints_the_top_rejection_reason(cli, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"{i}+{i}?"} for i in range(3)])
    recorded = write_jsonl(tmp_path / "recorded.jsonl", [{"prompt_id": f"p{i}", "sample_idx": j,
                                                    "completion": f"The answer is {2 * i}."}
                                                   for i in range(3) for j in range(2)])
    result = cli("generate", prompts, "--out", tmp_path / "run", "--engine", "replay", "--model", recorded,
                 "--checks", "format", "--k", "2", "--max-rounds", "1", "--jobs", "0", check=True)
    assert re.search(r"nothing was accepted: check 'format' rejected 6 of 6 rows; its most common reason: \S",
                     result.stdout), result.stdout


def test_every_sql_example_in_the_readme_runs(cli, tmp_path):
    """Every `cotforge query RUN "SQL"` (or 'SQL') line of README.md runs against a real run folder."""
    readme = (REPO / "README.md").read_text()
    pattern = r"""^cotforge query \S+ (?:"([^"]+)"|'([^']+)')"""
    examples = [double or single for double, single in re.findall(pattern, readme, flags=re.MULTILINE)]
    assert examples, "README.md shows no query examples"
    data = write_jsonl(tmp_path / "in.jsonl", [ROW, {"prompt": "x", "completion": "no think"}])
    cli("filter", data, "--out", tmp_path / "run", "--checks", "format", check=True)
    for sql in examples:
        result = cli("query", tmp_path / "run", sql)
        assert result.returncode == 0, f"README example fails: {sql}\n{result.stderr}"


def test_detected_language_is_recorded_and_the_card_lists_the_data_languages(cli, tmp_path):
    rows = [{"id": "en", "prompt": "What is two plus two? Please answer with a number.",
             "completion": "<think>Two plus two is four, so the answer is four.</think> The answer is four."},
            {"id": "zh", "prompt": "二加二等于多少？请用数字回答这个问题。",
             "completion": "<think>二加二等于四，所以答案是四。我们再检查一遍这个结果。</think> 答案是四。"}]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    cli("filter", data, "--out", tmp_path / "run", "--checks", "format,language", "--jobs", "1", check=True)
    recorded = json.loads(cli("query", tmp_path / "run", "SELECT id, language FROM samples ORDER BY id",
                              "--format", "json", check=True).stdout)
    assert recorded == [{"id": "en", "language": "en"}, {"id": "zh", "language": "zh"}]
    cli("export", tmp_path / "run", "--out", tmp_path / "ds", check=True)
    card = (tmp_path / "ds" / "README.md").read_text()
    front = card.split("---")[1]
    assert re.search(r"language:\n- en\n- zh\n", front), front
    import pyarrow.parquet as pq

    exported = pq.read_table(next((tmp_path / "ds" / "data").glob("*.parquet"))).to_pylist()
    assert sorted(row["language"] for row in exported) == ["en", "zh"]


def test_card_languages_come_from_rows_without_a_recorded_language(cli, tmp_path):
    zh = [{"prompt": f"第{i}题：二加{i}等于多少？请用数字回答。", "completion": f"<think>二加{i}的结果需要计算。</think> 答案是{2 + i}。"}
          for i in range(4)]
    en = [{"prompt": f"Question {i}: what is two plus {i}? Answer with a number.",
           "completion": f"<think>We add two and {i} together.</think> The answer is {2 + i}."} for i in range(4)]
    data = write_jsonl(tmp_path / "in.jsonl", zh + en)
    cli("filter", data, "--out", tmp_path / "run", "--checks", "format", check=True)  # no language check
    cli("export", tmp_path / "run", "--out", tmp_path / "ds", check=True)
    front = (tmp_path / "ds" / "README.md").read_text().split("---")[1]
    assert re.search(r"language:\n- en\n- zh\n", front), front


def test_bad_recipe_yaml_and_an_uncreatable_out_folder_are_one_line(cli, tmp_path):
    recipe = tmp_path / "mix.yaml"
    recipe.write_text("{bad\n")
    line = one_line(cli("mix", recipe, "--out", tmp_path / "m"))
    assert line == f"{recipe}:2:1: recipe is not valid YAML: expected ',' or '}}', but got '<stream end>' " \
                   "(while parsing a flow mapping)"
    data = write_jsonl(tmp_path / "in.jsonl", [ROW])
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    line = one_line(cli("filter", data, "--out", blocked / "run", "--checks", "format"))
    assert line.startswith(f"{blocked / 'run'}: cannot create this folder (")


@pytest.mark.parametrize(("option", "value"), [("--k", "0"), ("--max-rounds", "-1"), ("--shard-size", "0")])
def test_generate_sizes_must_be_positive(cli, tmp_path, option, value):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": "p", "prompt": "1+1?"}])
    line = one_line(cli("generate", prompts, "--out", tmp_path / "run", "--engine", "replay", "--model", prompts,
                        option, value))
    assert line == f"{option} {value}: must be at least 1"


GENERATE_OFFLINE = ("--engine", "openai", "--base-url", "http://127.0.0.1:9", "--model", "m", "--checks", "format")


@pytest.mark.parametrize(("name", "content"), [
    ("empty.jsonl", ""),                    # `: > e.jsonl`
    ("blank.jsonl", "\n\n   \n"),           # blank lines only
    ("array.json", "[]"),                   # an empty JSON array
    ("header.csv", "id,prompt,gold\n"),     # a CSV header and no rows
])
def test_generate_refuses_an_empty_prompts_input(cli, tmp_path, name, content):
    prompts = tmp_path / name
    prompts.write_text(content)
    line = one_line(cli("generate", prompts, "--out", tmp_path / "run", *GENERATE_OFFLINE))
    assert line == f"{prompts}: no prompts to generate from (the input is empty)"
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "running"  # never complete
    assert not list((tmp_path / "run").glob("*/part-*.parquet"))  # nothing committed: a fixed input restarts


def test_generate_refuses_prompts_that_are_all_bad_and_an_empty_folder(cli, tmp_path):
    prompts = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": ""}, {"prompt": None}])
    line = one_line(cli("generate", prompts, "--out", tmp_path / "run", *GENERATE_OFFLINE, "--bad-rows", "quarantine"))
    assert line.startswith(f"{prompts}: no usable prompts: all 2 rows are bad (first, line 1: field 'prompt'")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.jsonl").write_text("")
    (folder / "b.jsonl").write_text("\n")
    line = one_line(cli("generate", folder, "--out", tmp_path / "run2", *GENERATE_OFFLINE))
    assert line == f"{folder}: no prompts to generate from (the input is empty)"


def test_files_a_folder_holds_that_cotforge_cannot_read_are_named(cli, tmp_path):
    folder = tmp_path / "prompts"
    (folder / "sub" / ".git").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", [ROW])
    write_jsonl(folder / "sub" / "b.JSONL", [{**ROW, "prompt": "3+3?"}])  # suffixes in any case are read
    (folder / "notes.txt").write_text("what these prompts are")
    (folder / "sub" / "plot.png").write_bytes(b"\x89PNG\r\n")
    (folder / ".hidden").write_text("editor state")  # hidden files and folders are passed over quietly
    (folder / "sub" / ".git" / "HEAD").write_text("ref: refs/heads/main")
    result = cli("filter", folder, "--out", tmp_path / "run", "--checks", "format", check=True)
    assert "rows read 2" in result.stdout
    notes = [line for line in result.stderr.splitlines() if "note:" in line]
    assert notes == [f"cotforge: note: {folder}: skipped 2 files cotforge cannot read (notes.txt, sub/plot.png); "
                     f"it reads .jsonl, .json, .parquet, .csv"]
