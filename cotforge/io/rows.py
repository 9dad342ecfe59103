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


def split_bad_rows(raw_rows: list[RawRow], normalize: Normalizer, bad_rows: str,
                   seen_ids: set[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Normalize a chunk; bad rows raise (mode 'fail') or become quarantine records.

    With `seen_ids`, a row whose id was already seen is a bad row too: every later join on `id`
    (verdicts, mixes, exports) would be ambiguous."""
    good, quarantined = [], []
    for raw in raw_rows:
        try:
            row = normalize(raw)
            if seen_ids is not None:
                _claim_id(row, raw, seen_ids)
            good.append(row)
        except BadRow as bad:
            if bad_rows == "fail":
                raise
            quarantined.append(bad.quarantine_record())
    return good, quarantined


def _claim_id(row: dict, raw: RawRow, seen_ids: set[str]) -> None:
    if row["id"] in seen_ids:
        given = raw.data is not None and any(alias in raw.data for alias in ("id", "uid"))
        problem = (f"duplicate id {row['id']!r}: an earlier row has it" if given else
                   f"duplicate row: same prompt and completion as an earlier row (id {row['id']!r})")
        raise BadRow(raw.file, raw.line, "id", problem, raw.raw)
    seen_ids.add(row["id"])
