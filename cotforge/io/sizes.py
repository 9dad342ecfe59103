"""Sizes written as text: a user's `--max-shard-size 500MB`, DuckDB's `memory_limit` shown as '244.1 MiB'."""

from __future__ import annotations

import re

from cotforge.errors import CotforgeError

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?|bytes?)\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "byte": 1, "k": 1000, "m": 1000 ** 2, "g": 1000 ** 3, "t": 1000 ** 4,
          "ki": 1024, "mi": 1024 ** 2, "gi": 1024 ** 3, "ti": 1024 ** 4}


def parse_size(text: str, what: str = "--max-shard-size") -> int:
    """'500MB' -> 500_000_000, '1.5GiB' -> 1_610_612_736, '2048' or '2048 bytes' -> 2048 (bytes).
    `what` names the option or setting in the error a malformed size gets."""
    match = _SIZE.fullmatch(str(text))
    if match is None:
        raise CotforgeError(f"{what} {text!r}: expected a size such as 500MB, 1GB or 200MiB")
    unit = match.group(2).lower()
    unit = unit.removesuffix("s") if unit.startswith("byte") else unit.removesuffix("b")
    return max(1, int(float(match.group(1)) * _UNITS[unit]))
