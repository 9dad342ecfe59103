"""Atomic file writes: temp file in the same folder, fsync, rename, fsync the folder.

A process killed at any instant leaves either the old file or the new one, never a partial one.
Write failures from the environment (disk full, read-only, permissions) become one-line errors
naming the path. Temp names start with '.' and end with '.tmp', so no reader glob (`*.parquet`, `manifest.json`)
ever matches them. They carry the writer's host and pid: processes on several nodes writing into one
shared folder (a Ray cluster) never share a temp file.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cotforge.errors import environment_fault


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` then publish tmp as `path` atomically."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        fault = environment_fault(err, path)
        if fault is None:
            raise
        raise fault from None
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable(folder: Path) -> None:
    """Write, fsync and remove a small probe file, so a full disk or a read-only folder is reported
    before any work is done rather than after a whole chunk is judged."""
    probe = Path(folder) / ".cotforge-write-probe.tmp"
    atomic_write(probe, lambda tmp: tmp.write_bytes(b"\0" * 65536))
    probe.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_table(path: Path, table: pa.Table) -> None:
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def atomic_create_table(path: Path, table: pa.Table) -> bool:
    """Publish `table` as `path` only if no file has that name yet (hard link, never a replace);
    False when another writer got there first. For append-only logs with numbered files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        pq.write_table(table, tmp, compression="zstd")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return True


def remove_stale_temps(folder: Path) -> int:
    """Delete temp files a killed writer left behind; returns how many."""
    removed = 0
    for tmp in Path(folder).rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed
