"""Export: HF dataset folder loads with `datasets`, the data card is valid, and the hub upload works."""

from __future__ import annotations

import base64
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pyarrow.parquet as pq
import pytest
import yaml

from cotforge.export import export
from cotforge.io.rundir import RunDir
from cotforge.parsing import split_completion
from cotforge.schema import SAMPLE_SCHEMA, to_table

datasets = pytest.importorskip("datasets")


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


def _front_matter(readme: Path) -> dict:
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_messages_export_loads_with_datasets(run_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    summary = export(run_folder, out, style="messages", shard_rows=10)
    assert summary["rows"] == 25 and summary["shards"] == 3
    assert sorted(p.name for p in (out / "data").iterdir()) == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    ds = datasets.load_dataset(str(out), split="train")
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
    rows = {row["id"]: row for row in datasets.load_dataset(str(out), split="train")}
    assistant = rows["s1"]["messages"][1]
    assert assistant["reasoning_content"] == "step x"
    assert assistant["content"] == "The answer is 1." and "<think>" not in assistant["content"]


def test_special_token_export_and_data_card(run_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    export(run_folder, out, style="special-token")
    ds = datasets.load_dataset(str(out), split="train")
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


# --- hub upload through a loopback server --------------------------------------------------------
class _Hub(BaseHTTPRequestHandler):
    """The endpoints `HfApi.create_repo` + `upload_folder` call (legacy commit path, no Xet)."""

    requests: ClassVar[list] = []
    files: ClassVar[dict] = {}
    created: ClassVar[list] = []

    def _json(self, code: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        base = f"http://{self.headers['Host']}"
        self.requests.append(self.path)
        if self.path == "/api/repos/create":
            request = json.loads(body)
            self.created.append(request)
            return self._json(200, {"url": f"{base}/datasets/{request['organization']}/{request['name']}"})
        if self.path == "/api/validate-yaml":
            content = json.loads(body)["content"]
            yaml.safe_load(content.split("---\n")[1])  # a broken front matter fails the upload
            return self._json(200, {"warnings": [], "errors": []})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                              for f in files]})
        if "/commit/" in self.path:
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            repo = self.path.split("/api/datasets/")[1].split("/commit/")[0]
            return self._json(200, {"commitUrl": f"{base}/datasets/{repo}/commit/{'a' * 40}",
                                    "commitOid": "a" * 40, "success": True})
        return self._json(404, {"error": f"not served: {self.path}"})

    def log_message(self, *args) -> None:
        pass


def test_push_to_hub_through_loopback_server(run_folder: Path, tmp_path: Path, cli) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # huggingface_hub reads HF_ENDPOINT at import, so the CLI runs in a subprocess with it set. Xet is
    # off: its upload protocol (a separate CAS service) is not what this server stands in for.
    # CI runs with HF_HUB_OFFLINE=1 (no hub at run time); the "hub" here is on loopback, so lift it.
    env = {**{k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"},
           "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}", "HF_TOKEN": "hf_test",
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    out = tmp_path / "ds"
    try:
        result = cli("export", run_folder, "--out", out, "--style", "messages", "--push-to-hub", "org/r1-mix",
                     "--private", env=env)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert len(_Hub.created) == 1
    request = _Hub.created[0]
    assert (request["organization"], request["name"], request["type"]) == ("org", "r1-mix", "dataset")
    # --private: huggingface_hub >= 1.x sends `visibility`, older versions `private`
    assert request.get("visibility") == "private" or request.get("private") is True
    local = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert sorted(_Hub.files) == local
    for name, data in _Hub.files.items():
        assert (out / name).read_bytes() == data
    assert "pushed to" in result.stdout and "/datasets/org/r1-mix" in result.stdout
