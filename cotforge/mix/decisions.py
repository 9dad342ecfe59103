"""Per-row mix decisions on disk, addressed by the row's position in file order.

The decision pass visits rows in priority order and writes each decision at its row's position; the
write pass then reads them back sequentially beside the rows, in file order. Fixed-size records in a
plain file (read with seek + read, not mmap) keep memory flat at any size.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

_RECORD = 256
_HEADER = struct.Struct("<?fH")  # decided, score (NaN: none), reason length in bytes
_MAX_REASON = _RECORD - _HEADER.size


class DecisionLog:
    def __init__(self, path: Path):
        self.file = open(path, "w+b")  # noqa: SIM115 (closed by close())

    def write(self, position: int, reason: str | None, score: float | None) -> None:
        data = (reason or "").encode("utf-8")[:_MAX_REASON]
        self.file.seek(position * _RECORD)
        self.file.write(_HEADER.pack(True, math.nan if score is None else score, len(data)) + data)

    def read(self, start: int, count: int) -> list[tuple[str | None, float | None]]:
        """Decisions of rows start .. start+count-1: (reason or None when kept, score)."""
        self.file.seek(start * _RECORD)
        blob = self.file.read(count * _RECORD)
        out = []
        for i in range(count):
            record = blob[i * _RECORD:(i + 1) * _RECORD]
            decided, score, size = _HEADER.unpack_from(record)
            if not decided:
                raise RuntimeError(f"mix: row {start + i} has no decision")  # a bug, never bad input
            reason = record[_HEADER.size:_HEADER.size + size].decode("utf-8", "ignore") or None
            out.append((reason, None if math.isnan(score) else score))
        return out

    def close(self) -> None:
        self.file.close()
