"""What the pages show, as DuckDB queries over one run folder (cotforge/query.py's views).

A fresh connection per request (views over the shards committed at that moment, reviews included),
locked to the run's own shard files: SQL typed into the page can read them and nothing else, and
write nowhere (DuckDB's allowed_paths with external access off, configuration locked). Paging is
LIMIT/OFFSET on the server; nothing loads a whole run. User input only ever reaches SQL as a bound
parameter, except the SQL page, whose text is the user's own query on that locked connection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from cotforge.datacard import funnel_rows
from cotforge.errors import CotforgeError
from cotforge.io.rundir import RunDir
from cotforge.query import connect, sql_literal

PAGE_ROWS = 50
SQL_ROWS = 500
TABLES = ("samples", "prompts", "quarantine", "reviews")
# A reason's kind: its numbers masked, so "answer 17.5 != gold 18" groups with its peers (one plain
# regex: the overview of a 1M-sample run spends most of its time here).
REASON_KIND = "regexp_replace(coalesce(reason, ''), '-?[0-9][0-9.,]*', 'N', 'g')"
FIRST_FAIL = "list_filter(verdicts, lambda v: NOT v.passed)[1]"
PROMPT_SORTS = {"id": "id", "samples": "samples", "accepted": "accepted", "pass_rate": "pass_rate",
                "tokens": "completion_tokens"}


@dataclass
class SampleFilter:
    """The samples a list (and next/previous on a sample page) walks through, from the query string."""

    status: str = ""  # accepted | rejected | "" (all), after reviews
    check: str = ""  # failed this check
    reason: str = ""  # ...with this reason kind
    prompt: str = ""  # of this prompt id
    review: str = ""  # accept | reject | edit | none | any

    @classmethod
    def from_params(cls, params) -> SampleFilter:
        return cls(**{name: str(params.get(name, ""))[:2000] for name in cls.__dataclass_fields__})

    def params(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v}

    def where(self) -> tuple[str, list]:
        clauses, args = ["true"], []
        if self.status in ("accepted", "rejected"):
            clauses.append("final_accepted" if self.status == "accepted" else "NOT final_accepted")
        if self.check:
            # a list predicate per row: no join against the verdicts view (half the time on 1M samples)
            reason = f" AND {REASON_KIND.replace('reason', 'v.reason')} = ?" if self.reason else ""
            clauses.append(f"len(list_filter(verdicts, lambda v: NOT v.passed AND v.check = ?{reason})) > 0")
            args += [self.check] + ([self.reason] if self.reason else [])
        if self.prompt:
            clauses.append("prompt_id = ?")
            args.append(self.prompt)
        if self.review == "none":
            clauses.append("review IS NULL")
        elif self.review == "any":
            clauses.append("review IS NOT NULL")
        elif self.review:
            clauses.append("review = ?")
            args.append(self.review)
        return " AND ".join(clauses), args


@dataclass
class RunView:
    """One run folder as the app sees it; `index` names it in URLs (never its path)."""

    path: Path
    index: int
    _overview: tuple | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def manifest(self) -> dict:
        return RunDir(self.path).manifest()

    def notes(self) -> list[str]:
        """What every page of this run says first: it is unfinished (killed, or still being written, so
        its pages show only the rows committed so far), or it was made from unfinished runs."""
        run = RunDir(self.path)
        status = run.unfinished()
        notes = [f"Unfinished {self.manifest().get('command')} run (status {status}): killed, interrupted or "
                 f"still being written; these pages show only the rows committed so far."] if status else []
        return notes + run.partial_marks()

    def files(self) -> list[Path]:
        run = RunDir(self.path)
        return [shard.resolve() for table in TABLES for shard in run.shards(table)]

    def connect(self) -> duckdb.DuckDBPyConnection:
        con = connect(self.path)
        _listed_views(con)
        allowed = ", ".join(sql_literal(f) for f in self.files())
        con.execute(f"SET allowed_paths=[{allowed}]")
        con.execute("SET enable_external_access=false")
        con.execute("SET lock_configuration=true")
        return con

    # overview -------------------------------------------------------------------------------
    def overview(self) -> dict:
        """Counts, funnel and rejection reasons; cached until a shard is added or replaced."""
        key = tuple((f.name, f.stat().st_mtime_ns) for f in self.files() if "reviews" not in f.parts)
        if self._overview is None or self._overview[0] != key:
            self._overview = (key, self._compute_overview())
        overview = dict(self._overview[1])
        with self.connect() as con:
            overview["reviewed"] = dict(con.execute(
                "SELECT review, count(*) FROM listed WHERE review IS NOT NULL GROUP BY 1").fetchall())
        return overview

    def _compute_overview(self) -> dict:
        manifest = self.manifest()
        with self.connect() as con:
            total, accepted = con.execute(
                "SELECT count(*), count(*) FILTER (WHERE accepted) FROM samples").fetchone()
            quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()[0]
            reasons = con.execute(f"""
                SELECT v.check, {REASON_KIND.replace('reason', 'v.reason')} AS kind, count(*) AS n, min(id) AS example
                FROM (SELECT id, unnest(list_filter(verdicts, lambda x: NOT x.passed)) AS v FROM samples)
                GROUP BY ALL ORDER BY 1, n DESC""").fetchall()
        by_check: dict[str, dict] = {}
        for check, kind, count, example in reasons:
            entry = by_check.setdefault(check, {"check": check, "rejected": 0, "reasons": []})
            entry["rejected"] += count
            entry["reasons"].append({"kind": kind, "count": count, "example": example})
        return {"manifest": manifest, "command": manifest.get("command"), "samples": total,
                "accepted": accepted, "rejected": total - accepted, "quarantined": quarantined,
                "funnel": funnel_rows(manifest), "checks": list(by_check.values()), **eval_overview(manifest)}

    # lists ----------------------------------------------------------------------------------
    def samples_page(self, where: SampleFilter, page: int) -> dict:
        clause, args = where.where()
        with self.connect() as con:
            total = con.execute(f"SELECT count(*) FROM listed WHERE {clause}", args).fetchone()[0]
            rows = _records(con.execute(f"""
                SELECT id, prompt_id, left(prompt, 160) AS prompt, accepted, final_accepted, review,
                       {FIRST_FAIL}.check AS failed_check, {FIRST_FAIL}.reason AS failed_reason,
                       completion_tokens
                FROM listed WHERE {clause} ORDER BY id LIMIT {PAGE_ROWS} OFFSET {page * PAGE_ROWS}""", args))
        return {"total": total, "rows": rows, "page": page, "pages": max(1, -(-total // PAGE_ROWS))}

    def prompts_page(self, sort: str, descending: bool, never: bool, page: int) -> dict:
        order = f"{PROMPT_SORTS.get(sort, 'pass_rate')} {'DESC' if descending else 'ASC'} NULLS LAST, id"
        clause = "samples > 0 AND accepted = 0" if never else "true"
        with self.connect() as con:
            total = con.execute(f"SELECT count(*) FROM prompts WHERE {clause}").fetchone()[0]
            rows = _records(con.execute(f"""
                SELECT id, left(prompt, 200) AS prompt, samples, accepted, pass_rate, completion_tokens
                FROM prompts WHERE {clause} ORDER BY {order} LIMIT {PAGE_ROWS} OFFSET {page * PAGE_ROWS}"""))
        return {"total": total, "rows": rows, "page": page, "pages": max(1, -(-total // PAGE_ROWS))}

    # one sample -----------------------------------------------------------------------------
    def sample(self, sample_id: str, where: SampleFilter) -> dict | None:
        clause, args = where.where()
        with self.connect() as con:
            found = _records(con.execute("SELECT * FROM listed WHERE id = ?", [sample_id]))
            if not found:
                return None
            sample = found[0]
            sample["reviews"] = _records(con.execute(
                "SELECT * FROM reviews WHERE sample_id = ? ORDER BY seq DESC", [sample_id]))
            sample["next"] = _scalar(con, f"SELECT min(id) FROM listed WHERE {clause} AND id > ?", [*args, sample_id])
            sample["previous"] = _scalar(con, f"SELECT max(id) FROM listed WHERE {clause} AND id < ?",
                                         [*args, sample_id])
            sample["position"] = _scalar(con, f"SELECT count(*) FROM listed WHERE {clause} AND id <= ?",
                                         [*args, sample_id])
            sample["total"] = _scalar(con, f"SELECT count(*) FROM listed WHERE {clause}", args)
        metadata = sample.get("metadata")
        try:
            sample["metadata"] = json.loads(metadata) if metadata else {}
        except ValueError:
            sample["metadata"] = {"raw": metadata}
        return sample

    def sql(self, text: str) -> dict:
        with self.connect() as con:
            try:
                result = con.execute(text)
            except duckdb.Error as err:
                raise CotforgeError(str(err).splitlines()[0]) from None
            if result.description is None:
                return {"columns": [], "rows": [], "more": False}
            rows = result.fetchmany(SQL_ROWS + 1)
            return {"columns": [d[0] for d in result.description], "rows": rows[:SQL_ROWS],
                    "more": len(rows) > SQL_ROWS}


def eval_overview(manifest: dict) -> dict:
    """An eval run's metrics for the overview: the splits as table rows and the pass@k plot (SVG)."""
    metrics = manifest.get("metrics")
    if not metrics or not (metrics.get("overall") or {}).get("prompts"):
        return {}
    from cotforge.evaluation.plot import pass_at_k_svg
    from cotforge.evaluation.table import metric_names

    overall = metrics["overall"]
    splits = [("overall", overall)]
    for scope in ("source", "domain"):
        groups = metrics.get(f"by_{scope}") or {}
        if len(groups) > 1:
            splits += [(f"{scope} = {name}", values) for name, values in groups.items()]
    return {"eval": {"names": metric_names(overall), "splits": splits, "plot": pass_at_k_svg(overall)}}


def _listed_views(con: duckdb.DuckDBPyConnection) -> None:
    """`listed`: samples with the checks' verdict, the latest review and the verdict after it."""
    reviewed = con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'review_latest'").fetchone()[0]
    if reviewed:
        con.execute("""CREATE TEMP VIEW listed AS
            SELECT s.*, r.decision AS review, coalesce(r.decision IN ('accept', 'edit'), s.accepted) AS final_accepted,
                   r.reasoning AS edited_reasoning, r.summary AS edited_summary
            FROM samples s LEFT JOIN review_latest r ON r.sample_id = s.id""")
    else:
        con.execute("""CREATE TEMP VIEW listed AS
            SELECT *, NULL::VARCHAR AS review, accepted AS final_accepted, NULL::VARCHAR AS edited_reasoning,
                   NULL::VARCHAR AS edited_summary FROM samples""")


def _records(result) -> list[dict]:
    columns = [d[0] for d in result.description]
    return [dict(zip(columns, row)) for row in result.fetchall()]


def _scalar(con, sql: str, args: list):
    return con.execute(sql, args).fetchone()[0]


def compare(left: RunView, right: RunView, page: int) -> dict:
    """Samples present in both runs (by id) whose checks' verdict differs, with each side's first failure."""
    con = duckdb.connect()
    try:
        for alias, run in (("a", left), ("b", right)):
            shards = RunDir(run.path).shards("samples")
            if not shards:
                raise CotforgeError(f"{run.path}: has no samples")
            files = ", ".join(sql_literal(s) for s in shards)
            con.execute(f"""CREATE VIEW {alias} AS SELECT id, prompt, accepted, {FIRST_FAIL}.check AS failed_check,
                {FIRST_FAIL}.reason AS failed_reason FROM read_parquet([{files}], union_by_name=true)""")
        con.execute("""CREATE TEMP TABLE changed AS
            SELECT a.id, left(a.prompt, 120) AS prompt, a.accepted AS left_accepted, b.accepted AS right_accepted,
                   a.failed_check AS left_check, a.failed_reason AS left_reason,
                   b.failed_check AS right_check, b.failed_reason AS right_reason
            FROM a JOIN b USING (id) WHERE a.accepted IS DISTINCT FROM b.accepted""")
        both = _scalar(con, "SELECT count(*) FROM a JOIN b USING (id)", [])
        flips = dict(con.execute("SELECT left_accepted, count(*) FROM changed GROUP BY 1").fetchall())
        total = _scalar(con, "SELECT count(*) FROM changed", [])
        rows = _records(con.execute(f"SELECT * FROM changed ORDER BY id LIMIT {PAGE_ROWS} OFFSET {page * PAGE_ROWS}"))
    finally:
        con.close()
    return {"both": both, "total": total, "now_rejected": flips.get(True, 0), "now_accepted": flips.get(False, 0),
            "rows": rows, "page": page, "pages": max(1, -(-total // PAGE_ROWS))}
