"""Near duplicates among the samples of one prompt, found before `per_prompt` picks among them.

Across prompts the Deduper compares the recipe's dedup text; within a prompt the prompt is shared,
so the completions themselves are compared: the Jaccard similarity of their word n-gram sets (the
recipe's `near` ngram and threshold; CJK characters count as words, as in decontamination). A
prompt's samples are visited in the source's `select` order and each is kept unless it is a near
duplicate of one kept before it, so `per_prompt` then picks among distinct completions (three
answers that differ by one word in 120 count once).

Why not datasketch's MinHash here: a prompt's group is small (its k samples) so no LSH is needed,
and completions are long, where 128 hash permutations per n-gram cost ~3.5x more than one hash per
n-gram and a bottom-k sketch (the `num_perm` smallest n-gram hashes; exact Jaccard for texts with
fewer n-grams). Jaccard >= t needs n-gram counts within a ratio t of each other, so only samples
with a same-prompt partner of comparable length (characters, with slack) are read at all.
DuckDB sorts only the sketches (on disk), never the texts.
"""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pyarrow as pa

from cotforge.io.sizes import parse_size
from cotforge.mix.decontam import tokens
from cotforge.mix.dedup import Deduper, hash64, normalize_text

BATCH_ROWS = 4096
WORD_CHARS = 32  # longer words (URLs, hashes) are told apart by their first 32 characters
LENGTH_SLACK = 0.75  # character lengths stand in for n-gram counts: compare pairs within ratio t * slack
_MIX = np.uint64(0x9E3779B97F4A7C15)  # spreads the polynomial n-gram hashes before taking the smallest
_BASE = np.uint64(1_099_511_628_211)
_POWERS = np.array([pow(int(_BASE), WORD_CHARS - 1 - j, 2**64) for j in range(WORD_CHARS)], dtype=np.uint64)
WITHIN_SCHEMA = pa.schema([("_fkey", pa.uint64()), ("_frn", pa.int64()), ("_near_of", pa.string()),
                           ("_near_j", pa.float64()), ("_near_exact", pa.bool_())])


def sketch(text: str, ngram: int, size: int) -> np.ndarray:
    """The `size` smallest 64-bit hashes of the text's word n-grams (sorted, distinct)."""
    hashed = _word_hashes(tokens(text))
    if len(hashed) > ngram:
        grams = hashed[:len(hashed) - ngram + 1].copy()
        for offset in range(1, ngram):
            grams = grams * _BASE + hashed[offset:len(hashed) - ngram + 1 + offset]
    else:
        grams = np.array([np.bitwise_xor.reduce(hashed * _BASE)] if len(hashed) else [], dtype=np.uint64)
    return np.unique(grams * _MIX)[:size]


def _word_hashes(words: list[str]) -> np.ndarray:
    """One 64-bit hash per word, vectorized: each word's first WORD_CHARS code points as a polynomial."""
    if not words:
        return np.empty(0, dtype=np.uint64)
    codes = np.array(words, dtype=f"<U{WORD_CHARS}").view(np.uint32).reshape(len(words), WORD_CHARS)
    return codes.astype(np.uint64) @ _POWERS  # integer matmul wraps modulo 2**64, like the polynomial


def jaccard(a: np.ndarray, b: np.ndarray, size: int) -> float:
    """Bottom-k estimate: the share of the union's `size` smallest hashes that both sketches hold."""
    union = np.union1d(a, b)[:size]
    if not len(union):
        return 1.0
    both = np.intersect1d(a, b, assume_unique=True)
    return float(np.isin(union, both, assume_unique=True).sum() / len(union))


def find_within_prompt(con: duckdb.DuckDBPyConnection, relation: str, order: str, seed: int,
                       deduper: Deduper | None) -> None:
    """(Re)create table `_within`: each near-duplicate sample (by `_fkey`, `_frn`), the id it repeats,
    their estimated Jaccard similarity and whether the normalized completions are identical.
    `deduper` None (near dedup off): the table stays empty."""
    cursor = con.cursor()
    _create(cursor, "_within", pa.Table.from_pylist([], schema=WITHIN_SCHEMA))
    if deduper is None or deduper.threshold is None:
        return
    _signatures(con, cursor, relation, seed, deduper)
    duplicates: list[dict] = []
    group: list[tuple[str, np.ndarray, int]] = []
    current = None
    for batch in _sketches_by_prompt(con, order):
        for row in batch.to_pylist():
            if row["prompt_id"] != current:
                current, group = row["prompt_id"], []
            sig = np.frombuffer(row["_sig"], dtype=np.uint64)
            best = max(((key == row["_key"], jaccard(sig, kept, deduper.num_perm), kept_id)
                        for kept_id, kept, key in group), default=(False, 0.0, None))
            if best[0] or best[1] >= deduper.threshold:
                duplicates.append({"_fkey": row["_fkey"], "_frn": row["_frn"], "_near_of": best[2],
                                   "_near_j": best[1], "_near_exact": best[0]})
            else:
                group.append((row["id"], sig, row["_key"]))
        if len(duplicates) >= BATCH_ROWS:
            _insert(cursor, "_within", pa.Table.from_pylist(duplicates, schema=WITHIN_SCHEMA))
            duplicates = []
    _insert(cursor, "_within", pa.Table.from_pylist(duplicates, schema=WITHIN_SCHEMA))
    cursor.execute("DROP TABLE _sigs; DROP TABLE _paired")
    cursor.close()


def _sketches_by_prompt(con, order: str):
    """The sketches in `_sigs` as Arrow batches, each prompt's rows together and in `order`.

    One ORDER BY over every sketch (~1 KB each) fails under the memory limit at ~1M samples: DuckDB
    2.0's sort pins its payload while the result streams out ("failed to pin block", seen at 1M rows
    under the default 256MB). So the prompts are cut by hash into passes whose sketches take at most
    a quarter of the limit; a prompt's rows all fall in one pass, so groups stay whole."""
    (payload,), = con.execute("SELECT coalesce(sum(octet_length(_sig) + strlen(id) + strlen(prompt_id) + 40), 0) "
                              "FROM _sigs").fetchall()
    passes = max(1, math.ceil(4 * payload / memory_limit_bytes(con)))  # 1 for an empty table
    for part in range(passes):
        where = f"WHERE hash(prompt_id) % {passes} = {part} " if passes > 1 else ""
        yield from con.sql(f"SELECT _fkey, _frn, id, prompt_id, _key, _sig FROM _sigs {where}"
                           f"ORDER BY prompt_id, {order}, _fkey, _frn").to_arrow_reader(BATCH_ROWS)


def memory_limit_bytes(con) -> int:
    """The connection's `memory_limit` in bytes (DuckDB shows it as text: '244.1 MiB')."""
    (shown,), = con.execute("SELECT current_setting('memory_limit')").fetchall()
    return parse_size(shown, "DuckDB memory_limit")


def _signatures(con, cursor, relation: str, seed: int, deduper: Deduper) -> None:
    """Table `_sigs`: one sketch per sample that has a same-prompt partner of comparable length."""
    ratio = deduper.threshold * LENGTH_SLACK
    con.execute(f"""CREATE OR REPLACE TABLE _paired AS
        WITH lengths AS (SELECT hash(filename) AS _fkey, file_row_number AS _frn, prompt_id,
                                length(coalesce(completion, '')) AS _length FROM {relation}),
             groups AS (SELECT prompt_id FROM lengths GROUP BY prompt_id HAVING count(*) > 1)
        SELECT DISTINCT a._fkey, a._frn FROM lengths a JOIN groups USING (prompt_id)
        JOIN lengths b ON a.prompt_id = b.prompt_id AND NOT (a._fkey = b._fkey AND a._frn = b._frn)
             AND least(a._length, b._length) >= {ratio} * greatest(a._length, b._length)""")
    reader = con.sql(f"""
        SELECT hash(filename) AS _fkey, file_row_number AS _frn, id, prompt_id, completion,
               length(coalesce(completion, '')) AS _length, md5_number_lower(concat({seed}, ':', id)) AS _rand
        FROM {relation} SEMI JOIN _paired ON hash(filename) = _paired._fkey AND file_row_number = _paired._frn
    """).to_arrow_reader(BATCH_ROWS)
    created = False
    for batch in reader:
        rows = batch.to_pylist()
        texts = [normalize_text(r["completion"] or "") for r in rows]
        table = pa.table({
            "_fkey": pa.array([r["_fkey"] for r in rows], pa.uint64()),
            "_frn": pa.array([r["_frn"] for r in rows], pa.int64()),
            "id": pa.array([r["id"] for r in rows], pa.string()),
            "prompt_id": pa.array([r["prompt_id"] for r in rows], pa.string()),
            "_length": pa.array([r["_length"] for r in rows], pa.int64()),
            "_rand": pa.array([r["_rand"] for r in rows], pa.uint64()),
            "_key": pa.array([hash64(text) for text in texts], pa.uint64()),
            "_sig": pa.array([sketch(t, deduper.ngram, deduper.num_perm).tobytes() for t in texts], pa.binary())})
        (_insert if created else _create)(cursor, "_sigs", table)
        created = True
    if not created:
        cursor.execute("CREATE OR REPLACE TABLE _sigs (_fkey UBIGINT, _frn BIGINT, id VARCHAR, prompt_id VARCHAR, "
                       "_length BIGINT, _rand UBIGINT, _key UBIGINT, _sig BLOB)")


def _create(cursor, table: str, data: pa.Table) -> None:
    cursor.register("_new", data)
    cursor.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _new")
    cursor.unregister("_new")


def _insert(cursor, table: str, data: pa.Table) -> None:
    if data.num_rows:
        cursor.register("_new", data)
        cursor.execute(f"INSERT INTO {table} SELECT * FROM _new")
        cursor.unregister("_new")
