"""Export: HF dataset folder loads with `datasets`, the data card is valid, and the hub upload works."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from cotforge.export import export
from cotforge.io.sizes import parse_size
from cotforge.errors import CotforgeError
from cotforge.io.lock import is_lock_file
from cotforge.io.rundir import RunDir
from cotforge.parsing import split_completion
from cotforge.schema import SAMPLE_SCHEMA, to_table

sys.path.insert(0, str(Path(__file__).parent))
from hubserver import FakeHub  # noqa: E402


def _sample(i: int, domain: str, accepted: bool, reasoning: str = "") -> dict:
    summary = f"The answer is {i}."
    return {"id": f"s{i}", "prompt_id": f"p{i}", "sample_idx": 0, "prompt": f"Question {i}?", "domain": domain,
            "source": "unit", "reasoning": reasoning, "summary": summary,
            "completion": f"<think>{reasoning}</think>{summary}" if reasoning else summary,
            "accepted": accepted,
            "verdicts": [{"check": "format", "passed": accepted, "score": None,
                          "reason": None if accepted else "no reasoning block"}]}


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    rows = [_sample(i, "math", i % 3 != 0, reasoning=f"step {'x ' * i}") for i in range(1, 31)]
    rows += [_sample(100 + i, "writing", True) for i in range(5)]  # non-reasoning rows
    run = RunDir.open(tmp_path / "run", "filter", {"checks": ["format"]}, [])
    run.write_shard("samples", 0, to_table(rows, SAMPLE_SCHEMA))
    run.update_manifest(status="complete", funnel=[{"stage": "rows in", "rows": 35},
                                                   {"stage": "quarantined", "rows": 0},
                                                   {"stage": "format", "rejected": 10, "rejected_total": 10,
                                                    "remaining": 25}])
    return run.path


def load_dataset(folder: Path):
    """The exported folder as `datasets` loads it (imported here: at the top, datasets and pandas cost
    every test worker ~5 s of collection)."""
    import datasets

    return datasets.load_dataset(str(folder), split="train")


def _front_matter(readme: Path) -> dict:
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_messages_export_loads_with_datasets(run_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    summary = export(run_folder, out, style="messages", shard_rows=10)
    assert summary["rows"] == 25 and summary["shards"] == 3
    assert sorted(p.name for p in (out / "data").iterdir()) == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    ds = load_dataset(out)
    assert len(ds) == 25
    assert {"id", "prompt_id", "source", "domain", "messages"} <= set(ds.column_names)
    by_id = {row["id"]: row for row in ds}
    math_row, writing_row = by_id["s1"], by_id["s100"]
    assert [t["role"] for t in math_row["messages"]] == ["user", "assistant"]
    assert math_row["messages"][0]["content"] == "Question 1?"
    parsed = split_completion(math_row["messages"][1]["content"])
    assert (parsed.reasoning, parsed.summary) == ("step x", "The answer is 1.")
    assert "<think>" not in writing_row["messages"][1]["content"]
    assert "s3" not in by_id  # rejected rows are not exported


def test_cli_reasoning_field_keeps_reasoning_out_of_the_content(run_folder: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "ds"
    cli("export", run_folder, "--out", out, "--style", "messages", "--reasoning-field", check=True)
    rows = {row["id"]: row for row in load_dataset(out)}
    assistant = rows["s1"]["messages"][1]
    assert assistant["reasoning_content"] == "step x"
    assert assistant["content"] == "The answer is 1." and "<think>" not in assistant["content"]


def test_special_token_export_and_data_card(run_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    export(run_folder, out, style="special-token")
    ds = load_dataset(out)
    row = next(r for r in ds if r["id"] == "s2")
    assert row["text"] == "|special_token|step x x|special_token|The answer is 2."
    assert row["prompt"] == "Question 2?"
    meta = _front_matter(out / "README.md")
    assert meta["configs"][0]["data_files"][0]["path"] == "data/train-*"
    assert [f["name"] for f in meta["dataset_info"]["features"]] == ds.column_names
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 25
    assert meta["size_categories"] == ["n<1K"] and meta["task_categories"] == ["text-generation"]
    body = (out / "README.md").read_text()
    images = [line.split("](")[1].rstrip(")") for line in body.splitlines() if line.startswith("![")]
    assert len(images) == 3
    for image in images:
        assert (out / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| format | 10 | 25 |" in body  # the run's funnel
    assert "| unit | math | 20 |" in body and "| unit | writing | 5 |" in body


def test_cli_export_refuses_to_overwrite(run_folder: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "ds"
    cli("export", run_folder, "--out", out, "--style", "think", "--shard-rows", "7", check=True)
    assert len(list((out / "data").glob("*.parquet"))) == 4
    again = cli("export", run_folder, "--out", out)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    table = pq.read_table(next((out / "data").glob("*.parquet")))
    assert table.column_names[-2:] == ["prompt", "text"]


# --- shards of a bounded size ---------------------------------------------------------------------
@pytest.mark.parametrize("text, size", [("2048", 2048), ("500MB", 500_000_000), ("1.5GiB", 1_610_612_736),
                                        ("200 kb", 200_000), ("3mi", 3 * 1024 ** 2),
                                        ("244.1 MiB", int(244.1 * 1024 ** 2)), ("1000 bytes", 1000), ("1 byte", 1)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "-5MB", "5 parsecs", "5 bytesb"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(CotforgeError, match="--max-shard-size"):
        parse_size(text)


@pytest.fixture
def big_run(tmp_path: Path) -> Path:
    """3,000 accepted rows of ~1.2 KB of varied digits each: about 1 MB of Parquet."""
    rng = random.Random(3)
    rows = [_sample(i, "math", True, reasoning=" ".join(f"{rng.random():.12f}" for _ in range(60 + i % 40)))
            for i in range(3000)]
    run = RunDir.open(tmp_path / "big", "filter", {"checks": ["format"]}, [])
    for index in range(3):
        run.write_shard("samples", index, to_table(rows[index * 1000:(index + 1) * 1000], SAMPLE_SCHEMA))
    run.update_manifest(status="complete", funnel=[{"stage": "rows in", "rows": 3000}])
    return run.path


def test_shards_are_bounded_in_bytes_and_lose_nothing(big_run: Path, tmp_path: Path) -> None:
    limit = 200_000
    summary = export(big_run, tmp_path / "ds", max_shard_bytes=limit)
    files = [Path(f) for f in summary["files"]]
    sizes = [f.stat().st_size for f in files]
    assert summary["rows"] == 3000 and len(files) == summary["shards"] >= 4 and summary["bytes"] == sum(sizes)
    groups = [pq.ParquetFile(f).metadata for f in files]
    largest_group = max(sum(g.row_group(i).column(c).total_compressed_size for c in range(g.num_columns))
                        for g in groups for i in range(g.num_row_groups))
    assert largest_group <= limit // 3  # row groups stay small beside the bound
    # each shard ends within one row group of the bound; only the last may be small
    assert all(size <= limit + largest_group for size in sizes), sizes
    assert all(size >= limit - 2 * largest_group for size in sizes[:-1]), sizes
    assert [f.name for f in files] == [f"train-{i:05d}-of-{len(files):05d}.parquet" for i in range(len(files))]
    assert not list((tmp_path / "ds" / "data").glob(".*"))  # no temporary shard left behind
    ids = [i for f in files for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()]
    assert ids == [f"s{i}" for i in range(3000)]  # every row once, in order (datasets loads the folder: above)
    # a row cap still holds beside the byte bound
    capped = export(big_run, tmp_path / "capped", max_shard_bytes=10 ** 9, shard_rows=1200)
    assert [pq.ParquetFile(f).metadata.num_rows for f in capped["files"]] == [1200, 1200, 600]


def test_card_statistics_are_what_numpy_says(big_run: Path, tmp_path: Path) -> None:
    import numpy as np

    from cotforge.datacard import collect

    stats = collect(big_run)
    table = pq.read_table(big_run / "samples")
    reasoning = np.array([len(r) for r in table.column("reasoning").to_pylist()])
    summary = np.array([len(r) for r in table.column("summary").to_pylist()])
    for (_, got), values in zip(stats["lengths"], (reasoning, summary)):
        assert got == {"min": int(values.min()), "median": int(np.median(values)),
                       "p90": int(np.percentile(values, 90)), "max": int(values.max()), "mean": int(values.mean())}
    edges, counts = stats["reasoning_histogram"]
    assert sum(counts) == 3000 and len(edges) == len(counts) + 1
    assert edges[0] == reasoning.min() and edges[-1] == pytest.approx(reasoning.max())
    expected, _ = np.histogram(reasoning, bins=len(counts), range=(edges[0], edges[-1]))
    assert abs(np.asarray(counts) - expected).sum() <= 2  # bin-edge rounding only


# --- hub upload through the loopback Hub (tests/hubserver.py) ---------------------------------------
@pytest.mark.slow  # ~25 s: a process that imports huggingface_hub and uploads to the loopback Hub
def test_push_to_hub_through_loopback_server(run_folder: Path, tmp_path: Path, cli) -> None:
    hub = FakeHub()
    out = tmp_path / "ds"
    # huggingface_hub reads HF_ENDPOINT at import, so the CLI runs in a subprocess with it set. Xet is
    # off: its upload protocol (a separate CAS service) is not what this server stands in for.
    with hub.serving():
        env = hub.env()
        hub.fail_commits = 1  # the first push is cut off at its commit
        cut = cli("export", run_folder, "--out", out, "--style", "messages", "--push-to-hub", "org/r1-mix",
                  "--private", env=env)
        assert cut.returncode == 1 and "rerun the same command to resume" in cut.stderr
        assert len(cut.stderr.strip().splitlines()) == 1, cut.stderr
        result = cli("export", run_folder, "--out", out, "--style", "messages", "--push-to-hub", "org/r1-mix",
                     "--private", "--overwrite", env=env)
    assert result.returncode == 0, result.stderr
    request = hub.created[0]
    assert (request["organization"], request["name"], request["type"]) == ("org", "r1-mix", "dataset")
    # --private: huggingface_hub >= 1.x sends `visibility`, older versions `private`
    assert request.get("visibility") == "private" or request.get("private") is True
    local = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                   if p.is_file() and not is_lock_file(p) and ".cache" not in p.parts)
    remote = hub.files("org/r1-mix")
    assert sorted(remote) == local
    for name, data in remote.items():
        assert (out / name).read_bytes() == data
    assert "pushed to" in result.stdout and "/datasets/org/r1-mix" in result.stdout
