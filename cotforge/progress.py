"""Progress reporting: a rich progress bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Self


class Progress:
    """`with Progress("filter", total=n) as p: p.advance(k, accepted=...)`."""

    def __init__(self, label: str, total: int | None = None, unit: str = "rows", every_s: float = 10.0,
                 stream=None, clock=time.monotonic):
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.stream = stream or sys.stderr
        self.done = 0
        self.resumed_count = 0  # done by an earlier session: counted in `done`, never in the rate
        self.fields: dict = {}
        self._rich = None
        self._task = None
        self._last = 0.0
        self._clock = clock  # tests give a fake one
        self._start = clock()

    def __enter__(self) -> Self:
        if sys.stdout.isatty() and self.stream.isatty():  # plain lines when output is piped or logged
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True)
            self._rich.start()
            self._task = self._rich.add_task(self.label, total=self.total, info="")
        return self

    def resumed(self, n: int, **fields) -> None:
        """`n` items an earlier session finished (a resumed run): they count towards the total, but the
        rate shown is this session's, so it is not inflated by work read back in a moment."""
        self.resumed_count += n
        self.done += n
        self.fields.update(fields)
        if self._rich is not None:
            self._rich.update(self._task, advance=n)

    def advance(self, n: int = 1, **fields) -> None:
        self.done += n
        self.fields.update(fields)
        info = "  ".join(f"{k} {v}" for k, v in self.fields.items())
        if self._rich is not None:
            self._rich.update(self._task, advance=n, info=info)
            return
        now = self._clock()
        if now - self._last >= self.every_s:
            self._last = now
            of = f"/{self.total}" if self.total else ""
            rate = (self.done - self.resumed_count) / max(now - self._start, 1e-9)  # this session's
            print(f"{self.label}: {self.done}{of} {self.unit} ({rate:.3g}/s) {info}".rstrip(), file=self.stream,
                  flush=True)

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()
