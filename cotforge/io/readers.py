"""Raw row readers for JSONL, Parquet, CSV, `datasets.save_to_disk` folders, cotforge runs and Hub
datasets (`hf://datasets/...`, streamed by `cotforge.io.hub`).

Each reader yields `RawRow`s: a dict, or the `BadRow` that explains why the row could not be read.
Nothing is skipped silently except blank JSONL lines (they are not rows).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cotforge.errors import CotforgeError
from cotforge.io.errors import RAW_KEEP_BYTES, BadRow
from cotforge.io.hub import is_hub, read_hub_rows, with_hub_options

MAX_ROW_BYTES = 32 * 1024 * 1024  # one JSONL line / CSV record
ARROW_BATCH_ROWS = 2048


@dataclass
class RawRow:
    file: str
    line: int
    data: dict | None
    error: BadRow | None = None
    raw: bytes | str | None = None


_SURROGATE_ESCAPE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of an undecodable byte


def _has_surrogate_escape(text: str) -> bool:
    if text.isascii():  # O(1): CPython records it
        return False
    try:
        text.encode("utf-8")  # fails on any surrogate, escapes included
        return False
    except UnicodeEncodeError:
        return _SURROGATE_ESCAPE.search(text) is not None


def _first_surrogate_field(value, path: str = "") -> str | None:
    """Name of the first field whose text holds undecodable bytes (surrogate escapes)."""
    if isinstance(value, str):  # R1 completions run to 100K chars: C-speed tests, not a loop per character
        return path or "<row>" if _has_surrogate_escape(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _first_surrogate_field(key) is not None:
                return path or "<row>"
            found = _first_surrogate_field(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _first_surrogate_field(item, f"{path}[{i}]")
            if found:
                return found
    return None


def _utf8_problem(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"invalid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})"
    return ""


def _starts_with_array(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def read_json_array(path: Path) -> Iterator[RawRow]:
    """A file holding one JSON array of objects; row numbers count its elements from 1."""
    name = str(path)
    try:
        items = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise CotforgeError(f"{name}: invalid UTF-8 at byte {err.start}") from None
    except json.JSONDecodeError as err:
        raise CotforgeError(f"{name}:{err.lineno}: invalid JSON array: {err.msg} at column {err.colno} "
                            f"(a JSON array of objects, or JSONL: one object per line, is expected)") from None
    for number, item in enumerate(items, start=1):
        if isinstance(item, dict):
            yield RawRow(name, number, item, raw=json.dumps(item, ensure_ascii=False))
        else:
            yield RawRow(name, number, None, BadRow(name, number, "<row>", f"array element {number}: expected a "
                                                    f"JSON object, got {type(item).__name__}", repr(item)))


def read_jsonl(path: Path, max_row_bytes: int = MAX_ROW_BYTES) -> Iterator[RawRow]:
    name = str(path)
    if _starts_with_array(path):
        yield from read_json_array(path)
        return
    with open(path, "rb") as handle:
        line_no = 0
        while True:
            raw = handle.readline(max_row_bytes + 1)
            if not raw:
                return
            line_no += 1
            if len(raw) > max_row_bytes and not raw.endswith(b"\n"):
                prefix, size = raw[:RAW_KEEP_BYTES], len(raw)  # keep a bounded prefix for the quarantine
                while raw and not raw.endswith(b"\n"):  # drain the rest of the line unbuffered
                    raw = handle.readline(1 << 20)
                    size += len(raw.rstrip(b"\r\n"))
                yield RawRow(name, line_no, None, BadRow(
                    name, line_no, "<row>", f"row of {size:,} bytes is over the {max_row_bytes:,}-byte limit",
                    prefix, raw_size=size), raw=prefix)
                continue
            if not raw.strip():
                continue
            # A line that is valid UTF-8 and has no \ud.. escape cannot hold a surrogate anywhere in
            # its parsed values: the walk over every value below is skipped (~15% of a prompt's cost).
            try:
                text, clean = raw.decode("utf-8"), b"\\ud" not in raw and b"\\uD" not in raw
            except UnicodeDecodeError:
                text, clean = raw.decode("utf-8", "surrogateescape"), False
            text = text.rstrip("\r\n")
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                yield RawRow(name, line_no, None, BadRow(name, line_no, "<row>", f"invalid JSON: {err.msg} "
                                                          f"at column {err.colno}", raw), raw)
                continue
            if not isinstance(data, dict):
                yield RawRow(name, line_no, None, BadRow(
                    name, line_no, "<row>", f"expected a JSON object, got {type(data).__name__}", raw), raw)
                continue
            bad_field = None if clean else _first_surrogate_field(data)
            if bad_field:
                yield RawRow(name, line_no, None, BadRow(name, line_no, bad_field, _utf8_problem(raw), raw), raw)
                continue
            yield RawRow(name, line_no, data, raw=raw)


def read_csv(path: Path, max_row_bytes: int = MAX_ROW_BYTES) -> Iterator[RawRow]:
    name = str(path)
    csv.field_size_limit(max(max_row_bytes, 1 << 20))
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle)
        start = 2
        while True:
            try:
                data = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield RawRow(name, reader.line_num, None, BadRow(name, reader.line_num, "<row>", f"invalid CSV: {err}"))
                start = reader.line_num + 1
                continue
            line, start = start, reader.line_num + 1
            if None in data:
                yield RawRow(name, line, None, BadRow(name, line, "<row>", "more values than header columns",
                                                      repr(data)))
                continue
            bad_field = _first_surrogate_field(data)
            if bad_field:
                raw = bytes(str(data.get(bad_field, "")), "utf-8", "surrogateescape")
                yield RawRow(name, line, None, BadRow(name, line, bad_field, _utf8_problem(raw), raw), raw)
                continue
            # CSV has no nulls: an empty cell is a missing value.
            yield RawRow(name, line, {k: (v if v != "" else None) for k, v in data.items()})


def _read_batches(name: str, batches: Iterator[pa.RecordBatch]) -> Iterator[RawRow]:
    row_no = 0
    for batch in batches:
        for data in batch.to_pylist():
            row_no += 1
            yield RawRow(name, row_no, data)


def read_parquet(path: Path) -> Iterator[RawRow]:
    parquet = pq.ParquetFile(path)
    yield from _read_batches(str(path), parquet.iter_batches(batch_size=ARROW_BATCH_ROWS))


def _arrow_stream_batches(files: list[Path]) -> Iterator[pa.RecordBatch]:
    for file in files:
        with pa.memory_map(str(file)) as source:
            try:
                reader = pa.ipc.open_stream(source)
            except pa.ArrowInvalid:
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    yield reader.get_batch(i)
                continue
            yield from reader


def read_datasets_folder(path: Path, split: str | None = None) -> Iterator[RawRow]:
    """A folder written by `Dataset.save_to_disk` (or `DatasetDict.save_to_disk`).

    A DatasetDict yields every split in its order (or only `split`), each row with a `split`
    column (kept in the row's metadata), so no split is dropped silently."""
    if (path / "dataset_dict.json").exists():
        splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        if split is not None and split not in splits:
            raise CotforgeError(f"{path}: no split {split!r} (splits: {', '.join(splits)})")
        for name in [split] if split else splits:
            for raw in _read_dataset(path / name):
                raw.data.setdefault("split", name)
                yield raw
        return
    yield from _read_dataset(path)


def _read_dataset(path: Path) -> Iterator[RawRow]:
    state = json.loads((path / "state.json").read_text())
    files = [path / entry["filename"] for entry in state["_data_files"]]
    yield from _read_batches(str(path), _arrow_stream_batches(files))


def is_run_folder(path: str | Path) -> bool:
    if is_hub(path):
        return False
    path = Path(path)
    return path.is_dir() and (path / "manifest.json").exists()


def read_run_samples(path: Path, accepted_only: bool = False) -> Iterator[RawRow]:
    """Sample rows of a cotforge run folder, in shard order."""
    for shard in sorted((path / "samples").glob("part-*.parquet")):
        for raw in read_parquet(shard):
            if not accepted_only or raw.data.get("accepted"):
                yield raw


DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


def data_files(path: Path) -> list[Path]:
    """Input files in `path`: itself, or the data files of a plain folder, sorted. Files of a folder that
    cotforge cannot read (a .txt, a .png beside the .jsonl) are named on stderr, never skipped in silence;
    hidden files and folders (.git, editor backups) are passed over."""
    if path.is_file():
        return [path]
    found = sorted(p for p in path.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    files = [p for p in found if p.suffix.lower() in DATA_SUFFIXES]
    if not files:
        raise CotforgeError(f"{path}: no .jsonl, .parquet or .csv files in this folder")
    skipped = [str(p.relative_to(path)) for p in found if p.suffix.lower() not in DATA_SUFFIXES]
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        print(f"cotforge: note: {path}: skipped {len(skipped)} file{'s' * (len(skipped) > 1)} cotforge cannot read "
              f"({shown}); it reads {', '.join(DATA_SUFFIXES)}", file=sys.stderr)
    return files


def read_rows(path: str | Path, split: str | None = None) -> Iterator[RawRow]:
    """Raw rows of any supported input: a file, a `datasets` folder, a run folder, a data folder, or a
    Hub dataset `hf://datasets/ORG/NAME[@REVISION][/PATH][?split=S&config=C]` (streamed)."""
    if is_hub(path):
        if split is not None:
            path = with_hub_options(path, split, None)
        yield from read_hub_rows(path)
        return
    path = Path(path)
    if not path.exists():
        raise CotforgeError(f"{path}: no such file or folder")
    if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        yield from read_datasets_folder(path, split)
        return
    if is_run_folder(path):
        yield from read_run_samples(path)
        return
    for file in data_files(path):
        suffix = file.suffix.lower()
        if suffix in (".jsonl", ".json"):
            yield from read_jsonl(file)
        elif suffix == ".parquet":
            yield from read_parquet(file)
        elif suffix == ".csv":
            yield from read_csv(file)
        else:
            raise CotforgeError(f"{file}: unsupported format '{suffix}' (use .jsonl, .parquet, .csv)")
