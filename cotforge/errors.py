"""The errors every layer raises: `CotforgeError` (the CLI prints it as one line and exits non-zero),
`Interrupted` (a signal: unwind and exit 128 + signal), and `environment_fault` (a full or read-only
disk as one such line). At the package floor: nothing here imports the rest of cotforge."""

from __future__ import annotations

import errno
import os
from pathlib import Path


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
