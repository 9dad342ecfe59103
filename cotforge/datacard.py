"""The data card: README.md with YAML front matter, rendered from `data_cards/template.md`.

Everything on the card is measured from the run folder: the funnel from its verdicts (or the mix
report), counts by source and domain, length statistics, and three PNG plots (matplotlib, Agg).
Statistics are DuckDB aggregates over the committed shards (counts, quantiles, a binned histogram),
computed as it scans them: a card for millions of rows never holds their texts or lengths in Python.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import yaml

from cotforge.query import connect
from cotforge.resources import shipped_folder

COLUMN_DOCS = {
    "id": "sample id", "prompt_id": "id of the prompt (several samples may share one)",
    "source": "mix source name (or the input's source)", "domain": "math, code, science, logic, general, ...",
    "language": "expected answer language", "prompt": "the prompt text",
    "gold": "reference answer the sample was verified against (null: none)",
    "answer_type": "math | choice | numeric | code | text (null: inferred from domain)",
    "tests": "JSON code tests the sample was run against (null: none)",
    "text": "the formatted assistant output (reasoning + summary) in this card's style",
    "messages": "chat turns: the prompt's user turn(s), then the assistant turn",
}
STYLE_DOCS = {
    "messages": "TRL conversational format; the assistant turn is `<think>\\nreasoning\\n</think>\\n\\nsummary` "
                "(or the reasoning in `reasoning_content`).",
    "special-token": "`text` is `|special_token|reasoning|special_token|summary` (R1's readable pattern); "
                     "`prompt` is beside it (rename `text` to `completion` for TRL's prompt-completion format).",
    "think": "`text` is `<think>\\nreasoning\\n</think>\\n\\nsummary`, beside `prompt`.",
    "r1-zero": "`text` is `<think>reasoning</think>` then `<answer>summary</answer>`, beside `prompt`.",
}


def size_category(rows: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M")]
    return next((label for bound, label in bounds if rows < bound), "10M<n<100M")


def funnel_rows(manifest: dict) -> list[dict]:
    """Funnel rows as (stage, rejected, remaining), from the manifest a filter or mix wrote."""
    steps = []
    for step in manifest.get("funnel") or []:
        if "remaining" in step:
            steps.append({"stage": step["stage"], "rejected": step["rejected"], "remaining": step["remaining"]})
        else:
            steps.append({"stage": step["stage"], "rejected": "" if step["stage"] == "rows in" else step["rows"],
                          "remaining": step["rows"] if step["stage"] == "rows in" else ""})
    return steps


_EMPTY_STATS = {k: 0 for k in ("min", "median", "p90", "max", "mean")}
HISTOGRAM_BINS = 50


def _length_stats(con, expression: str, where: str) -> dict:
    """min / median / p90 / max / mean of `expression` over accepted rows, aggregated by DuckDB as it
    scans the shards (the table is never loaded; median and p90 interpolate as numpy's do)."""
    row = con.execute(f"""SELECT count(*), min(v), quantile_cont(v, 0.5), quantile_cont(v, 0.9), max(v), avg(v)
                          FROM (SELECT {expression} AS v FROM accepted) WHERE {where}""").fetchone()
    if not row[0]:
        return dict(_EMPTY_STATS)
    return {"min": int(row[1]), "median": int(row[2]), "p90": int(row[3]), "max": int(row[4]), "mean": int(row[5])}


def _histogram(con, expression: str, where: str, bins: int = HISTOGRAM_BINS) -> tuple[list[float], list[int]]:
    """Bin edges and counts of `expression` over accepted rows, counted by DuckDB in one pass."""
    low, high, distinct = con.execute(f"SELECT min(v), max(v), approx_count_distinct(v) FROM "
                                      f"(SELECT {expression} AS v FROM accepted) WHERE {where}").fetchone()
    if low is None:
        return [], []
    bins = max(1, min(bins, int(distinct or 1)))
    width = (high - low) / bins or 1
    counts = dict(con.execute(f"""SELECT least(floor((v - {low}) / {width})::BIGINT, {bins - 1}) AS b, count(*)
                                  FROM (SELECT {expression} AS v FROM accepted) WHERE {where} GROUP BY b""").fetchall())
    return [low + i * width for i in range(bins + 1)], [counts.get(i, 0) for i in range(bins)]


def _unrecorded_languages(con, sample_rows: int = 2000) -> set[str]:
    """Languages of accepted rows that carry none (imported, or judged without the language check),
    detected on a fixed sample of them, so the card lists what the data holds, not a default."""
    rows = con.execute(f"""SELECT prompt, summary FROM (SELECT prompt, summary FROM accepted WHERE language IS NULL)
                           USING SAMPLE {sample_rows} ROWS (reservoir, 7)""").fetchall()
    if not rows:
        return set()
    from cotforge.checks.language import detect_language

    found: dict[str, int] = {}
    for prompt, summary in rows:
        lang = detect_language(f"{prompt or ''}\n{summary or ''}")
        if lang:
            found[lang] = found.get(lang, 0) + 1
    # A language needs a few rows to be listed: one misdetected short prompt should not add a tag.
    return {lang for lang, count in found.items() if count >= max(2, len(rows) // 100)}


def collect(run_path: str | Path) -> dict:
    """Counts, lengths and rates of a run (accepted rows are the exported ones)."""
    con = connect(run_path)
    by_source_domain = con.execute("SELECT coalesce(source, ''), coalesce(domain, ''), count(*) FROM accepted "
                                   "GROUP BY ALL ORDER BY 3 DESC, 1, 2").fetchall()
    rates = con.execute("SELECT coalesce(domain, ''), count(*), count(*) FILTER (WHERE accepted) FROM samples "
                        "GROUP BY ALL ORDER BY 1").fetchall()
    reasoning, summary = "length(coalesce(reasoning, ''))", "length(coalesce(summary, ''))"
    lengths = [("reasoning (reasoning rows)", _length_stats(con, reasoning, "v > 0")),
               ("summary", _length_stats(con, summary, "true"))]
    histogram = _histogram(con, reasoning, "v > 0")
    non_reasoning = con.execute(f"SELECT count(*) FROM accepted WHERE {reasoning} = 0").fetchone()[0]
    languages = [lang for (lang,) in con.execute(
        "SELECT DISTINCT language FROM accepted WHERE language IS NOT NULL ORDER BY 1").fetchall()]
    languages = sorted({*languages, *_unrecorded_languages(con)})
    reviewed = _reviewed_counts(con)
    con.close()
    return {"by_source_domain": by_source_domain,
            "accept_rate": [(domain, total, kept) for domain, total, kept in rates],
            "reasoning_histogram": histogram, "lengths": lengths,
            "non_reasoning": int(non_reasoning), "languages": languages or ["en"], "reviewed": reviewed}


def _reviewed_counts(con) -> dict | None:
    """Rows a person decided on (latest decision per sample), by decision; None when nobody reviewed."""
    if not con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'review_latest'").fetchone()[0]:
        return None
    counts = dict(con.execute("SELECT r.decision, count(*) FROM review_latest r JOIN samples s ON s.id = r.sample_id "
                              "GROUP BY 1").fetchall())
    return {"rows": sum(counts.values()), **{d: counts.get(d, 0) for d in ("accept", "reject", "edit")}}


def render_plots(stats: dict, funnel: list[dict], folder: Path) -> dict[str, str]:
    """Three PNGs under `folder`; returns their paths relative to the card."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"funnel": "assets/funnel.png", "reasoning_length": "assets/reasoning_length.png",
             "accept_rate": "assets/accept_rate_by_domain.png"}
    stages = [s for s in funnel if isinstance(s["rejected"], int)]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * max(len(stages), 1)))
    ax.barh([s["stage"] for s in stages][::-1], [s["rejected"] for s in stages][::-1], color="#c0504d")
    for i, s in enumerate(stages[::-1]):
        ax.text(s["rejected"], i, f" {s['rejected']:,}", va="center", fontsize=8)
    ax.set_xlabel("rows rejected (first failing stage)")
    ax.set_title("Funnel")
    _save(fig, folder.parent / paths["funnel"])

    fig, ax = plt.subplots(figsize=(7, 3.5))
    edges, counts = stats["reasoning_histogram"]
    if counts:  # counted by DuckDB (datacard._histogram): the plot never holds the lengths themselves
        ax.stairs(counts, edges, fill=True, color="#4f81bd")
    ax.set_xlabel("reasoning length (characters)")
    ax.set_ylabel("rows")
    ax.set_title(f"Reasoning length ({sum(counts):,} rows with reasoning)")
    _save(fig, folder.parent / paths["reasoning_length"])

    rates = stats["accept_rate"]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * max(len(rates), 1)))
    ax.barh([d or "(none)" for d, _, _ in rates][::-1], [kept / total for _, total, kept in rates][::-1],
            color="#9bbb59")
    for i, (_, total, kept) in enumerate(rates[::-1]):
        ax.text(kept / total, i, f" {kept:,}/{total:,}", va="center", fontsize=8)
    ax.set_xlim(0, 1.25)
    ax.set_xlabel("accepted / considered")
    ax.set_title("Accept rate by domain")
    _save(fig, folder.parent / paths["accept_rate"])
    return paths


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)


def front_matter(schema: pa.Schema, rows: int, num_bytes: int, languages: list[str], license: str,
                 pretty_name: str) -> str:
    from datasets import Features

    meta = {
        "pretty_name": pretty_name, "license": license, "language": languages,
        "task_categories": ["text-generation"], "tags": ["reasoning", "sft", "deepseek-r1", "cotforge"],
        "size_categories": [size_category(rows)],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
        "dataset_info": {"features": Features.from_arrow_schema(schema)._to_yaml_list(),
                         "splits": [{"name": "train", "num_bytes": num_bytes, "num_examples": rows}]},
    }
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)


def render_card(context: dict, template: str | Path | None = None) -> str:
    from jinja2 import Template

    text = Path(template or shipped_folder("data_cards") / "template.md").read_text(encoding="utf-8")
    return Template(text, keep_trailing_newline=True).render(**context)
