"""Streaming rejection sampling (`cotforge generate`): the engine always has work queued.

Up to `max_inflight` sequences are outstanding at the engine (default: `engine.max_inflight`, what
saturates it), topped up as each request finishes. A prompt asks in waves (`allocation.next_wave`):
its first wave is `k` samples; when a wave's verdicts arrive, its next wave is planned from them at
once and goes ahead of new prompts (it is on that prompt's critical path), with no barrier across
prompts. Finished requests are judged by the check chain in its own thread (`checking.Checker`), so
submission never waits on the checks. Judged samples are committed as one atomic shard once
`shard_size` of them are waiting or the oldest has waited `shard_age_s`.

Crash safety (kill -9 at any instant, then the same command): a wave is sent, judged and committed as
a unit, and rows are committed in the order they were judged, so a prompt's committed waves are
always a prefix of the waves it planned. A restart rebuilds each prompt's state from the committed
shards and plans again; `next_wave` depends only on those verdicts and the config, and seeds only on
(run seed, prompt, first sample index), so the waves that were planned but not committed are asked
again with the same sizes and seeds (sample i of a prompt: the prompt's seed + i, whatever wave it is
in), nothing committed is asked twice, and committed shards are
never rewritten. The recorded `seed` is the seed the sample was generated with (`Completion.seed`
where the engine sets it, else the request's seed + j).
"""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cotforge.checks.chain import Chain, parse_specs, preset_options
from cotforge.engines.base import Engine, Finished, Request, SamplingParams, check_options, get_engine
from cotforge.generate.allocation import PromptState, next_wave
from cotforge.generate.checking import Checker
from cotforge.generate.config import GenerateConfig, sample_seed
from cotforge.generate.prompts import FreshPrompts, PromptFile
from cotforge.generate.resume import read_committed_keys
from cotforge.generate.templates import render_request
from cotforge.io.errors import CotforgeError
from cotforge.io.rows import BAD_ROW_MODES
from cotforge.io.rundir import RunDir
from cotforge.parsing import opens_think, split_completion
from cotforge.progress import Progress
from cotforge.schema import (PROMPT_COPIED, QUARANTINE_SCHEMA, SAMPLE_SCHEMA, to_table,
                             user_text)

ENGINE_REASON = "engine: "  # quarantine reasons of prompts the engine could not serve start with this
COPIED = PROMPT_COPIED  # every prompt field the checks may read travels with its samples


class Scheduler:
    """One generate run over one run folder."""

    def __init__(self, prompts_path: str | Path, out: str | Path, config: GenerateConfig,
                 engine: Engine | None = None, overwrite: bool = False, fields: dict | None = None,
                 bad_rows: str = "fail", argv: list[str] | None = None, command: str = "generate",
                 finalize=None):
        """`command`: what the manifest names the run (`eval` runs are written by this loop too);
        `finalize(run) -> dict`: called once sampling is done, before the run is marked complete, with
        the run folder still locked (eval computes its votes and metrics there); its dict goes into
        the manifest and the summary."""
        if bad_rows not in BAD_ROW_MODES:
            raise CotforgeError(f"--bad-rows {bad_rows!r}: choose fail or quarantine")
        if engine is None:
            check_options(config.engine, config.engine_build_options())  # one line before any model load
        self.config = config
        self.prompts_path = str(prompts_path)
        self.params = SamplingParams(config.temperature, config.top_p, config.max_tokens)
        self.finalize = finalize
        self.run = RunDir.open(out, command, {**config.output_config(), "fields": fields or {},
                                                 "bad_rows": bad_rows}, [prompts_path], argv=argv,
                               overwrite=overwrite)
        # Prompts are read from the run's prompts shard when started, not all held (generate/prompts.py).
        self.prompt_file = PromptFile(self.run, prompts_path, fields, bad_rows)
        self.prompts: dict[str, dict] = {}  # rows of the prompts being worked on
        specs = parse_specs(config.checks)  # a wrong preset name fails here, before any request
        # rules, then any judge batched; built in the checker's thread (see checking.py)
        # unverified samples are rejected unless the preset says `allow_unverified: true`
        allow_unverified = preset_options(config.checks).get("allow_unverified", False)
        self._build_chain = lambda: Chain(specs, config.check_workers(), allow_unverified=allow_unverified)
        self.names: list[str] = []
        self._engine = engine
        self._owns_engine = engine is None  # close only an engine this run built
        # State of the prompts with samples committed or asked and not done; a done prompt leaves it,
        # counted in `prompts_finished` / `prompts_done`, and a prompt not in it has nothing yet.
        self.state: dict[str, PromptState] = {}
        self.prompts_finished = 0  # prompts with nothing left to ask (done, budget spent or refused)
        self.prompts_done = 0  # ... of which reached `accept`
        self.accepted = 0  # kept current: the progress line shows it
        self._finished_before: pa.Array | None = None  # ids of the prompts finished in earlier sessions
        self._load_state()
        self.tokens = 0
        self.generated = 0
        self.outstanding = 0  # requests submitted and not yet back
        self._buffer: list[dict] = []  # judged rows waiting for their shard
        self._buffer_since = 0.0
        self._quarantine: list[dict] = []  # prompts the engine refused, committed with the next shard
        # Next shard index per table, counted here: listing the folder at every commit costs O(shards)
        # each time, and a 1M-prompt run commits ~16K shards.
        self._next_shard = {table: self.run.next_shard_index(table) for table in ("samples", "quarantine")}

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = get_engine(self.config.engine, **self.config.engine_build_options())
        return self._engine

    # -- state -------------------------------------------------------------------------------------
    def _load_state(self) -> None:
        """Each prompt's state from the keys of its committed samples (generate/resume.py reads them
        fast at any size) and the prompts the engine refused; finished prompts are only counted."""
        keys, self.key_index = read_committed_keys(self.run)
        self.accepted = pc.sum(keys.column("accepted")).as_py() or 0
        per_prompt = keys.group_by("prompt_id").aggregate(
            [("prompt_id", "count"), ("accepted", "sum"), ("round", "count_distinct")])
        del keys
        for prompt_id, spent, accepted, waves in zip(*(per_prompt.column(c).to_pylist() for c in (
                "prompt_id", "prompt_id_count", "accepted_sum", "round_count_distinct"))):
            self.state[prompt_id] = PromptState(spent=spent, accepted=accepted or 0, waves=waves)
        del per_prompt
        for shard in self.run.shards("quarantine"):
            table = pq.read_table(shard, columns=["reason", "raw"])
            for reason, raw in zip(table.column("reason").to_pylist(), table.column("raw").to_pylist()):
                if reason and reason.startswith(ENGINE_REASON):
                    self.state.setdefault(json.loads(raw)["id"], PromptState()).quarantined = True
        finished = [pid for pid, prompt in self.state.items() if self.done(prompt)]
        for prompt_id in finished:
            self._retire(prompt_id)
        self._finished_before = pa.array(finished, pa.string())

    def _start(self, prompt_id: str, row: dict) -> None:
        """A prompt is being worked on: hold its row, and its state from now on."""
        self.prompts[prompt_id] = row
        self.state.setdefault(prompt_id, PromptState())

    def _retire(self, prompt_id: str) -> None:
        """Nothing left to ask for this prompt: count it, forget its row and state."""
        prompt = self.state.pop(prompt_id)
        self.prompts.pop(prompt_id, None)
        self.prompts_finished += 1
        self.prompts_done += prompt.accepted >= self.config.accept

    def done(self, prompt: PromptState) -> bool:
        return next_wave(prompt, self.config) == 0

    # -- the loop ----------------------------------------------------------------------------------
    def run_all(self) -> dict:
        start = time.monotonic()
        engine = self.engine
        max_inflight = self.config.concurrency or engine.max_inflight
        fresh = FreshPrompts(self.prompt_file, self._start, self.prompts.pop, skip=self._finished_before)
        self._finished_before = None
        follow_ups: deque[str] = deque()
        waves: dict[int, tuple[Request, int]] = {}  # id(request) -> (request, wave index)
        checker = Checker(self._build_chain)
        with checker, Progress("generate", total=self.prompt_file.count, unit="prompts") as progress:
            progress.advance(self.prompts_finished)
            try:
                while fresh or follow_ups or self.outstanding or checker.pending:
                    # Top up: follow-up waves first, then new prompts, until the engine holds max_inflight.
                    while engine.inflight < max_inflight and (follow_ups or fresh):
                        source = follow_ups or fresh
                        prompt_id = source.popleft()
                        request = self._request(prompt_id)
                        if request is None:
                            continue
                        if engine.inflight + request.n > max_inflight and engine.inflight > 0:
                            source.appendleft(prompt_id)  # whole waves only: it goes at the next top-up
                            break
                        waves[id(request)] = (request, self.state[prompt_id].waves)
                        engine.submit(request, self.params)
                        self.outstanding += 1
                    # Wait briefly when the checker may have verdicts: they plan the next waves.
                    for finished in engine.poll(0.005 if checker.pending else 0.05):
                        request, wave = waves.pop(id(finished.request))
                        self.outstanding -= 1
                        if finished.error is not None:
                            self._refuse(request.key, finished.error)
                            self._retire(request.key)
                            progress.advance(1)
                            continue
                        checker.submit(self._rows(finished, wave))
                    for rows in checker.results():
                        prompt_id = rows[0]["prompt_id"]
                        self._take(rows)
                        if self.done(self.state[prompt_id]):
                            self._retire(prompt_id)
                            progress.advance(1, samples=self.generated, accepted=self.accepted,
                                             tok_s=f"{self.tokens / max(time.monotonic() - start, 1e-9):.1f}")
                        else:
                            follow_ups.append(prompt_id)
                        self._maybe_commit()
                    self._maybe_commit()  # by age, also while nothing new was judged
                self.names = checker.names()
            finally:
                self._commit()  # judged rows are complete: keep them whatever stopped the loop
        return self.finish(time.monotonic() - start)

    def _request(self, prompt_id: str) -> Request | None:
        prompt = self.state[prompt_id]
        n = next_wave(prompt, self.config)
        if n == 0:
            return None
        row = self.prompts[prompt_id]
        messages, raw = render_request(self.config.template, row.get("prompt"), row.get("messages"))
        # Waves are committed whole and in order, so the next sample index is the count judged so far.
        # Sample i of a prompt is generated with seed(prompt) + i, however its waves are cut.
        return Request(prompt_id, messages, n=n, raw_prompt=raw, first_index=prompt.spent,
                       seed=sample_seed(self.config.seed, prompt_id, prompt.spent))

    def _rows(self, finished: Finished, wave: int) -> list[dict]:
        request, completions = finished.request, finished.completions
        if len(completions) != request.n:
            raise CotforgeError(f"engine returned {len(completions)} completions for {request.key}, "
                                f"asked {request.n}")
        prompt = self.prompts[request.key]
        rows = []
        for offset, completion in enumerate(completions):
            index = request.first_index + offset
            # a plain-text prompt that ends inside <think> (R1-Zero's): no </think> means no summary at all
            opened = opens_think(request.raw_prompt)
            parsed = split_completion(completion.text, opened=opened)
            rows.append({
                "id": f"{request.key}-{index}", "prompt_id": request.key, "sample_idx": index, "round": wave,
                "prompt": prompt.get("prompt") or user_text(prompt.get("messages")),
                "messages": prompt.get("messages"),
                **{k: prompt.get(k) for k in COPIED},
                "model": self.engine.model, "engine": self.engine.name,
                "temperature": self.params.temperature, "top_p": self.params.top_p,
                "max_tokens": self.params.max_tokens,
                "seed": completion.seed if completion.seed is not None else request.seed + offset,
                "completion": completion.text, "reasoning": parsed.reasoning, "summary": parsed.summary,
                "finish_reason": completion.finish_reason, "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "think_opened": opened,  # for the checks (parsing.split_sample); not a stored column
            })
        return rows

    def _take(self, rows: list[dict]) -> None:
        """One judged wave: into the prompt's state (plans its next wave) and the commit buffer."""
        prompt = self.state[rows[0]["prompt_id"]]
        prompt.spent += len(rows)
        accepted = sum(row["accepted"] for row in rows)
        prompt.accepted += accepted
        self.accepted += accepted
        prompt.waves += 1
        self.tokens += sum(row["completion_tokens"] or 0 for row in rows)
        self.generated += len(rows)
        if not self._buffer:
            self._buffer_since = time.monotonic()
        self._buffer.extend(rows)

    def _refuse(self, prompt_id: str, error: str) -> None:
        """The engine cannot serve this prompt at all (e.g. longer than the context): quarantine it."""
        self.state[prompt_id].quarantined = True
        prompt = self.prompts[prompt_id]
        raw = json.dumps({"id": prompt_id, "prompt": prompt.get("prompt"), "messages": prompt.get("messages")})
        self._quarantine.append({"file": self.prompts_path, "line": None, "field": "prompt",
                                 "reason": ENGINE_REASON + error, "raw": raw})
        if not self._buffer:
            self._buffer_since = time.monotonic()

    def _maybe_commit(self) -> None:
        waiting = len(self._buffer) + len(self._quarantine)
        if waiting and (len(self._buffer) >= self.config.shard_size
                        or time.monotonic() - self._buffer_since >= self.config.shard_age_s):
            self._commit()

    def _commit(self) -> None:
        """Judged rows (and refused prompts) as one atomic shard each; quarantine first, so a prompt
        whose refusal landed is never asked again."""
        if self._quarantine:
            self.run.write_shard("quarantine", self._take_shard_index("quarantine"),
                                 to_table(self._quarantine, QUARANTINE_SCHEMA))
            self._quarantine = []
        if self._buffer:
            index = self._take_shard_index("samples")
            self.run.write_shard("samples", index, to_table(self._buffer, SAMPLE_SCHEMA))
            self.key_index.record(index, self._buffer)  # the resume index (generate/resume.py)
            self._buffer = []

    def _take_shard_index(self, table: str) -> int:
        index = self._next_shard[table]
        self._next_shard[table] += 1
        return index

    def finish(self, seconds: float) -> dict:
        from cotforge.stats import run_counts  # DuckDB: imported when needed, not before the first request

        counts = run_counts(self.run.path, self.names)
        samples = counts["accepted"] + counts["rejected"]
        summary = {
            **{k: counts[k] for k in ("rows_read", "accepted", "rejected", "quarantined", "completion_tokens")},
            "prompts": self.prompt_file.count,
            "prompts_done": self.prompts_done + sum(p.accepted >= self.config.accept for p in self.state.values()),
            "samples": samples, "accept_rate": counts["accepted"] / max(samples, 1),
            "seconds_this_session": round(seconds, 2),
            "tokens_per_s_this_session": round(self.tokens / max(seconds, 1e-9), 2),
        }
        extra = self.finalize(self.run) if self.finalize else {}
        self.run.update_manifest(status="complete", counts=summary, funnel=counts["funnel"], **extra)
        self.close()
        return {**summary, "funnel": counts["funnel"], **extra}

    def close(self) -> None:
        if self._owns_engine and self._engine is not None:
            self._engine.close()
            self._engine = None
        self.run.close()  # release the run folder's writer lock


def generate(prompts_path: str | Path, out: str | Path, config: GenerateConfig | None = None,
             engine: Engine | None = None, **kwargs) -> dict:
    """Run (or resume) rejection sampling; returns the summary with its funnel."""
    scheduler = Scheduler(prompts_path, out, config or GenerateConfig(), engine=engine, **kwargs)
    try:
        return scheduler.run_all()
    finally:
        scheduler.close()


def format_generate_summary(summary: dict) -> str:
    from cotforge.stats import format_summary

    head = (f"prompts {summary['prompts']}: {summary['prompts_done']} reached accept; samples {summary['samples']}, "
            f"accept rate {summary['accept_rate']:.1%}, completion tokens {summary['completion_tokens']}, "
            f"{summary['tokens_per_s_this_session']} tokens/s this session")
    return head + "\n" + format_summary(summary)
