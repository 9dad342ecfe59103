"""`filter_samples`: run the check chain over sample files into a resumable run folder.

Input rows are taken in fixed-size chunks; chunk i becomes `samples/part-i.parquet` (and
`quarantine/part-i.parquet` when it had bad rows, written first). A rerun of the same command skips
chunks whose samples shard exists, so a killed run resumes without duplicates or losses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from cotforge.checks.chain import Result
from cotforge.io.errors import BadRow, CotforgeError
from cotforge.io.normalize import Normalizer
from cotforge.io.readers import RawRow, read_rows
from cotforge.io.rundir import RunDir
from cotforge.judge import JudgedChain, judge_funnel
from cotforge.progress import Progress
from cotforge.schema import QUARANTINE_SCHEMA, SAMPLE_SCHEMA, to_table
from cotforge.stats import run_counts

BAD_ROW_MODES = ("fail", "quarantine")
CHUNK_ROWS = 2000


def chunks(rows: Iterable, size: int) -> Iterator[list]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


def split_bad_rows(raw_rows: list[RawRow], normalize: Normalizer, bad_rows: str) -> tuple[list[dict], list[dict]]:
    """Normalize a chunk; bad rows raise (mode 'fail') or become quarantine records."""
    good, quarantined = [], []
    for raw in raw_rows:
        try:
            good.append(normalize(raw))
        except BadRow as bad:
            if bad_rows == "fail":
                raise
            quarantined.append(bad.quarantine_record())
    return good, quarantined


def verdict_rows(samples: list[dict], results: list[Result], names: list[str]) -> list[dict]:
    """Attach verdicts, extracted answer and the accepted flag to each sample."""
    for sample, result in zip(samples, results):
        sample["verdicts"] = [{"check": name, "passed": v.passed, "score": v.score, "reason": v.reason}
                              for name, v in zip(names, result.verdicts)]
        if result.answer is not None:
            sample["answer"] = result.answer
        sample["accepted"] = result.accepted
    return samples


def filter_samples(inputs: list[str | Path], out: str | Path, checks: str = "r1", jobs: int | None = None,
                   bad_rows: str = "fail", fields: dict | None = None, overwrite: bool = False,
                   chunk_rows: int = CHUNK_ROWS, argv: list[str] | None = None) -> dict:
    """Judge every sample in `inputs`; returns the run's counts and funnel."""
    if bad_rows not in BAD_ROW_MODES:
        raise CotforgeError(f"--bad-rows {bad_rows!r}: choose fail or quarantine")
    chain = JudgedChain.for_data(checks, jobs)  # rule checks in the worker pool, then any judge in engine batches
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
        counts = run_counts(run.path, chain.names)
        judged = {"judge": judge_funnel(run.path, [s.config.name for s in chain.judges], chain.stats)} \
            if chain.judges else {}
        run.update_manifest(status="complete", counts={k: counts[k] for k in
                                                       ("rows_read", "accepted", "rejected", "quarantined")},
                            funnel=counts["funnel"], **judged)
    return {**counts, **judged}
