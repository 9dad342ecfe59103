"""Row helpers shared by every stage that reads input rows: fixed-size chunks and bad-row handling."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

from cotforge.io.errors import BadRow
from cotforge.io.normalize import Normalizer
from cotforge.io.readers import RawRow

BAD_ROW_MODES = ("fail", "quarantine")


def chunks(rows: Iterable, size: int) -> Iterator[list]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


def split_bad_rows(raw_rows: list[RawRow], normalize: Normalizer, bad_rows: str) -> tuple[list[dict], list[dict]]:
    """Normalize a chunk; bad rows raise (mode 'fail') or become quarantine records."""
    good, quarantined = [], []
    for raw in raw_rows:
        try:
            good.append(normalize(raw))
        except BadRow as bad:
            if bad_rows == "fail":
                raise
            quarantined.append(bad.quarantine_record())
    return good, quarantined
