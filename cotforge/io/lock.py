"""One writer per folder: an exclusive OS lock held for the whole run.

`FOLDER/.cotforge.lock` is locked with `fcntl.flock` and holds a record of the holder (pid, host,
command, start time) so a refused writer can say who has the folder. The kernel drops a flock when
its process dies, however it dies, so a lock whose record names a dead process is simply free: the
next writer takes it and says so. The lock file is removed on release; after locking, the holder
checks that the file it locked is still the one at the path (a writer that opened the file just
before it was removed would otherwise hold a lock on a deleted file).

Locks are per process and per folder: reopening a folder this process already holds reuses the
lock (counted; a resumed run in one process, tests), and fork-server workers never inherit the descriptor.
"""

from __future__ import annotations

import atexit
import datetime as dt
import errno
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Self

from cotforge.errors import CotforgeError, environment_fault

LOCK_NAME = ".cotforge.lock"

_held: dict[Path, FolderLock] = {}


class FolderBusy(CotforgeError):
    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FolderLock:
    """Exclusive lock on a folder; `acquire` returns the held lock or raises FolderBusy (one line)."""

    def __init__(self, folder: Path, fd: int):
        self.folder = folder
        self.path = folder / LOCK_NAME
        self._fd: int | None = fd
        self._users = 1

    @classmethod
    def acquire(cls, folder: str | Path, command: str) -> FolderLock:
        folder = Path(folder)
        key = folder.resolve()
        if key in _held and _held[key]._fd is not None:
            _held[key]._users += 1
            return _held[key]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CotforgeError(f"{folder}: cannot create this folder ({err.strerror}); choose a folder "
                                f"you can write to") from None
        path = folder / LOCK_NAME
        while True:
            fd = _open_lock_file(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_record(fd)
                os.close(fd)
                raise FolderBusy(f"{folder}: in use by another cotforge writer ({_describe(holder)}); "
                                 f"wait for it to finish or stop it, then rerun") from None
            try:
                same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)  # the previous holder removed the file between our open and our lock: retry
        previous = _read_record(fd)
        if previous and previous.get("pid") != os.getpid():
            print(f"cotforge: {folder}: taking over a stale lock ({_stale_reason(previous)})", file=sys.stderr)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                  "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except OSError as err:  # a full disk fails here first, and os.pwrite names no file: name it
            path.unlink(missing_ok=True)
            os.close(fd)
            fault = environment_fault(err, path)
            if fault is None:
                raise
            raise fault from None
        lock = cls(folder, fd)
        _held[key] = lock
        return lock

    def release(self, force: bool = False) -> None:
        """Remove the lock file and drop the lock (removal first, while still holding it) once its
        last user in this process releases it."""
        self._users = 0 if force else self._users - 1
        if self._fd is None or self._users > 0:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only folder: the file stays, the kernel lock is dropped below all the same
        os.close(self._fd)
        self._fd = None
        _held.pop(self.folder.resolve(), None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@atexit.register
def _release_all() -> None:
    # A writer that returns without closing its run still leaves no lock file behind.
    for lock in list(_held.values()):
        lock.release(force=True)


def is_lock_file(path: Path) -> bool:
    return path.name == LOCK_NAME


def _open_lock_file(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise CotforgeError(f"{path.parent}: cannot write here ({err.strerror}); "
                                f"choose a writable folder or fix its permissions") from None
        raise


def _read_record(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    return (f"{holder.get('command', 'cotforge')} pid {holder.get('pid')} on host {holder.get('host')}, "
            f"since {holder.get('since')}")


def _stale_reason(previous: dict) -> str:
    pid, host = previous.get("pid"), previous.get("host")
    if host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        return f"{previous.get('command', 'cotforge')} pid {pid} on this host is no longer running"
    return f"{_describe(previous)}, released without cleaning up"
