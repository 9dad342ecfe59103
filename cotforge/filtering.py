"""`filter_samples`: run the check chain over sample files into a resumable run folder.

Input rows are taken in fixed-size chunks; chunk i becomes `samples/part-i.parquet` (and
`quarantine/part-i.parquet` when it had bad rows, written first). A rerun of the same command skips
chunks whose samples shard exists, so a killed run resumes without duplicates or losses.

Where the chain runs is the executor's business (`cotforge.executors`): `local` (this machine's
process pool) or `ray` (`cotforge.cluster.filter`, actors on a Ray cluster committing into the same
folder), picked by name. The executor is not part of the run's configuration: a run started on one may
be resumed on the other.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from cotforge.checks.chain import Chain, parse_specs, preset_options
from cotforge.executors import Committed, Job, check_executor, executor_for
from cotforge.io.atomic import check_writable
from cotforge.errors import CotforgeError
from cotforge.io.generations import expand_generations
from cotforge.io.normalize import Normalizer
from cotforge.io.readers import read_rows
from cotforge.io.rows import BAD_ROW_MODES, chunks, split_bad_rows
from cotforge.io.rundir import RunDir, source_marks
from cotforge.judge import judge_funnel
from cotforge.progress import Progress
from cotforge.schema import QUARANTINE_SCHEMA, to_table
from cotforge.stats import run_counts

CHUNK_ROWS = 2000


def committed_ids(run: RunDir, index: int) -> list[str]:
    return pq.read_table(run.shard_path("samples", index), columns=["id"]).column("id").to_pylist()


def committed_accepted(run: RunDir, index: int) -> int:
    return sum(pq.read_table(run.shard_path("samples", index), columns=["accepted"]).column("accepted").to_pylist())


def filter_samples(inputs: list[str | Path], out: str | Path, checks: str = "r1", jobs: int | None = None,
                   bad_rows: str = "fail", fields: dict | None = None, overwrite: bool = False,
                   chunk_rows: int = CHUNK_ROWS, argv: list[str] | None = None, executor: str = "local",
                   address: str | None = None, allow_partial: bool = False) -> dict:
    """Judge every sample in `inputs`; returns the run's counts and funnel.

    An input that is an unfinished run (killed, or still being written) is refused unless
    `allow_partial`; the output then carries the partial mark (manifest `partial`, the data card).

    `executor="ray"` runs the chain on a Ray cluster (`address`, default $RAY_ADDRESS or a local Ray);
    there `jobs` is the number of Ray workers (one CPU each; default every CPU of the cluster).
    """
    if bad_rows not in BAD_ROW_MODES:
        raise CotforgeError(f"--bad-rows {bad_rows!r}: choose fail or quarantine")
    if chunk_rows < 1:
        raise CotforgeError(f"--chunk-rows {chunk_rows}: must be at least 1")
    check_executor(executor)
    marks = source_marks(inputs, "filter", allow_partial)  # before any output folder is made
    specs = parse_specs(checks)
    # Rule checks in the worker pool, then any judge in engine batches; on Ray both live in the workers.
    # Unverified samples are rejected unless the preset says `allow_unverified: true`.
    allow_unverified = preset_options(checks).get("allow_unverified", False)
    chain = Chain(specs, jobs if executor == "local" else 0, allow_unverified=allow_unverified)
    config = {"checks": chain.config(), "bad_rows": bad_rows, "fields": fields or {}, "chunk_rows": chunk_rows}
    with RunDir.open(out, "filter", config, inputs, argv=argv, overwrite=overwrite) as run:
        normalize = Normalizer("sample", fields)
        # A row of several generations (OpenR1-Math's `generations`) is judged as one sample per generation.
        raw_rows = expand_generations(raw for path in inputs for raw in read_rows(path))
        seen_ids: set[str] = set()
        pool = executor_for(executor, Job(chain, specs, run, jobs, address, allow_unverified))
        accepted = 0
        with pool, Progress("filter") as progress:
            def advance(committed: list[Committed]) -> None:
                nonlocal accepted
                for chunk in committed:
                    accepted += chunk.accepted
                    progress.advance(chunk.rows_read, accepted=accepted)

            for index, raw_chunk in enumerate(chunks(raw_rows, chunk_rows)):
                if run.has_shard("samples", index):  # committed by an earlier session: rows and accepted
                    seen_ids.update(committed_ids(run, index))  # both count, the rate does not
                    accepted += committed_accepted(run, index)
                    progress.resumed(len(raw_chunk), accepted=accepted)
                    continue
                check_writable(run.path)  # a full disk is reported before a chunk is judged, not after
                samples, quarantined = split_bad_rows(raw_chunk, normalize, bad_rows, seen_ids)
                if quarantined:
                    run.write_shard("quarantine", index, to_table(quarantined, QUARANTINE_SCHEMA))
                advance(pool.submit(index, samples, len(raw_chunk)))
            advance(pool.finish())
        counts = {**run_counts(run.path, chain.names), "infrastructure": pool.infrastructure()}
        if counts["rows_read"] == 0:
            raise CotforgeError(f"{', '.join(map(str, inputs))}: no rows to filter (the input is empty)")
        judged = {"judge": judge_funnel(run.path, [s.config.name for s in chain.judges], pool.stats)} \
            if chain.judges else {}
        run.update_manifest(status="complete", counts={k: counts[k] for k in
                                                       ("rows_read", "accepted", "rejected", "quarantined")},
                            funnel=counts["funnel"], infrastructure=counts["infrastructure"], **judged,
                            **({"partial": marks} if marks else {}))
    return {**counts, **judged}
