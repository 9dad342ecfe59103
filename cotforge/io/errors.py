"""Bad input rows: one exception carrying file, line, field and what is wrong, and the raw row kept
escaped for the quarantine table."""

from __future__ import annotations

from dataclasses import dataclass

from cotforge.errors import CotforgeError

RAW_KEEP_BYTES = 64 * 1024


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
