"""`cotforge view` / `report` and reviews, through Starlette's in-process client (the browser tests are
in test_view_browser.py): pages, escaping, SQL lock-down, path traversal, token, and reviews flowing
through `query`, `export` and `mix`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient
from conftest import write_jsonl

from cotforge.export import export
from cotforge.mix import mix
from cotforge.query import run_query
from cotforge.io.review import append_review
from cotforge.view.app import ViewApp
from cotforge.view.render import markdown_html

XSS = "<script>window.__pwned = 1</script><img src=x onerror=alert(1)>"
ROWS = [
    {"id": "s1", "prompt": "What is $2+2$?", "gold": "4",
     "completion": "<think>We add: $2+2=4$. Check: \\(\\frac{8}{2}=4\\).</think> The answer is $\\boxed{4}$."},
    {"id": "s2", "prompt": "What is 3*3?", "gold": "9", "completion": f"<think>3*3 is 6 {XSS}</think> The answer is **6**."},
    {"id": "s3", "prompt": "What is 10/2?", "gold": "5", "completion": "<think>Half of ten is five.</think> The answer is 5."},
    {"id": "s4", "prompt": "What is 7-2?", "gold": "5", "completion": "<think>Seven minus two.</think> The answer is 4."},
    {"id": "s5", "prompt": "What is 6+1?", "gold": "7", "completion": "<think>Six plus one.</think> The answer is 7."},
]


def make_run(folder: Path, cli) -> Path:
    """A real `cotforge filter` run: s1, s3, s5 pass; s2 and s4 fail the answer check."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "in.jsonl"
    write_jsonl(source, ROWS)
    cli("filter", source, "--out", folder / "run", "--checks", "format,answer", "--jobs", "0", check=True)
    return folder / "run"


@pytest.fixture(scope="module")
def run_template(tmp_path_factory) -> Path:
    from conftest import cotforge

    return make_run(tmp_path_factory.mktemp("view"), cotforge)


@pytest.fixture
def run(run_template: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run_template, tmp_path / "run"))


def client(*runs: Path, token: str | None = None) -> TestClient:
    return TestClient(ViewApp(list(runs), token=token).asgi(allowed_hosts=["testserver"]), follow_redirects=False)


def test_pages_render_and_escape_model_output(run: Path):
    web = client(run)
    overview = web.get("/run/0").text
    assert "answer N != gold N" in overview and "s2" in overview  # reason kind, example one click away
    page = web.get("/run/0/sample", params={"id": "s2", "check": "answer"}).text
    assert "<script>window.__pwned" not in page and "&lt;script&gt;window.__pwned" in page
    assert "<img src=x" not in page and "onerror=alert" not in page.replace("&lt;img src=x onerror=alert", "")
    assert "content-security-policy" in web.get("/run/0").headers
    listing = web.get("/run/0/samples", params={"status": "rejected"}).text
    assert "s2" in listing and "s4" in listing and ">s1<" not in listing
    judged = web.get("/run/0/sample", params={"id": "s1"}).text  # each verdict's code beside its reason
    assert "<th>code</th>" in judged and "<td>judged</td><td>judged by answer</td>" in judged
    prompts = web.get("/run/0/prompts", params={"never": "1"}).text
    assert "What is 3*3?" in prompts and "What is 2+2" not in prompts


def test_markdown_and_math_render_without_markup_from_the_model():
    html = markdown_html("Sum $\\frac{1}{2}$ and \\[\\sqrt{2}\\] then $\\text{</mtext><script>x()</script>}$ **bold**")
    assert "<mfrac>" in html and "<msqrt>" in html and "<strong>bold</strong>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<img" not in markdown_html("![tracker](http://example.com/x.png)")  # nothing loads from the network
    assert 'href="javascript' not in markdown_html("[x](javascript:alert(1))")


def test_sample_walk_follows_the_filter(run: Path):
    page = client(run).get("/run/0/sample", params={"id": "s2", "status": "rejected"}).text
    assert re.search(r'id="next" href="/run/0/sample\?id=s4&amp;status=rejected"', page)
    assert 'id="prev"' not in page  # s2 is the first rejected sample


def test_review_via_the_page_flows_to_query_export_and_card(run: Path, tmp_path: Path):
    web = client(run)
    page = web.get("/run/0/sample", params={"id": "s1"}).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert web.post("/run/0/review", data={"id": "s1", "decision": "reject", "csrf": "forged"}).status_code == 403
    moved = web.post("/run/0/review", data={"id": "s1", "decision": "reject", "note": "sloppy", "csrf": csrf,
                                            "advance": "1"})
    assert moved.status_code == 303 and "id=s2" in moved.headers["location"]
    web.post("/run/0/review", data={"id": "s3", "decision": "edit", "csrf": csrf, "reasoning": "10 / 2 = 5.",
                                    "summary": "**5**"})
    web.post("/run/0/review", data={"id": "s4", "decision": "accept", "csrf": csrf, "note": "gold is wrong"})
    _, rows = run_query(run, "SELECT sample_id, decision, note, reasoning FROM reviews ORDER BY seq")
    assert rows == [("s1", "reject", "sloppy", None), ("s3", "edit", None, "10 / 2 = 5."), ("s4", "accept", "gold is wrong", None)]
    _, accepted = run_query(run, "SELECT id, reasoning, summary FROM accepted ORDER BY id")
    assert accepted == [("s3", "10 / 2 = 5.", "**5**"), ("s4", "Seven minus two.", "The answer is 4."),
                        ("s5", "Six plus one.", "The answer is 7.")]
    _, original = run_query(run, "SELECT reasoning FROM samples WHERE id = 's3'")
    assert original == [("Half of ten is five.",)]  # the run keeps the original text

    out = tmp_path / "export"
    summary = export(run, out, style="think")
    rows = pq.read_table(summary["files"][0]).to_pylist()
    assert {r["id"]: r["text"] for r in rows}["s3"] == "<think>\n10 / 2 = 5.\n</think>\n\n**5**"
    assert sorted(r["id"] for r in rows) == ["s3", "s4", "s5"]
    card = (out / "README.md").read_text()
    assert "Reviewed by hand" in card and "3 rows: 1 accepted,\n1 rejected, 1 edited" in card


def test_latest_review_wins_and_mix_honours_reviews(run: Path, tmp_path: Path):
    append_review(run, "s5", "reject", note="first look")
    append_review(run, "s5", "accept", note="second look")
    append_review(run, "s1", "reject")
    append_review(run, "s3", "edit", summary="Five.")
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(f"name: reviewed\nseed: 0\nsources:\n  - name: math\n    path: {run}\n")
    mix(recipe, tmp_path / "mixed")
    _, kept = run_query(tmp_path / "mixed", "SELECT id, summary FROM accepted ORDER BY id")
    assert kept == [("s3", "Five."), ("s5", "The answer is 7.")]
    web = client(tmp_path / "mixed")  # a mix folder opens like any run
    assert "rows in" in web.get("/run/0").text and "Five." in web.get("/run/0/sample", params={"id": "s3"}).text


def test_sql_page_reaches_only_the_run(run: Path, tmp_path: Path):
    web = client(run)
    ok = web.get("/run/0/sql", params={"q": "SELECT count(*) AS n FROM samples"}).text
    assert "<td class=\"clip\">5</td>" in ok
    secret = tmp_path / "secret.csv"
    secret.write_text("token\nhunter2\n")
    for sql in (f"SELECT * FROM read_csv('{secret}')", f"COPY samples TO '{run}/samples/evil.parquet'",
                "SELECT * FROM read_text('/etc/passwd')", "SET enable_external_access=true",
                f"ATTACH '{tmp_path}/x.db'"):
        page = web.get("/run/0/sql", params={"q": sql}).text
        assert 'class="error"' in page and "hunter2" not in page and "root:" not in page, sql
    assert not (run / "samples" / "evil.parquet").exists() and not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("path", ["/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                                  "/static/..%2f..%2f..%2fetc%2fpasswd", "/run/0/../../../etc/passwd",
                                  "/run/0/sample?id=../../manifest.json", "/run/1", "/run/-1",
                                  "/static/%2fetc%2fpasswd", "//etc/passwd"])
def test_no_request_path_reaches_files_outside_the_runs(run: Path, path: str):
    response = client(run).get(path)
    assert response.status_code in (302, 404) and "root:" not in response.text


def test_token_required_off_loopback(run: Path):
    web = client(run, token="s3cret")
    assert web.get("/run/0").status_code == 401
    assert web.get("/run/0?token=wrong").status_code == 401
    entered = web.get("/run/0?token=s3cret")
    assert entered.status_code == 302 and "cotforge_token" in entered.headers["set-cookie"]
    assert web.get("/run/0").status_code == 200  # the cookie carries it from then on


def test_untrusted_host_header_is_refused(run: Path):
    web = TestClient(ViewApp([run]).asgi(allowed_hosts=["127.0.0.1", "localhost"]), base_url="http://evil.example")
    assert web.get("/run/0").status_code == 400  # DNS rebinding: a foreign name pointing at 127.0.0.1


def test_compare_two_runs(run: Path, tmp_path: Path, cli):
    rows = [dict(row) for row in ROWS]
    rows[3]["gold"] = "4"  # s4 now passes
    rows[0]["gold"] = "5"  # s1 now fails
    write_jsonl(tmp_path / "b.jsonl", rows)
    cli("filter", tmp_path / "b.jsonl", "--out", tmp_path / "b", "--checks", "format,answer", "--jobs", "0", check=True)
    page = client(run, tmp_path / "b").get("/compare").text
    assert re.search(r"<b>2</b>changed verdict", page)
    assert "<td>s1</td>" in page and "<td>s4</td>" in page and "<td>s2</td>" not in page


def test_report_is_self_contained(run: Path, tmp_path: Path, cli):
    append_review(run, "s3", "edit", summary="Edited five.")
    out = tmp_path / "report.html"
    result = cli("report", run, "--out", out, check=True)
    # 3 accepted and 2 rejected in the run, up to 5 of each shown: every trace is in the report
    assert "3 accepted and 2 rejected traces" in result.stdout
    html = out.read_text()
    assert "<script" not in html  # no script at all, not even the model's
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html  # s2's reasoning is shown, escaped
    assert "Edited five." in html  # the review's edit is what the report shows
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing from the network
    assert "data:image/png;base64," in html and "Content-Security-Policy" in html
    assert "Funnel" in html and "Accepted traces" in html and "Rejected traces" in html
    assert '"Segoe UI"' in html  # the inline stylesheet is the package's own, not HTML-escaped


def test_view_refuses_a_folder_that_is_not_a_run(tmp_path: Path, cli):
    result = cli("view", tmp_path, "--port", "0")
    assert result.returncode == 1 and "not a cotforge run folder" in result.stderr and "Traceback" not in result.stderr
