"""Exact and near-duplicate detection against the rows a mix has kept so far.

Exact: a 64-bit hash of the normalized dedup text (NFKC, lower case, whitespace collapsed), the text
the recipe's `dedup.text` names (prompt | prompt_summary | sample), for any two rows, same prompt or
not.
Near: datasketch MinHash over token shingles and datasketch MinHashLSH's banding (b bands of r
hash values, chosen by MinHashLSH for the threshold); a candidate is a duplicate when the MinHash
estimate of the Jaccard similarity reaches the threshold.

Memory stays flat however many rows are kept: MinHashLSH holds only the current batch (to catch
duplicates inside it), while the buckets of all earlier batches live in an on-disk DuckDB table
(band, bucket hash -> row) that each batch joins against, and the signatures live in a flat file
read back by offset for the few candidates. Disk grows with the kept rows (~0.7 KB each); RAM does
not. Near duplicates between rows with the same `prompt_id` are not looked for here: their
completions are compared before `per_prompt` (see within.py).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from cotforge.mix.decontam import tokens
from cotforge.query import sql_literal

_SPACE_RE = re.compile(r"\s+")


def dedup_text(row: dict, mode: str) -> str:
    """The text a recipe's `dedup.text` mode compares: prompt | prompt_summary | sample (prompt + completion)."""
    prompt = row.get("prompt") or ""
    if mode == "prompt":
        return prompt
    return f"{prompt}\n{row.get('completion' if mode == 'sample' else 'summary') or ''}"


def normalize_text(text: str) -> str:
    return _SPACE_RE.sub(" ", unicodedata.normalize("NFKC", text or "").lower()).strip()


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def shingles(text: str, n: int) -> list[bytes]:
    words = tokens(text)
    if len(words) <= n:
        return ["\x1f".join(words).encode()]
    return ["\x1f".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)]


@dataclass
class Duplicate:
    kind: str  # "exact" | "near"
    of: str  # id of the kept row it duplicates
    jaccard: float | None = None

    @property
    def reason(self) -> str:
        if self.kind == "exact":
            return f"exact duplicate of {self.of}"
        return f"near duplicate of {self.of} (jaccard {self.jaccard:.2f})"


def _datasketch():
    import datasketch

    return datasketch


class Deduper:
    """`check_batch(...)`, then `duplicate(pos)` / `keep(pos, id)` per row, then `commit_batch()`."""

    def __init__(self, workdir: Path, exact: bool = True, threshold: float | None = 0.8, num_perm: int = 128,
                 ngram: int = 5, seed: int = 1, memory_limit: str = "128MB"):
        self.exact, self.threshold, self.num_perm, self.ngram, self.seed = exact, threshold, num_perm, ngram, seed
        workdir.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(str(workdir / "dedup.duckdb"))
        self.con.execute(f"SET memory_limit='{memory_limit}'; SET threads=1; "
                         f"SET temp_directory={sql_literal(workdir / 'duckdb.tmp')}")
        self.con.execute("CREATE TABLE exact_keys (key UBIGINT, full_key UBIGINT, prompt_id VARCHAR, id VARCHAR)")
        self.con.execute("CREATE TABLE bands (band USMALLINT, key UBIGINT, row_no BIGINT)")
        self.con.execute("CREATE TABLE kept (row_no BIGINT, prompt_id VARCHAR, id VARCHAR)")
        self.sig_file = open(workdir / "signatures.u32", "w+b")  # noqa: SIM115 (closed by close())
        self.kept_rows = 0
        # datasketch only for near dedup: its LSH module imports scipy.integrate (~2 s a process)
        self.ranges = [] if threshold is None else _datasketch().MinHashLSH(threshold, num_perm=num_perm).hashranges
        self._batch: dict = {}

    def close(self) -> None:
        self.con.close()
        self.sig_file.close()

    # -- per batch ---------------------------------------------------------------------------
    def check_batch(self, texts: list[str], prompt_ids: list[str], full_keys: list[int]) -> None:
        """Prepare a batch: hashes, signatures, and the earlier kept rows that share a bucket.

        `texts` are compared across prompts; `full_keys` (hashes of the whole sample) between
        samples of the same prompt."""
        normalized = [normalize_text(t) for t in texts]
        self._batch = {"prompt_ids": prompt_ids, "exact": {}, "candidates": {}, "sigs": None,
                       "keys": [hash64(t) for t in normalized] if self.exact else None,
                       "full_keys": full_keys,
                       "in_batch_exact": {}, "lsh": None}
        if self.exact and self.kept_rows:
            self._batch["exact"] = self._earlier_exact(self._batch["keys"])
        if self.threshold is not None and texts:
            datasketch = _datasketch()
            minhashes = datasketch.MinHash.bulk([shingles(t, self.ngram) for t in normalized], num_perm=self.num_perm,
                                     seed=self.seed)
            sigs = np.stack([m.hashvalues for m in minhashes]).astype(np.uint32)
            band_keys = self._band_keys(sigs)
            self._batch.update(minhashes=minhashes, sigs=sigs, band_keys=band_keys,
                               lsh=datasketch.MinHashLSH(self.threshold, num_perm=self.num_perm))
            if self.kept_rows:
                self._batch["candidates"] = self._earlier_candidates(band_keys)

    def duplicate(self, pos: int) -> Duplicate | None:
        """Is row `pos` of the current batch a duplicate of a kept row (earlier batch or this one)?"""
        batch, prompt_id = self._batch, self._batch["prompt_ids"][pos]
        if self.exact:
            # Exact: the dedup text (the recipe's `text` mode) is compared as named, also between
            # samples of one prompt: under `prompt_summary` two samples with one prompt and one final
            # answer are duplicates however their reasoning differs.
            hits = [*batch["exact"].get(pos, ()), *batch["in_batch_exact"].get(batch["keys"][pos], ())]
            for _, _, earlier_id in hits:
                return Duplicate("exact", earlier_id)
        if self.threshold is None:
            return None
        sig = batch["sigs"][pos]
        best: Duplicate | None = None
        for row_no, (earlier_prompt, earlier_id) in batch["candidates"].get(pos, {}).items():
            if earlier_prompt != prompt_id:
                best = _better(best, earlier_id, float(np.mean(self._read_sig(row_no) == sig)), self.threshold)
        for other in sorted(batch["lsh"].query(batch["minhashes"][pos])):
            if batch["prompt_ids"][other] != prompt_id:
                jaccard = float(np.mean(batch["sigs"][other] == sig))
                best = _better(best, batch["kept_ids"][other], jaccard, self.threshold)
        return best

    def keep(self, pos: int, row_id: str) -> None:
        """Record row `pos` of the current batch as kept (later rows are compared with it)."""
        batch = self._batch
        batch.setdefault("kept_pos", []).append((pos, row_id))
        batch.setdefault("kept_ids", {})[pos] = row_id
        if self.exact:
            batch["in_batch_exact"].setdefault(batch["keys"][pos], []).append(
                (batch["full_keys"][pos], batch["prompt_ids"][pos], row_id))
        if self.threshold is not None:
            batch["lsh"].insert(pos, batch["minhashes"][pos], check_duplication=False)

    def commit_batch(self) -> None:
        """Move the batch's kept rows into the on-disk index."""
        kept = self._batch.get("kept_pos", [])
        if not kept:
            return
        positions = [pos for pos, _ in kept]
        ids = [row_id for _, row_id in kept]
        prompt_ids = [self._batch["prompt_ids"][pos] for pos in positions]
        if self.exact:
            self._insert("exact_keys", {
                "key": pa.array([self._batch["keys"][p] for p in positions], pa.uint64()),
                "full_key": pa.array([self._batch["full_keys"][p] for p in positions], pa.uint64()),
                "prompt_id": prompt_ids, "id": ids})
        if self.threshold is not None:
            row_nos = np.arange(self.kept_rows, self.kept_rows + len(kept), dtype=np.int64)
            self.sig_file.seek(self.kept_rows * self.num_perm * 4)
            self.sig_file.write(self._batch["sigs"][positions].tobytes())
            keys = self._batch["band_keys"][positions]  # (kept, bands)
            bands = keys.shape[1]
            self._insert("bands", {"band": pa.array(np.tile(np.arange(bands, dtype=np.uint16), len(kept))),
                                   "key": pa.array(keys.reshape(-1)),
                                   "row_no": pa.array(np.repeat(row_nos, bands))})
            self._insert("kept", {"row_no": pa.array(row_nos), "prompt_id": prompt_ids, "id": ids})
        self.kept_rows += len(kept)
        self._batch = {}

    # -- internals -----------------------------------------------------------------------------
    def _band_keys(self, sigs: np.ndarray) -> np.ndarray:
        """One 64-bit bucket hash per (row, band), over MinHashLSH's band ranges."""
        out = np.empty((len(sigs), len(self.ranges)), dtype=np.uint64)
        for band, (start, end) in enumerate(self.ranges):
            chunk = np.ascontiguousarray(sigs[:, start:end])
            out[:, band] = [hash64(row.tobytes().hex()) for row in chunk]
        return out

    def _insert(self, table: str, columns: dict) -> None:
        self.con.register("_new_rows", pa.table(columns))
        self.con.execute(f"INSERT INTO {table} SELECT * FROM _new_rows")
        self.con.unregister("_new_rows")

    def _earlier_exact(self, keys: list[int]) -> dict[int, list[tuple[int, str, str]]]:
        self.con.register("_batch_keys", pa.table({"pos": pa.array(range(len(keys)), pa.int32()),
                                                   "key": pa.array(keys, pa.uint64())}))
        found: dict[int, list[tuple[int, str, str]]] = {}
        for pos, full_key, prompt_id, row_id in self.con.execute(
                "SELECT b.pos, e.full_key, e.prompt_id, e.id FROM _batch_keys b JOIN exact_keys e USING (key) "
                "ORDER BY e.id").fetchall():
            found.setdefault(pos, []).append((full_key, prompt_id, row_id))
        self.con.unregister("_batch_keys")
        return found

    def _earlier_candidates(self, band_keys: np.ndarray) -> dict[int, dict[int, tuple[str, str]]]:
        rows, bands = band_keys.shape
        self.con.register("_batch_bands", pa.table({
            "pos": pa.array(np.repeat(np.arange(rows, dtype=np.int32), bands)),
            "band": pa.array(np.tile(np.arange(bands, dtype=np.uint16), rows)),
            "key": pa.array(band_keys.reshape(-1))}))
        found: dict[int, dict[int, tuple[str, str]]] = {}
        for pos, row_no, prompt_id, row_id in self.con.execute("""
                SELECT DISTINCT b.pos, k.row_no, k.prompt_id, k.id
                FROM _batch_bands b JOIN bands USING (band, key) JOIN kept k USING (row_no)
                ORDER BY b.pos, k.row_no""").fetchall():
            found.setdefault(pos, {})[row_no] = (prompt_id, row_id)
        self.con.unregister("_batch_bands")
        return found

    def _read_sig(self, row_no: int) -> np.ndarray:
        size = self.num_perm * 4
        self.sig_file.seek(row_no * size)
        return np.frombuffer(self.sig_file.read(size), dtype=np.uint32)


def _better(best: Duplicate | None, row_id: str, jaccard: float, threshold: float) -> Duplicate | None:
    if jaccard >= threshold and (best is None or jaccard > best.jaccard):
        return Duplicate("near", row_id, jaccard)
    return best
