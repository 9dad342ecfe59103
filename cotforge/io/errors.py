"""Bad input rows: one exception carrying file, line, field and what is wrong."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

RAW_KEEP_BYTES = 64 * 1024


class CotforgeError(Exception):
    """An error the CLI prints as one line and exits non-zero on."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: unwind (closing workers, releasing locks) and exit 128 + signal.

    A BaseException, like KeyboardInterrupt, so no `except Exception` on the way turns it into data."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


# errno -> what the user can do about it
_ENVIRONMENT_FAULTS = {
    errno.ENOSPC: "free space on that disk (or choose another folder), then rerun the same command to resume",
    errno.EDQUOT: "free space within your quota (or choose another folder), then rerun the same command to resume",
    errno.EROFS: "the file system is read-only; choose a writable folder",
    errno.EACCES: "fix its permissions or choose a writable folder",
    errno.EPERM: "fix its permissions or choose a writable folder",
}


def environment_fault(err: BaseException, path: str | Path | None = None) -> CotforgeError | None:
    """A one-line error for a disk-full / read-only / permission fault, or None for anything else.

    pyarrow raises OSError without errno or file name ("[errno 28] No space left on device") and
    DuckDB its own IOException, so the message text is matched too."""
    code = getattr(err, "errno", None)
    if code is None:
        text = str(err)
        code = next((number for number in _ENVIRONMENT_FAULTS if os.strerror(number) in text), None)
    if code not in _ENVIRONMENT_FAULTS:
        return None
    where = getattr(err, "filename", None) or path or "?"
    return CotforgeError(f"{where}: cannot write: {os.strerror(code)}; {_ENVIRONMENT_FAULTS[code]}")


@dataclass
class BadRow(CotforgeError):
    file: str
    line: int
    field: str
    problem: str
    raw: bytes | str | None = None
    raw_size: int | None = None  # the whole row's size when `raw` holds only its first bytes

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: field '{self.field}': {self.problem}"

    def quarantine_record(self) -> dict:
        return {"file": self.file, "line": self.line, "field": self.field, "reason": self.problem,
                "raw": escape_raw(self.raw, self.raw_size)}


def escape_raw(raw: bytes | str | None, size: int | None = None) -> str | None:
    """Raw row as text: valid UTF-8 kept, other bytes as \\xNN, cut at RAW_KEEP_BYTES; the cut says
    how many bytes of the row (`size`, default the length of `raw`) are left out."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    raw = raw.rstrip(b"\r\n")
    size = len(raw) if size is None else size
    cut = raw[:RAW_KEEP_BYTES]
    # A cut may split a multi-byte character: its bytes show escaped, never as a replacement char.
    text = cut.decode("utf-8", "backslashreplace")
    return text + (f"...[{size - len(cut):,} more bytes of {size:,}]" if size > len(cut) else "")
