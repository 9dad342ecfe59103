"""Bad input rows: one exception carrying file, line, field and what is wrong."""

from __future__ import annotations

from dataclasses import dataclass

RAW_KEEP_BYTES = 64 * 1024


class CotforgeError(Exception):
    """An error the CLI prints as one line and exits non-zero on."""


@dataclass
class BadRow(CotforgeError):
    file: str
    line: int
    field: str
    problem: str
    raw: bytes | str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: field '{self.field}': {self.problem}"

    def quarantine_record(self) -> dict:
        return {"file": self.file, "line": self.line, "field": self.field, "reason": self.problem,
                "raw": escape_raw(self.raw)}


def escape_raw(raw: bytes | str | None) -> str | None:
    """Raw row as text: valid UTF-8 kept, other bytes as \\xNN, cut at RAW_KEEP_BYTES."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    raw = raw.rstrip(b"\r\n")
    cut = raw[:RAW_KEEP_BYTES]
    text = cut.decode("utf-8", "backslashreplace")
    return text + (f"...[{len(raw) - RAW_KEEP_BYTES} more bytes]" if len(raw) > RAW_KEEP_BYTES else "")
