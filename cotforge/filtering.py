"""`filter_samples`: run the check chain over sample files into a resumable run folder.

Input rows are taken in fixed-size chunks; chunk i becomes `samples/part-i.parquet` (and
`quarantine/part-i.parquet` when it had bad rows, written first). A rerun of the same command skips
chunks whose samples shard exists, so a killed run resumes without duplicates or losses.
"""

from __future__ import annotations

from pathlib import Path

from cotforge.checks.chain import parse_specs, verdict_rows
from cotforge.io.errors import CotforgeError
from cotforge.io.normalize import Normalizer
from cotforge.io.readers import read_rows
from cotforge.io.rows import BAD_ROW_MODES, chunks, split_bad_rows
from cotforge.io.rundir import RunDir
from cotforge.judge import JudgedChain, judge_funnel
from cotforge.progress import Progress
from cotforge.schema import QUARANTINE_SCHEMA, SAMPLE_SCHEMA, to_table
from cotforge.stats import run_counts

CHUNK_ROWS = 2000


def filter_samples(inputs: list[str | Path], out: str | Path, checks: str = "r1", jobs: int | None = None,
                   bad_rows: str = "fail", fields: dict | None = None, overwrite: bool = False,
                   chunk_rows: int = CHUNK_ROWS, argv: list[str] | None = None) -> dict:
    """Judge every sample in `inputs`; returns the run's counts and funnel."""
    if bad_rows not in BAD_ROW_MODES:
        raise CotforgeError(f"--bad-rows {bad_rows!r}: choose fail or quarantine")
    specs = parse_specs(checks)
    chain = JudgedChain(specs, jobs)  # rule checks in the worker pool, then any judge in engine batches
    config = {"checks": chain.config(), "bad_rows": bad_rows, "fields": fields or {}, "chunk_rows": chunk_rows}
    with RunDir.open(out, "filter", config, inputs, argv=argv, overwrite=overwrite) as run:
        normalize = Normalizer("sample", fields)
        raw_rows = (raw for path in inputs for raw in read_rows(path))
        with chain, Progress("filter") as progress:
            for index, raw_chunk in enumerate(chunks(raw_rows, chunk_rows)):
                if run.has_shard("samples", index):
                    progress.advance(len(raw_chunk))
                    continue
                samples, quarantined = split_bad_rows(raw_chunk, normalize, bad_rows)
                results = chain.run(samples)
                rows = verdict_rows(samples, results, chain.names)
                if quarantined:
                    run.write_shard("quarantine", index, to_table(quarantined, QUARANTINE_SCHEMA))
                run.write_shard("samples", index, to_table(rows, SAMPLE_SCHEMA))
                progress.advance(len(raw_chunk), accepted=sum(r["accepted"] for r in rows))
        counts = {**run_counts(run.path, chain.names), "infrastructure": chain.infrastructure()}
        judged = {"judge": judge_funnel(run.path, [s.config.name for s in chain.judges], chain.stats)} \
            if chain.judges else {}
        run.update_manifest(status="complete", counts={k: counts[k] for k in
                                                       ("rows_read", "accepted", "rejected", "quarantined")},
                            funnel=counts["funnel"], infrastructure=counts["infrastructure"], **judged)
    return {**counts, **judged}
