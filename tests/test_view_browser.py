"""`cotforge view` in a real browser: Debian's chromium, headless, driven by Playwright (pointed at
the system browser; Playwright's own browser download is never used). The server is the real
command on a loopback port. Set COTFORGE_SCREENSHOTS=DIR to keep screenshots of the main pages."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import cotforge_process
from test_view import make_run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)", allow_module_level=True)
pytestmark = pytest.mark.browser
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path, cli):
    run = make_run(tmp_path / "data", cli)
    port = _free_port()
    process = cotforge_process("view", run, "--port", port, "--reviewer", "browser-test", stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"cotforge view did not start: {process.stdout.read()}") from None
            time.sleep(0.2)
    yield run, f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def page(tmp_path: Path):
    sync_api = pytest.importorskip("playwright.sync_api")  # here: ~0.5 s of every worker's collection otherwise
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900})
        yield context.new_page()
        context.close()


def _shot(page, name: str) -> None:
    folder = os.environ.get("COTFORGE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_review_in_the_browser(server, page, tmp_path: Path, cli):
    run, base = server
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    page.goto(base + "/")
    assert page.url == base + "/run/0"  # one run: straight to its overview
    _shot(page, "overview")
    page.get_by_role("link", name="answer N != gold N (number)").click()  # a rejection reason...
    page.wait_for_url("**/samples?check=answer*")
    assert page.locator("table.samples tr[data-href]").count() == 2
    _shot(page, "samples")
    page.get_by_role("link", name="s2").first.click()  # ...to one of its samples
    page.wait_for_url("**/sample?id=s2*")

    # The sample holding <script> and an onerror image shows them as text; nothing ran.
    assert "<script>window.__pwned = 1</script>" in page.locator("#reasoning").inner_text()
    assert page.evaluate("window.__pwned") is None and not dialogs
    assert page.locator("#reasoning script, #reasoning img").count() == 0
    _shot(page, "sample")

    page.fill("#note", "says 6, gold 9")
    page.locator("#note").press("Escape")
    page.keyboard.press("r")  # reject from the keyboard; the page moves to the next sample of the list
    page.wait_for_url("**/sample?id=s4*")
    page.keyboard.press("k")  # back to s2: the review shows
    page.wait_for_url("**/sample?id=s2*")
    assert "reviewed: reject" in page.locator("#review-state").inner_text()

    page.goto(base + "/run/0/sample?id=s1")
    assert page.locator("math mfrac").count() >= 1  # \frac rendered as MathML by the browser
    page.keyboard.press("e")
    page.locator("textarea[name=summary]").fill("The answer is $4$, since $2+2=4$.")
    page.fill("#note", "clearer summary")
    page.click("#save-edit")
    page.wait_for_load_state()
    page.reload()
    page.goto(base + "/run/0/sample?id=s1")
    assert "reviewed: edit" in page.locator("#review-state").inner_text()
    edited = page.locator("section.edited").last
    assert "The answer is" in edited.inner_text() and edited.locator("math").count() == 2
    _shot(page, "sample-edited")
    page.goto(base + "/run/0/prompts?sort=pass_rate&dir=asc")
    _shot(page, "prompts")
    page.goto(base + "/run/0/sql?q=SELECT+*+FROM+reviews")
    assert page.locator("table.sqlresult tr").count() == 3
    _shot(page, "sql")
    assert all(url.startswith(base) for url in requests), [u for u in requests if not u.startswith(base)]

    table = cli("query", run, "SELECT sample_id, decision, note, reviewer FROM reviews ORDER BY seq", "--format",
                "csv", check=True).stdout.splitlines()
    assert table == ["sample_id,decision,note,reviewer", "s2,reject,\"says 6, gold 9\",browser-test",
                     "s1,edit,clearer summary,browser-test"]
    exported = cli("export", run, "--out", tmp_path / "export", "--style", "think", check=True)
    assert exported.stdout.splitlines()[-1] == f"look at the run and review samples: cotforge view {run}"
    rows = {r["id"]: r["text"] for f in sorted((tmp_path / "export" / "data").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()}
    assert "s2" not in rows and rows["s1"].endswith("The answer is $4$, since $2+2=4$.")
    assert sorted(rows) == ["s1", "s3", "s5"]


def test_off_loopback_the_server_wants_its_token(tmp_path: Path, cli):
    """--host other than loopback: a token is made up and printed; requests without it get 401."""
    import re
    import urllib.error
    import urllib.request

    run = make_run(tmp_path / "data", cli)
    port = _free_port()
    process = cotforge_process("view", run, "--host", "0.0.0.0", "--port", port, stderr=subprocess.STDOUT)
    try:
        line = process.stdout.readline()
        token = re.search(r"\?token=([\w-]+)", line).group(1)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/run/0", timeout=5)
                raise AssertionError("served a page without the token")
            except urllib.error.HTTPError as err:
                assert err.code == 401
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline and process.poll() is None, line
                time.sleep(0.2)
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        page = opener.open(f"http://127.0.0.1:{port}/run/0?token={token}", timeout=30).read().decode()
        assert "Why samples were rejected" in page  # redirected with the cookie set, then served
    finally:
        process.terminate()
        process.wait(timeout=30)
