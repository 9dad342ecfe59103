"""Near duplicates among the samples of one prompt, found before `per_prompt` picks among them.

Across prompts the Deduper compares the recipe's dedup text; within a prompt the prompt is shared,
so the completions themselves are compared: MinHash over their word n-grams, the recipe's
`near` threshold and settings. A prompt's samples are visited in the source's `select` order and
each is kept unless it is a near duplicate of one kept before it, so `per_prompt` then picks among
distinct completions (three answers that differ by one word in 120 count once).

Only prompts with more than one sample are read. Completions stream through Python in batches;
DuckDB sorts only their signatures (on disk), never the texts.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
from datasketch import MinHash

from cotforge.mix.dedup import Deduper, hash64, normalize_text, shingles

BATCH_ROWS = 4096
WITHIN_SCHEMA = pa.schema([("_fkey", pa.uint64()), ("_frn", pa.int64()), ("_near_of", pa.string()),
                           ("_near_j", pa.float64()), ("_near_exact", pa.bool_())])


def find_within_prompt(con: duckdb.DuckDBPyConnection, relation: str, order: str, seed: int,
                       deduper: Deduper | None) -> None:
    """(Re)create table `_within`: each near-duplicate sample (by `_fkey`, `_frn`), the id it repeats,
    their estimated Jaccard similarity and whether the normalized completions are identical. `deduper` None (near dedup off): the table stays empty."""
    cursor = con.cursor()
    _create(cursor, "_within", pa.Table.from_pylist([], schema=WITHIN_SCHEMA))
    if deduper is None or deduper.threshold is None:
        return
    _signatures(con, cursor, relation, seed, deduper)
    duplicates: list[dict] = []
    group: list[tuple[str, np.ndarray, int]] = []
    current = None
    for batch in con.sql(f"SELECT _fkey, _frn, id, prompt_id, _key, _sig FROM _sigs "
                         f"ORDER BY prompt_id, {order}, _fkey, _frn"
                         ).to_arrow_reader(BATCH_ROWS):
        for row in batch.to_pylist():
            if row["prompt_id"] != current:
                current, group = row["prompt_id"], []
            sig = np.frombuffer(row["_sig"], dtype=np.uint32)
            best = max(((key == row["_key"], float(np.mean(sig == kept)), kept_id) for kept_id, kept, key in group),
                       default=(False, 0.0, None))
            if best[0] or best[1] >= deduper.threshold:
                duplicates.append({"_fkey": row["_fkey"], "_frn": row["_frn"], "_near_of": best[2],
                                   "_near_j": best[1], "_near_exact": best[0]})
            else:
                group.append((row["id"], sig, row["_key"]))
        if len(duplicates) >= BATCH_ROWS:
            _insert(cursor, "_within", pa.Table.from_pylist(duplicates, schema=WITHIN_SCHEMA))
            duplicates = []
    _insert(cursor, "_within", pa.Table.from_pylist(duplicates, schema=WITHIN_SCHEMA))
    cursor.execute("DROP TABLE _sigs")
    cursor.close()


def _signatures(con, cursor, relation: str, seed: int, deduper: Deduper) -> None:
    """Table `_sigs`: one MinHash signature per sample of a prompt that has more than one."""
    reader = con.sql(f"""
        SELECT hash(filename) AS _fkey, file_row_number AS _frn, id, prompt_id, completion,
               length(coalesce(completion, '')) AS _length, md5_number_lower(concat({seed}, ':', id)) AS _rand
        FROM {relation}
        WHERE prompt_id IN (SELECT prompt_id FROM {relation} GROUP BY prompt_id HAVING count(*) > 1)
    """).to_arrow_reader(BATCH_ROWS)
    created = False
    for batch in reader:
        rows = batch.to_pylist()
        texts = [normalize_text(r["completion"] or "") for r in rows]
        minhashes = MinHash.bulk([shingles(text, deduper.ngram) for text in texts], num_perm=deduper.num_perm,
                                 seed=deduper.seed)
        table = pa.table({
            "_fkey": pa.array([r["_fkey"] for r in rows], pa.uint64()),
            "_frn": pa.array([r["_frn"] for r in rows], pa.int64()),
            "id": pa.array([r["id"] for r in rows], pa.string()),
            "prompt_id": pa.array([r["prompt_id"] for r in rows], pa.string()),
            "_length": pa.array([r["_length"] for r in rows], pa.int64()),
            "_rand": pa.array([r["_rand"] for r in rows], pa.uint64()),
            "_key": pa.array([hash64(text) for text in texts], pa.uint64()),
            "_sig": pa.array([m.hashvalues.astype(np.uint32).tobytes() for m in minhashes], pa.binary())})
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
