"""`export`: a run's (or mix's) accepted rows as a Hugging Face dataset folder, and `push`.

```
OUT/data/train-00000-of-00002.parquet   formatted rows (`messages`, or `prompt` + `text`)
OUT/README.md                           data card: YAML front matter + funnel, counts, lengths
OUT/assets/*.png                        the card's plots
```
`datasets.load_dataset(OUT, split="train")` loads it as is (the front matter's `configs` names the
shards). Rows stream from DuckDB in Arrow batches; each shard is published with an atomic rename.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa

from cotforge import __version__
from cotforge.datacard import (
    COLUMN_DOCS,
    STYLE_DOCS,
    collect,
    front_matter,
    funnel_rows,
    render_card,
    render_plots,
)
from cotforge.formatters import STYLES, format_sample
from cotforge.io.atomic import atomic_write_bytes, atomic_write_table, check_writable
from cotforge.errors import CotforgeError
from cotforge.io.lock import FolderLock, is_lock_file
from cotforge.io.rundir import RunDir
from cotforge.query import connect

# Besides the formatted text: ids, and the prompt fields a check or a reward reads (so an exported set
# can be re-checked or used for RL as it is).
KEEP = ("id", "prompt_id", "source", "domain", "language", "gold", "answer_type", "tests")
_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
_MESSAGE_REASONING = pa.struct([("role", pa.string()), ("content", pa.string()),
                                ("reasoning_content", pa.string())])


def output_schema(style: str, reasoning_field: bool = False) -> pa.Schema:
    fields = [pa.field(name, pa.string()) for name in KEEP]
    if style == "messages":
        return pa.schema([*fields, pa.field("messages", pa.list_(_MESSAGE_REASONING if reasoning_field
                                                                 else _MESSAGE))])
    return pa.schema([*fields, pa.field("prompt", pa.string()), pa.field("text", pa.string())])


def _record(sample: dict, style: str, options: dict) -> dict:
    record = {name: sample.get(name) for name in KEEP}
    if style != "messages":
        record["prompt"] = sample.get("prompt")
    record.update(format_sample(sample, style, **options))
    return record


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and any(not is_lock_file(p) for p in out.iterdir()):
        if not overwrite:
            raise CotforgeError(f"{out}: folder exists and is not empty; use --overwrite to replace it")
        _remove_outputs(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    check_writable(out)


def export(run_path: str | Path, out: str | Path, style: str = "messages", shard_rows: int = 100_000,
           overwrite: bool = False, license: str = "other", allow_partial: bool = False, **style_options) -> dict:
    """Write the dataset folder; returns {rows, shards, files}. `style_options` go to the formatter.

    An unfinished run (killed or interrupted: its manifest says `running`) is refused unless
    `allow_partial`, which exports the rows committed so far and says so in the data card."""
    if style not in STYLES:
        raise CotforgeError(f"--style {style!r}: choose one of {', '.join(STYLES)}")
    if shard_rows < 1:
        raise CotforgeError("--shard-rows must be at least 1")
    if style_options.get("reasoning_field") and style != "messages":
        raise CotforgeError(f"--reasoning-field puts the reasoning in the messages' `reasoning_content`; "
                            f"it needs --style messages, not {style}")
    source = RunDir(run_path)
    manifest = source.manifest()
    # the card's partial notes: this run unfinished (refused unless allow_partial), then the marks it
    # carries from unfinished runs it was made from (filter, rewrite, mix ... with --allow-partial)
    notes = []
    if source.require_finished("export", allow_partial):
        notes.append(f"Exported from the unfinished {manifest.get('command')} run `{Path(run_path).name}` "
                     f"(status {manifest.get('status')}) with --allow-partial: only the rows it had committed by then.")
    manifest = {**manifest, "partial": notes + source.partial_marks()}
    out = Path(out)
    with FolderLock.acquire(out, "export"):
        return _export_locked(run_path, out, manifest, style, shard_rows, overwrite, license, style_options)


def _export_locked(run_path: str | Path, out: Path, manifest: dict, style: str, shard_rows: int, overwrite: bool,
                   license: str, style_options: dict) -> dict:
    _prepare(out, overwrite)
    try:
        return _write_dataset(run_path, out, manifest, style, shard_rows, license, style_options)
    except BaseException:
        _remove_outputs(out)  # a failed export leaves no half dataset to refuse the rerun with
        raise


def _remove_outputs(out: Path) -> None:
    for name in ("data", "assets", "README.md"):
        target = out / name
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)


def _write_dataset(run_path: str | Path, out: Path, manifest: dict, style: str, shard_rows: int, license: str,
                   style_options: dict) -> dict:
    schema = output_schema(style, bool(style_options.get("reasoning_field")))
    con = connect(run_path)
    rows = con.execute("SELECT count(*) FROM accepted").fetchall()[0][0]
    shards = max(1, -(-rows // shard_rows))
    files, buffer, index, num_bytes = [], [], 0, 0

    def flush() -> None:
        nonlocal buffer, index, num_bytes
        table = pa.Table.from_pylist(buffer, schema=schema)
        path = out / "data" / f"train-{index:05d}-of-{shards:05d}.parquet"
        atomic_write_table(path, table)
        files.append(path)
        num_bytes += table.nbytes
        buffer, index = [], index + 1

    for batch in con.sql("SELECT * FROM accepted").to_arrow_reader(min(shard_rows, 8192)):
        for sample in batch.to_pylist():
            buffer.append(_record(sample, style, style_options))
            if len(buffer) == shard_rows:
                flush()
    con.close()
    if buffer or index == 0:
        flush()
    _write_card(run_path, out, manifest, style, schema, rows, num_bytes, license)
    return {"rows": rows, "shards": len(files), "files": [str(f) for f in files]}


def _write_card(run_path: str | Path, out: Path, manifest: dict, style: str, schema: pa.Schema, rows: int,
                num_bytes: int, license: str) -> None:
    stats = collect(run_path)
    funnel = funnel_rows(manifest)
    plots = render_plots(stats, funnel, out / "assets")
    report = manifest.get("mix") or {}
    recipe = (manifest.get("config") or {}).get("recipe")
    name = report.get("recipe") or Path(run_path).resolve().name
    context = {
        "front_matter": front_matter(schema, rows, num_bytes, stats["languages"], license, name),
        "title": name, "run_path": Path(run_path).name, "command": manifest.get("command"),
        "cotforge_version": __version__, "rows": f"{rows:,}", "style": style, "style_doc": STYLE_DOCS[style],
        "load_name": out.name, "columns": [(n, COLUMN_DOCS.get(n, "")) for n in schema.names],
        "recipe": _yaml(recipe) if recipe else None, "recipe_name": name, "seed": report.get("seed"),
        "shortfalls": report.get("shortfalls") or [], "funnel": funnel, "plots": plots,
        "upstream_funnels": [(source, funnel_rows({"funnel": info["upstream_funnel"]}))
                             for source, info in (report.get("sources") or {}).items() if info.get("upstream_funnel")],
        "by_source_domain": stats["by_source_domain"], "lengths": stats["lengths"],
        "non_reasoning": stats["non_reasoning"], "reviewed": stats["reviewed"],
        "reasoning_rows": f"{rows - stats['non_reasoning']:,}",  # the card says what its rows hold
        "no_reasoning": rows > 0 and stats["non_reasoning"] == rows,
        "partial": [*manifest.get("partial", []), *_partial_sources(report)],
    }
    atomic_write_bytes(out / "README.md", render_card(context).encode("utf-8"))


def _partial_sources(report: dict) -> list[str]:
    return [f"Mix source `{name}` was an unfinished run taken with --allow-partial ({info['partial']})."
            for name, info in (report.get("sources") or {}).items() if info.get("partial")]


def _yaml(value) -> str:
    import yaml

    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True).rstrip()


def push(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create the dataset repo (if needed) and upload the folder; returns the repo URL.

    The endpoint comes from `HF_ENDPOINT` (huggingface_hub reads it), the token from `HF_TOKEN` or
    the `hf auth login` cache.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                      commit_message=f"cotforge {__version__} export")
    return str(url)
