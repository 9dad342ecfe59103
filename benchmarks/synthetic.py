"""Synthetic text columns for the scale benchmarks, built with Arrow compute at C speed.

A million rows of R1-shaped text made word by word in Python took longer than the step they fed
(>15 min for filter_scale's 1M input). Here a text is a run of 10-word phrases drawn from a pool
(`Phrases`): the pool is made once in Python (50K phrases), then rows pick phrase indices with
numpy and Arrow joins them (`pc.take`, `pc.binary_join`), so a column of 1M texts costs seconds.
Rows stay realistic for what the benchmarks measure: lengths vary per row (a reasoning of 50-300
words, as before), and with 50K phrases, two rows share a phrase rarely (the near-dedup index sees
distinct texts, as with random words).
"""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

WORDS = [f"w{i}" for i in range(5000)]
PHRASE_WORDS = 10


class Phrases:
    """A pool of 10-word phrases, and texts of several of them."""

    def __init__(self, seed: int = 0, size: int = 50_000) -> None:
        rng = random.Random(seed)
        self.pool = pa.array([" ".join(rng.choice(WORDS) for _ in range(PHRASE_WORDS)) for _ in range(size)])
        self.size = size
        self.rng = np.random.default_rng(seed)

    def texts(self, counts: np.ndarray) -> pa.Array:
        """One text per row, of `counts[row]` phrases (so 10 x that many words)."""
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        picks = self.rng.integers(0, self.size, int(offsets[-1]))
        lists = pa.LargeListArray.from_arrays(pa.array(offsets), self.pool.take(pa.array(picks)))
        return pc.binary_join(lists, " ").cast(pa.string())

    def fixed(self, rows: int, phrases: int) -> tuple[pa.Array, np.ndarray]:
        """Texts of exactly `phrases` phrases, and the phrase indices each is made of (rows x phrases)."""
        picks = self.rng.integers(0, self.size, (rows, phrases))
        parts = [self.pool.take(pa.array(picks[:, j])) for j in range(phrases)]
        return pc.binary_join_element_wise(*parts, " "), picks


def join(*parts) -> pa.Array:
    """Element-wise concatenation of string arrays and plain strings."""
    return pc.binary_join_element_wise(*[p if isinstance(p, pa.Array) else pa.scalar(p) for p in parts], "")


def numbered(prefix: str, values: np.ndarray, width: int = 0) -> pa.Array:
    """'prefix0000042'-style ids for integer `values`."""
    text = pc.cast(pa.array(values), pa.string())
    if width:
        text = pc.utf8_lpad(text, width, "0")
    return join(prefix, text)
