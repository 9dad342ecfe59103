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

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

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
from cotforge.io.atomic import atomic_write_bytes, check_writable
from cotforge.errors import CotforgeError
from cotforge.io.lock import FolderLock, is_lock_file
from cotforge.io.rundir import RunDir
from cotforge.query import connect

# Besides the formatted text: ids, and the prompt fields a check or a reward reads (so an exported set
# can be re-checked or used for RL as it is).
KEEP = ("id", "prompt_id", "source", "domain", "language", "gold", "answer_type", "tests")
MAX_SHARD_BYTES = 500 * 1000 ** 2  # the Hub's usual Parquet shard size; datasets streams them well
BATCH_ROWS = 2048  # rows read per batch, and the most per row group
FIRST_GROUP_ROWS = 64
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


def export(run_path: str | Path, out: str | Path, style: str = "messages", shard_rows: int | None = None,
           overwrite: bool = False, license: str = "other", allow_partial: bool = False,
           max_shard_bytes: int = MAX_SHARD_BYTES, **style_options) -> dict:
    """Write the dataset folder; returns {rows, shards, files, bytes}. `style_options` go to the formatter.

    Shards hold at most `max_shard_bytes` of Parquet (about; see ShardWriter) and, if given,
    `shard_rows` rows.

    An unfinished run (killed or interrupted: its manifest says `running`) is refused unless
    `allow_partial`, which exports the rows committed so far and says so in the data card."""
    if style not in STYLES:
        raise CotforgeError(f"--style {style!r}: choose one of {', '.join(STYLES)}")
    if shard_rows is not None and shard_rows < 1:
        raise CotforgeError("--shard-rows must be at least 1")
    if max_shard_bytes < 1:
        raise CotforgeError("--max-shard-size must be at least 1 byte")
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
        return _export_locked(run_path, out, manifest, style, shard_rows, max_shard_bytes, overwrite, license,
                              style_options)


def _export_locked(run_path: str | Path, out: Path, manifest: dict, style: str, shard_rows: int | None,
                   max_shard_bytes: int, overwrite: bool, license: str, style_options: dict) -> dict:
    _prepare(out, overwrite)
    try:
        return _write_dataset(run_path, out, manifest, style, shard_rows, max_shard_bytes, license, style_options)
    except BaseException:
        _remove_outputs(out)  # a failed export leaves no half dataset to refuse the rerun with
        raise


def _remove_outputs(out: Path) -> None:
    for name in ("data", "assets", "README.md"):
        target = out / name
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)


class ShardWriter:
    """`data/train-XXXXX-of-NNNNN.parquet` shards of at most `max_bytes` (and `max_rows`) each, streamed.

    Rows arrive in batches, written as row groups of at most a quarter of the bound (rows per group
    from the bytes per row the groups so far took; the first is small, to measure). Before a batch is written, the shard is closed
    if the batch (estimated as large as the last one, compressed) would take it past `max_bytes`, so a
    shard ends within one row group of the bound (over it only when one row group alone is larger).
    The shard count is known only at the end: shards are written under temporary names, fsynced, then
    renamed to their final `-of-N` names."""

    def __init__(self, folder: Path, schema: pa.Schema, max_bytes: int, max_rows: int | None = None):
        self.folder, self.schema, self.max_bytes, self.max_rows = folder, schema, max_bytes, max_rows
        self.temps: list[Path] = []
        self.num_bytes = 0  # uncompressed Arrow bytes of every row (the card's `num_bytes`)
        self._writer: pq.ParquetWriter | None = None
        self._sink = None
        self._rows = 0
        self._last_group = 0
        self._group_rows = FIRST_GROUP_ROWS  # a small first row group measures the bytes per row

    def _open(self) -> None:
        self.close_shard()
        path = self.folder / f".shard-{len(self.temps):05d}.parquet.tmp"
        self.temps.append(path)
        self._sink = open(path, "wb")
        self._writer = pq.ParquetWriter(self._sink, self.schema, compression="zstd")
        self._rows = 0

    def close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.flush()
            os.fsync(self._sink.fileno())
            self._sink.close()
            self._writer = self._sink = None

    def write(self, records: list[dict]) -> None:
        while records:
            if self._writer is None:
                self._open()
            if self._rows and self._sink.tell() + self._last_group > self.max_bytes:
                self._open()
            room = len(records) if self.max_rows is None else self.max_rows - self._rows
            if room <= 0:
                self._open()
                continue
            room = min(room, self._group_rows or room)
            table = pa.Table.from_pylist(records[:room], schema=self.schema)
            before = self._sink.tell()
            self._writer.write_table(table)
            self._last_group = self._sink.tell() - before
            # rows per row group from the bytes per row seen: about a quarter of the bound at most
            self._group_rows = max(1, int(table.num_rows * self.max_bytes / 4 / max(1, self._last_group)))
            self._rows += table.num_rows
            self.num_bytes += table.nbytes
            records = records[room:]

    def finish(self) -> list[Path]:
        """Publish the shards under their final names (one empty shard for no rows); returns them."""
        if not self.temps:
            self._open()
        self.close_shard()
        total = len(self.temps)
        files = [self.folder / f"train-{i:05d}-of-{total:05d}.parquet" for i in range(total)]
        for temp, final in zip(self.temps, files):
            os.replace(temp, final)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return files


def _write_dataset(run_path: str | Path, out: Path, manifest: dict, style: str, shard_rows: int | None,
                   max_shard_bytes: int, license: str, style_options: dict) -> dict:
    schema = output_schema(style, bool(style_options.get("reasoning_field")))
    con = connect(run_path)
    rows = con.execute("SELECT count(*) FROM accepted").fetchall()[0][0]
    shards = ShardWriter(out / "data", schema, max_shard_bytes, shard_rows)
    batch_rows = min(shard_rows or BATCH_ROWS, BATCH_ROWS)
    for batch in con.sql("SELECT * FROM accepted").to_arrow_reader(batch_rows):
        shards.write([_record(sample, style, style_options) for sample in batch.to_pylist()])
    con.close()
    files = shards.finish()
    _write_card(run_path, out, manifest, style, schema, rows, shards.num_bytes, license)
    return {"rows": rows, "shards": len(files), "files": [str(f) for f in files],
            "bytes": sum(f.stat().st_size for f in files)}


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
    """Create the dataset repo (if needed) and upload the folder, resumably; returns the repo URL.

    huggingface_hub's large-folder upload does it: `upload_large_folder` where the installed
    huggingface_hub has it (0.25 to 1.x: it records progress under FOLDER/.cache/huggingface/ and a
    rerun uploads only what is missing), else `upload_folder`, which from 2.x is that same pipeline
    (multi-commit, a rerun skips committed files and deduplicated data; needs hf_xet, without which it
    is one commit). An interrupted push is one line saying to rerun the same command.
    The endpoint comes from `HF_ENDPOINT` (huggingface_hub reads it), the token from `HF_TOKEN` or
    the `hf auth login` cache.
    """
    from huggingface_hub import HfApi, errors

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if hasattr(api, "upload_large_folder"):
            api.upload_large_folder(repo_id=repo_id, folder_path=str(folder), repo_type="dataset", private=private,
                                    print_report=False)
        else:
            api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                              commit_message=f"cotforge {__version__} export", ignore_patterns=[".cache/**"])
    except errors.HfHubHTTPError as err:
        first = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise CotforgeError(f"push to {repo_id}: the Hub answered: {first}; rerun the same command to resume "
                            f"(files already committed are not sent again)") from None
    return str(url)
