"""A test-only check that holds one item until it is killed: the worker holding it is then known to be
mid-item, so the test of a killed worker can require exactly one retry.

Imported by the check worker processes (the chain imports a check's module by name), so it stays light.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from cotforge.checks.base import Check, Verdict, register


@register
class HoldCheck(Check):
    """On the first sample whose completion contains HOLD, write this worker's pid to `marker` and wait
    (bounded) to be killed; every other sample, and HOLD once the marker exists, passes at once."""

    name = "test_hold"
    timeout_s = 120.0
    marker: str = ""
    hold_s: float = 60.0

    def check(self, sample: dict) -> Verdict:
        marker = Path(self.marker)
        if "HOLD" in sample["completion"] and not marker.exists():
            temp = marker.with_suffix(".tmp")
            temp.write_text(str(os.getpid()))
            temp.rename(marker)  # the test sees the pid whole or not at all
            time.sleep(self.hold_s)  # the test kills this worker well before
        return Verdict.ok()


# `python -c DRIVER ARGS...` is `cotforge ARGS...` with this check registered: a test's real process.
DRIVER = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import held_check; "
          "from cotforge.cli import main; main()")


def held_chain(path: Path, marker: Path, *checks: str) -> Path:
    """A chain file (`--checks PATH`): `checks`, then test_hold writing `marker`."""
    lines = "".join(f"  - check: {name}\n" for name in checks)
    path.write_text(f"checks:\n{lines}  - check: test_hold\n    marker: {marker}\n")
    return path
