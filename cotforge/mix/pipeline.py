"""`mix`: build an SFT mix from sources by quota, with dedup and decontamination.

Order of stages, per source in recipe order (a row's reason is the first stage it fails):
0. near duplicates under one prompt (completions compared, see within.py) are dropped first
   (`near duplicate of ID (jaccard 0.93, same prompt)`), so that
1. per_prompt: DuckDB ranks each prompt's samples by the `select` policy; rows past `per_prompt`
   are dropped (`over per_prompt`).
2. The survivors stream in a seeded random order (md5 of seed and id) through
3. decontaminate: the prompt shares an n-gram with an eval prompt (`contaminated by eval F (13-gram
   overlap)`),
4. exact dedup, then 5. near dedup against every row kept so far, from any source
   (`exact duplicate of ID`, `near duplicate of ID (jaccard 0.86)`),
6. quota: the first `quota` rows (per domain when the quota is a map) are kept, the rest are
   `over quota`. A source with fewer surviving rows than its quota is reported as a shortfall
   (printed and in the manifest), never padded.

The output is a run folder: every considered row is in `samples` (`accepted` = kept), with a
`{check: "mix"}` verdict; `source` is the recipe's source name and `metadata.original_source` the
row's own. The same recipe and seed give the same mix. A mix is not resumable: an interrupted mix
restarts from scratch on rerun (shards are still written atomically); a completed one is reused.

Memory: DuckDB works in an on-disk database under OUT/.mix-work (limit `memory_limit`, and 128 MB for
the dedup index), so selection never needs the data in RAM. Python holds one batch at a time; the
long texts (completion, reasoning) never enter a DuckDB sort, window or join: decisions are made on
a narrow table (ids, prompt, summary), and the full rows are streamed in file order beside them.
Output rows are in source order, then file order (not priority order).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import duckdb
import pyarrow as pa

from cotforge.checks.base import status_of
from cotforge.io.readers import is_run_folder
from cotforge.io.rundir import RunDir
from cotforge.mix.decisions import DecisionLog
from cotforge.mix.decontam import EvalIndex
from cotforge.mix.dedup import Deduper, dedup_text
from cotforge.mix.recipe import Recipe, Source, load_recipe
from cotforge.mix.sources import source_relation, upstream_funnel
from cotforge.mix.within import find_within_prompt
from cotforge.progress import Progress
from cotforge.query import sql_literal
from cotforge.schema import SAMPLE_SCHEMA, to_table

BATCH_ROWS = 8192
STAGES = ("over per_prompt", "contaminated", "exact duplicate", "near duplicate", "over quota")
_ORDER = {"random": "_rand", "shortest": "_length, _rand", "longest": "_length DESC, _rand"}


def _targets(quota, pool: dict[str, int]) -> dict[str, int] | int | None:
    """Rows to keep: a total, or per domain ('*' = any domain not named); None keeps every row."""
    def rows(value, available: int) -> int:
        return round(value * available) if isinstance(value, float) else int(value)
    if quota is None:
        return None
    if not isinstance(quota, dict):
        return rows(quota, sum(pool.values()))
    targets = {domain: rows(value, pool.get(domain, 0)) for domain, value in quota.items() if domain != "*"}
    if "*" in quota:
        for domain, available in pool.items():
            targets.setdefault(domain, rows(quota["*"], available))
    return targets


class _Writer:
    """Buffers output rows and commits `samples` shards atomically."""

    def __init__(self, run: RunDir, shard_rows: int = BATCH_ROWS):
        self.run, self.shard_rows, self.rows, self.index = run, shard_rows, [], 0

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.run.write_shard("samples", self.index, to_table(self.rows, SAMPLE_SCHEMA))
            self.index, self.rows = self.index + 1, []


def _output_row(row: dict, source: Source, passed: bool, reason: str | None, score: float | None = None) -> dict:
    metadata = json.loads(row["metadata"]) if row.get("metadata") else {}
    metadata["original_source"] = row.get("source")
    row = {k: v for k, v in row.items() if not k.startswith("_")}
    row.update(source=source.name, metadata=json.dumps(metadata, ensure_ascii=False), accepted=passed,
               verdicts=[*(row.get("verdicts") or []),
                         {"check": "mix", "passed": passed, "score": score, "reason": reason,
                          "status": status_of(passed, score), "code": None}])
    return row


@dataclass(frozen=True)
class Drop:
    """Why mix dropped a row: the report's stage (counted), the row's reason, and a score where one
    measures it (a near duplicate's Jaccard similarity)."""

    stage: str
    reason: str
    score: float | None = None


def _decide(rows: list[dict], recipe: Recipe, source: Source, targets, evals: EvalIndex | None,
            deduper: Deduper, kept: Counter) -> list[Drop | None]:
    """Each row's Drop, or None when kept; rows arrive in priority order."""
    reasons: list[Drop | None] = [None] * len(rows)
    for pos, row in enumerate(rows):
        if row["_near_of"] is not None and row["_near_exact"]:
            reasons[pos] = Drop("exact duplicate", f"exact duplicate of {row['_near_of']}")
        elif row["_near_of"] is not None:
            why = f"near duplicate of {row['_near_of']} (jaccard {row['_near_j']:.2f}, same prompt)"
            reasons[pos] = Drop("near duplicate", why, row["_near_j"])
        elif row["_over"]:
            reasons[pos] = Drop("over per_prompt", "over per_prompt")
        elif evals is not None and (label := evals.match(row.get("prompt") or "")):
            reasons[pos] = Drop("contaminated", f"contaminated by eval {label} ({evals.n}-gram overlap)")
    candidates = [pos for pos, reason in enumerate(reasons) if reason is None]
    deduper.check_batch([dedup_text(rows[p], recipe.dedup_text) for p in candidates],
                        [rows[p]["prompt_id"] for p in candidates], [rows[p]["_full"] for p in candidates])
    for index, pos in enumerate(candidates):
        row = rows[pos]
        duplicate = deduper.duplicate(index) if source.dedup else None
        if duplicate is not None:
            reasons[pos] = Drop(f"{duplicate.kind} duplicate", duplicate.reason, duplicate.jaccard)
            continue
        domain = row.get("domain") or ""
        limit = targets.get(domain, 0) if isinstance(targets, dict) else targets
        counted = kept[domain] if isinstance(targets, dict) else sum(kept.values())
        if limit is not None and counted >= limit:
            reasons[pos] = Drop("over quota", "over quota")
            continue
        kept[domain] += 1
        deduper.keep(index, row["id"])
    deduper.commit_batch()
    return reasons


def _side_by_side(con: duckdb.DuckDBPyConnection, relation: str, columns: str,
                  side_table: str) -> Iterator[tuple[list[dict], list[dict]]]:
    """Batches of the relation's rows in file order, each with the `side_table` rows (keyed by
    `_fkey` = hash(filename), `_frn`) of the same rows: a merge join done in Python, because a
    DuckDB join would hold the long texts in its hash table."""
    hash_of = dict(con.execute(f"SELECT DISTINCT filename, hash(filename) FROM {relation}").fetchall())
    side = _rows(con.cursor().sql(f"""SELECT s.* FROM {side_table} s
        JOIN (SELECT DISTINCT filename, hash(filename) AS _fkey FROM {relation}) f USING (_fkey)
        ORDER BY f.filename, s._frn"""))
    for batch in _in_file_order(con, f"SELECT filename, file_row_number, {columns} FROM {relation}"):
        rows = batch.to_pylist()
        sides = list(islice(side, len(rows)))
        for row, other in zip(rows, sides, strict=True):
            if (hash_of[row.pop("filename")], row.pop("file_row_number")) != (other["_fkey"], other["_frn"]):
                raise RuntimeError("mix: rows and their side table are out of step")  # a bug, never bad input
        yield rows, sides


def _in_file_order(con: duckdb.DuckDBPyConnection, sql: str) -> pa.RecordBatchReader:
    """Batches of `sql` in the scanned files' row order. The connection runs with
    preserve_insertion_order off (less memory for the sorts and joins); the setting is global, and
    read when a query is planned, so it is on only while this one query is planned and started. It
    goes off again through another cursor: a statement on `con` itself would end the streaming reader."""
    con.execute("SET preserve_insertion_order=true")
    try:
        return con.sql(sql).to_arrow_reader(BATCH_ROWS)
    finally:
        with con.cursor() as other:
            other.execute("SET preserve_insertion_order=false")


def _insert(cursor: duckdb.DuckDBPyConnection, table: str, data: pa.Table, create: bool) -> None:
    cursor.register("_batch", data)
    cursor.execute(f"CREATE TABLE {table} AS SELECT * FROM _batch" if create else
                   f"INSERT INTO {table} SELECT * FROM _batch")
    cursor.unregister("_batch")


def _mix_source(con: duckdb.DuckDBPyConnection, recipe: Recipe, source: Source, relation: str,
                evals: EvalIndex | None, deduper: Deduper, writer: _Writer, progress: Progress,
                workdir: Path) -> dict:
    """Decide on a narrow table in priority order (decisions go to a file, by file-order position),
    then stream the full rows in file order beside them: no sort, window or join holds long texts."""
    per_prompt = source.per_prompt or 2**31
    find_within_prompt(con, relation, _ORDER[source.select], recipe.seed, deduper if source.dedup else None)
    # near duplicates under one prompt rank apart, so per_prompt picks among distinct samples
    con.execute(f"""CREATE OR REPLACE TABLE _ranks AS
        SELECT _fkey, _frn, _rand, _near_of, _near_j, _near_exact,
               row_number() OVER (PARTITION BY prompt_id, _near_of IS NULL ORDER BY {_ORDER[source.select]}) AS _rank
        FROM (SELECT hash(filename) AS _fkey, file_row_number AS _frn, prompt_id,
                     length(coalesce(completion, '')) AS _length,
                     md5_number_lower(concat({recipe.seed}, ':', id)) AS _rand FROM {relation})
        LEFT JOIN _within USING (_fkey, _frn)""")
    con.execute("DROP TABLE _within")
    extra = ", completion" if recipe.dedup_text == "sample" else ""
    cursor = con.cursor()
    cursor.execute("DROP TABLE IF EXISTS _keys")
    rows_seen = 0
    for rows, ranks in _side_by_side(con, relation, f"""id, prompt_id, prompt, summary, domain{extra},
            hash(lower(regexp_replace(trim(concat(prompt, chr(10), completion)), '\\s+', ' ', 'g'))) AS _full""",
                                     "_ranks"):
        for position, (row, rank) in enumerate(zip(rows, ranks), start=rows_seen):
            row.update(rank, _ord=position)
        _insert(cursor, "_keys", pa.Table.from_pylist(rows, schema=_key_schema(bool(extra))), create=not rows_seen)
        rows_seen += len(rows)
    con.execute("DROP TABLE _ranks")
    pool = dict(con.execute(f"SELECT coalesce(domain, ''), count(*) FROM _keys WHERE _rank <= {per_prompt} "
                            "AND _near_of IS NULL GROUP BY ALL").fetchall()) if rows_seen else {}
    targets = _targets(source.quota, pool)
    kept: Counter = Counter()
    dropped: Counter = Counter()
    if rows_seen:
        log = DecisionLog(workdir / "decisions.bin")
        reader = con.sql(f"SELECT * EXCLUDE (_rank), _near_of IS NULL AND _rank > {per_prompt} AS _over FROM _keys "
                         "ORDER BY _over, _rand, _ord").to_arrow_reader(BATCH_ROWS)
        for batch in reader:
            rows = batch.to_pylist()
            reasons = _decide(rows, recipe, source, targets, evals, deduper, kept)
            for row, drop in zip(rows, reasons):
                log.write(row["_ord"], drop.reason if drop else None, drop.score if drop else None)
            dropped.update(drop.stage for drop in reasons if drop is not None)
            progress.advance(len(rows), kept=sum(kept.values()))
        position = 0  # file order: the order positions were given in
        for batch in _in_file_order(con, f"SELECT * EXCLUDE (filename, file_row_number) FROM {relation}"):
            rows = batch.to_pylist()
            for row, (reason, score) in zip(rows, log.read(position, len(rows))):
                writer.add(_output_row(row, source, reason is None, reason, score))
            position += len(rows)
        log.close()
    cursor.execute("DROP TABLE IF EXISTS _keys")
    cursor.close()
    return _source_report(source, targets, pool, kept, dropped)


def _key_schema(with_completion: bool) -> pa.Schema:
    texts = ["id", "prompt_id", "prompt", "summary", "domain"] + (["completion"] if with_completion else [])
    return pa.schema([*((name, pa.string()) for name in texts), ("_full", pa.uint64()), ("_fkey", pa.uint64()),
                      ("_frn", pa.int64()), ("_rand", pa.uint64()), ("_near_of", pa.string()), ("_near_j", pa.float64()),
                      ("_near_exact", pa.bool_()),
                      ("_rank", pa.int64()),
                      ("_ord", pa.int64())])


def _rows(relation: duckdb.DuckDBPyRelation) -> Iterator[dict]:
    for batch in relation.to_arrow_reader(BATCH_ROWS):
        yield from batch.to_pylist()


def _source_report(source: Source, targets, pool: dict, kept: Counter, dropped: Counter) -> dict:
    shortfalls = []
    if isinstance(targets, dict):
        for domain, target in targets.items():
            if kept[domain] < target:
                shortfalls.append({"source": source.name, "domain": domain, "quota": target,
                                   "kept": kept[domain], "missing": target - kept[domain]})
    elif targets is not None and sum(kept.values()) < targets:
        shortfalls.append({"source": source.name, "domain": None, "quota": targets,
                           "kept": sum(kept.values()), "missing": targets - sum(kept.values())})
    return {"considered": sum(kept.values()) + sum(dropped.values()), "pool_after_per_prompt": sum(pool.values()),
            "quota": targets, "kept": sum(kept.values()), "kept_by_domain": dict(kept),
            "dropped": {stage: dropped[stage] for stage in STAGES}, "shortfalls": shortfalls,
            "upstream_funnel": upstream_funnel(source)}


def mix(recipe_path: str | Path, out: str | Path, overwrite: bool = False, argv: list[str] | None = None,
        memory_limit: str = "256MB", allow_partial: bool = False) -> dict:
    """Run the recipe into the run folder `out`; returns the manifest's mix report.

    A source that is an unfinished run is refused unless `allow_partial`; its committed rows are then
    used and the report (and so the data card) marks the source partial."""
    recipe = load_recipe(recipe_path)
    partial = _partial_sources(recipe, allow_partial)
    # marks the sources carry (made from unfinished runs with --allow-partial): the mix carries them on
    carried = [mark for source in recipe.sources if source.path is not None and is_run_folder(source.path)
               for mark in RunDir(source.path).partial_marks()]
    config = {"recipe": recipe.raw}
    with RunDir.open(out, "mix", config, recipe.inputs(), argv=argv, overwrite=overwrite) as run:
        if carried:
            run.update_manifest(partial=list(dict.fromkeys(carried)))
        return _mix_into(run, recipe, memory_limit, partial)


def _partial_sources(recipe: Recipe, allow_partial: bool) -> dict[str, str]:
    """Run-folder sources that did not finish: name -> what was taken."""
    partial = {}
    for source in recipe.sources:
        if source.path is not None and is_run_folder(source.path):
            run = RunDir(source.path)
            if run.require_finished("mix", allow_partial):
                partial[source.name] = (f"status {run.unfinished()}, {run.count_rows('samples')} rows "
                                        f"committed")
    return partial


def _mix_into(run: RunDir, recipe: Recipe, memory_limit: str, partial: dict[str, str]) -> dict:
    manifest = run.manifest()
    if manifest.get("status") == "complete":
        return manifest["mix"]
    for shard in run.shards("samples"):  # an interrupted mix restarts from scratch
        shard.unlink()
    workdir = run.path / ".mix-work"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    evals = EvalIndex(recipe.evals, recipe.eval_ngram) if recipe.evals else None
    near = recipe.near or {}
    deduper = Deduper(workdir / "dedup", exact=recipe.exact, threshold=near.get("threshold"),
                      num_perm=int(near.get("num_perm", 128)), ngram=int(near.get("ngram", 5)), seed=recipe.seed + 1)
    con = duckdb.connect(str(workdir / "mix.duckdb"))  # on disk: tables and sorts can leave RAM
    con.execute(f"SET memory_limit='{memory_limit}'; SET threads=2; "
                f"SET temp_directory={sql_literal(workdir / 'duckdb.tmp')}; SET preserve_insertion_order=false")
    con.register("_empty_samples", pa.table({n: pa.array([], t) for n, t in zip(SAMPLE_SCHEMA.names,
                                                                                 SAMPLE_SCHEMA.types)}))
    writer = _Writer(run)
    sources = {}
    try:
        with Progress("mix") as progress:
            for source in recipe.sources:
                relation = source_relation(source, workdir)
                sources[source.name] = _mix_source(con, recipe, source, relation, evals, deduper, writer, progress,
                                                   workdir)
                if source.name in partial:
                    sources[source.name]["partial"] = partial[source.name]
            writer.flush()
    finally:
        con.close()
        deduper.close()
        shutil.rmtree(workdir, ignore_errors=True)
    report = _report(recipe, sources, evals)
    run.update_manifest(status="complete", mix=report,
                        counts={"rows_read": report["considered"], "accepted": report["kept"],
                                "rejected": report["considered"] - report["kept"], "quarantined": 0},
                        funnel=report["funnel"])
    return report


def _report(recipe: Recipe, sources: dict, evals: EvalIndex | None) -> dict:
    considered = sum(s["considered"] for s in sources.values())
    dropped = {stage: sum(s["dropped"][stage] for s in sources.values()) for stage in STAGES}
    remaining, funnel = considered, [{"stage": "rows in", "rows": considered}]
    for stage in STAGES:
        remaining -= dropped[stage]
        funnel.append({"stage": stage, "rejected": dropped[stage], "remaining": remaining})
    return {"recipe": recipe.name, "seed": recipe.seed, "considered": considered,
            "kept": sum(s["kept"] for s in sources.values()), "dropped": dropped, "funnel": funnel,
            "sources": sources, "shortfalls": [f for s in sources.values() for f in s["shortfalls"]],
            "eval_prompts": evals.prompts if evals else 0}


def format_report(report: dict) -> str:
    lines = [f"mix {report['recipe']}: kept {report['kept']} of {report['considered']} rows"]
    for stage in STAGES:
        lines.append(f"  {stage:<16} dropped {report['dropped'][stage]:>9}")
    for name, source in report["sources"].items():
        lines.append(f"  source {name}: kept {source['kept']} (quota {source['quota']}) of "
                     f"{source['considered']} considered")
    for gap in report["shortfalls"]:
        where = f"{gap['source']}" + (f"/{gap['domain']}" if gap["domain"] is not None else "")
        lines.append(f"  SHORTFALL {where}: kept {gap['kept']} of quota {gap['quota']} ({gap['missing']} missing)")
    return "\n".join(lines)
