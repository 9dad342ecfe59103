"""`cotforge report RUN --out report.html`: one self-contained HTML file to attach or share.

Everything is inline: the stylesheet, the data card's plots as data: PNGs, math as MathML (no
script at all). A Content-Security-Policy meta tag forbids any load, so the file opens the same
offline, in a mail client's preview or on a code host. Model text is escaped as on the server.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from markupsafe import Markup

from cotforge.datacard import collect, funnel_rows, render_plots
from cotforge.io.atomic import atomic_write_bytes
from cotforge.io.rundir import RunDir
from cotforge.view.app import STATIC, templates
from cotforge.view.data import FIRST_FAIL, RunView

REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
COLUMNS = "id, prompt, reasoning, summary, gold, answer, verdicts, completion_tokens"


def _traces(view: RunView, where: str, count: int, seed: int) -> list[dict]:
    """`count` samples of the reviewed verdict `where`, a fixed pseudo-random pick (same file, same seed)."""
    with view.connect() as con:
        result = con.execute(f"""SELECT {COLUMNS}, review, {FIRST_FAIL}.check AS failed_check,
                {FIRST_FAIL}.reason AS failed_reason,
                CASE WHEN review = 'edit' THEN coalesce(edited_reasoning, reasoning) ELSE reasoning END AS shown_reasoning,
                CASE WHEN review = 'edit' THEN coalesce(edited_summary, summary) ELSE summary END AS shown_summary
            FROM listed WHERE {where} ORDER BY hash(concat(?, id)) LIMIT {int(count)}""", [str(seed)])
        columns = [d[0] for d in result.description]
        return [dict(zip(columns, row)) for row in result.fetchall()]


def build_report(run_path: str | Path, out: str | Path, samples: int = 5, seed: int = 0) -> dict:
    """Write the report; returns {path, bytes, accepted_shown, rejected_shown}."""
    view = RunView(Path(run_path).resolve(), 0)
    manifest = RunDir(run_path).manifest()
    overview = view.overview()
    with tempfile.TemporaryDirectory() as folder:
        stats = collect(run_path)
        paths = render_plots(stats, funnel_rows(manifest), Path(folder) / "assets")
        plots = {name: "data:image/png;base64," + base64.b64encode((Path(folder) / rel).read_bytes()).decode()
                 for name, rel in paths.items()}
    accepted = _traces(view, "final_accepted", samples, seed)
    rejected = _traces(view, "NOT final_accepted", samples, seed)
    html = templates().get_template("report.html").render(
        run=view, o=overview, plots=plots, accepted=accepted, rejected=rejected, csp=REPORT_CSP,
        css=Markup((STATIC / "view.css").read_text()), lengths=stats["lengths"])  # our own file: not escaped
    out = Path(out)
    atomic_write_bytes(out, html.encode("utf-8"))
    return {"path": str(out), "bytes": out.stat().st_size, "accepted_shown": len(accepted),
            "rejected_shown": len(rejected)}
