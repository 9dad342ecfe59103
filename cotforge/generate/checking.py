"""The check chain in a thread of its own, so that judging never holds up submitting work to the engine.

The chain is also built in that thread: building it imports every check module (sympy, the LaTeX
parser, math-verify: seconds on a loaded machine) and starting its pool waits for the fork server to
import them again; the first requests are on their way meanwhile.

`submit(rounds)` queues rounds (each a list of rows: one finished request's samples) as one item; the
thread runs `Chain.run` on everything queued at once (the chain's worker pool does the work) and
`results()` hands back each round, verdicts attached, in the order the rounds were judged. An exception
in the chain is raised from `results()`. Rounds travel in batches, one queue item per engine poll and
per chain run, not one per round: at thousands of samples a second the queue's locking per item was a
tenth of the driver's CPU (benchmarks/generate_scale.py).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Self

from cotforge.checks.chain import verdict_rows


class Checker:
    def __init__(self, build_chain: Callable) -> None:
        self._build = build_chain
        self.chain = None
        self._built = threading.Event()
        self.pending = 0  # rounds submitted and not yet handed back
        self.judged = False  # the chain has handed back verdicts (its pool has started)
        self._in: queue.Queue = queue.Queue()
        self._out: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="checks", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._in.put(None)
        self._thread.join(timeout=60)
        if self.chain is not None:
            self.chain.close()

    def names(self) -> list[str]:
        """The chain's check names (waits for the chain to be built; raises what building raised)."""
        self._built.wait()
        if self.chain is None:
            self.results()
        return self.chain.names

    def submit(self, rounds: list[list[dict]]) -> None:
        if rounds:
            self.pending += len(rounds)
            self._in.put(rounds)

    def results(self, wait_s: float = 0.0) -> list[list[dict]]:
        """The rounds judged so far; `wait_s`: wait up to that long for the first (the caller has
        nothing else to do, so it blocks here instead of spinning)."""
        out = []
        try:
            while True:
                item = self._out.get(timeout=wait_s) if wait_s and not out else self._out.get_nowait()
                if isinstance(item, BaseException):
                    raise item
                out.extend(item)
        except queue.Empty:
            pass
        self.pending -= len(out)
        self.judged = self.judged or bool(out)
        return out

    def _loop(self) -> None:
        # Start the pool here, not in the caller: starting waits for the fork server to import every
        # check module (seconds), and the caller should be submitting the first requests meanwhile.
        try:
            self.chain = self._build()
            self.chain.start()
        except BaseException as error:  # noqa: BLE001 - raised in the caller's thread by results()
            self._out.put(error)
            return
        finally:
            self._built.set()
        while (first := self._in.get()) is not None:
            rounds = list(first)
            stop = False
            while True:
                try:
                    item = self._in.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                rounds.extend(item)
            rows = [row for round_rows in rounds for row in round_rows]
            try:
                results = self.chain.run(rows)
            except BaseException as error:  # noqa: BLE001 - raised in the caller's thread by results()
                self._out.put(error)
                return
            verdict_rows(rows, results, self.chain.names)
            self._out.put(rounds)
            if stop:
                return
