"""Streaming rejection sampling (`cotforge generate`): the engine always has work queued.

Up to `max_inflight` sequences are outstanding at the engine (default: `engine.max_inflight`, what
saturates it), topped up as each sample finishes. Every sample is its own request (n=1), so each is
judged as soon as it ends (the check chain runs in its own thread, `checking.Checker`) and each can be
cancelled alone. A prompt asks in rounds planned by the allocation policy (`allocation.py`): when the
last sample of a round is judged, the next round is planned from the prompt's verdicts and the run's
pass-rate prior, and goes ahead of new prompts. Once a prompt has its `accept` accepted, its samples
still in flight are cancelled (`Engine.cancel`); they come back `cancelled`, are recorded in
`RUN/cancelled/` for the token accounting, and are never judged or exported. With no prompt left to
start, free slots go to extra samples of unfinished prompts (the tail fill). Judged samples are
committed as one atomic shard once `shard_size` of them wait or the oldest has waited `shard_age_s`.

Crash safety (kill -9 at any instant, then the same command): sample i of a prompt is always
generated with seed(run seed, prompt) + i, whatever round it lands in. A restart rebuilds each
prompt's judged indices and verdicts from the committed shards; indices not committed (in flight,
being judged, or planned) are free again and asked with their seeds; committed indices are never
asked again; committed shards are never rewritten. Round sizes depend on the run-wide prior (on what
finished first), so they may differ from the killed run's; which samples exist differs only by
cancelled siblings of prompts that reached accept (tests/runcheck.py states it as a test).
The recorded `seed` is the seed the sample was generated with (`Completion.seed` where the engine
sets it, else the request's seed + j).
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
from cotforge.checks.early import early_stops
from cotforge.engines.base import CANCELLED, EARLY_STOP, Engine, Finished, Request, SamplingParams, check_options, get_engine
from cotforge.generate.accounting import (CANCELLED_SCHEMA, CANCELLED_TABLE, STOPPED_PREFIX, accounting_of,
                                          format_accounting)
from cotforge.generate.allocation import Allocation, PassRatePrior, PromptState, allocation, pass_rate
from cotforge.generate.checking import Checker
from cotforge.generate.config import GenerateConfig, sample_seed
from cotforge.generate.prompts import FreshPrompts, PromptFile
from cotforge.generate.resume import read_committed_keys
from cotforge.stats import counts_of
from cotforge.tally import TallyIndex
from cotforge.generate.templates import render_request
from cotforge.errors import CotforgeError
from cotforge.io.rows import BAD_ROW_MODES
from cotforge.io.rundir import RunDir
from cotforge.parsing import opens_think, split_completion
from cotforge.progress import Progress
from cotforge.schema import PROMPT_COPIED, QUARANTINE_SCHEMA, SAMPLE_SCHEMA, to_table, user_text

ENGINE_REASON = "engine: "  # quarantine reasons of prompts the engine could not serve start with this
COPIED = PROMPT_COPIED  # every prompt field the checks may read travels with its samples
TAIL_FILL = 1.0  # share of max_inflight the tail fill keeps busy (see Scheduler._fill_tail)
WARMING_BACKLOG = 4  # rows waiting for verdicts while the check pool starts, in max_inflights (run_all)


def _engine_record(engine: Engine | None) -> dict:
    """What the manifest says sampled the run when an engine object is given: that object's name and
    model, not the config's defaults (which name the engine a run would have built)."""
    if engine is None:
        return {}
    return {key: value for key, value in (("engine", engine.name), ("model", engine.model)) if value}


class Scheduler:
    """One generate run over one run folder."""

    def __init__(self, prompts_path: str | Path, out: str | Path, config: GenerateConfig,
                 engine: Engine | None = None, overwrite: bool = False, fields: dict | None = None,
                 bad_rows: str = "fail", argv: list[str] | None = None, command: str = "generate",
                 finalize=None, policy: Allocation | None = None):
        """`command`: what the manifest names the run (`eval` runs are written by this loop too);
        `finalize(run) -> dict`: called once sampling is done, before the run is marked complete, with
        the run folder still locked (eval computes its votes and metrics there); its dict goes into
        the manifest and the summary. `policy`: the allocation (default: the config's, allocation.py)."""
        if bad_rows not in BAD_ROW_MODES:
            raise CotforgeError(f"--bad-rows {bad_rows!r}: choose fail or quarantine")
        if engine is None:
            check_options(config.engine, config.engine_build_options())  # one line before any model load
        self.config = config
        self.policy = policy or allocation(config)
        self.prompts_path = str(prompts_path)
        specs = parse_specs(config.checks)  # a wrong preset name fails here, before any request ...
        Chain.validate(specs)  # ... and so does a wrong option or a missing dependency
        # The engine's early stop (checks/early.py): the chain's checks, watched while samples are generated.
        self.early = early_stops(specs, config.early_stop)
        self.params = SamplingParams(config.temperature, config.top_p, config.max_tokens,
                                     config.repetition_rule(), early_stop=self.early)
        self.finalize = finalize
        self.command = command
        self.run = RunDir.open(out, command, {**config.output_config(), **_engine_record(engine),
                                              "fields": fields or {}, "bad_rows": bad_rows},
                               [prompts_path], argv=argv, overwrite=overwrite)
        # Prompts are read from the run's prompts shard when started, not all held (generate/prompts.py).
        self.prompt_file = PromptFile(self.run, prompts_path, fields, bad_rows)
        self.prompts: dict[str, dict] = {}  # rows of the prompts being worked on
        # Per prompt worked on: the fields every sample row of it shares, built once (_rows).
        self._row_base: dict[str, dict] = {}
        # rules, then any judge batched; built in the checker's thread (see checking.py)
        # unverified samples are rejected unless the preset says `allow_unverified: true`
        allow_unverified = preset_options(config.checks).get("allow_unverified", False)
        self._build_chain = lambda: Chain(specs, config.check_workers(), allow_unverified=allow_unverified)
        self.names: list[str] = []
        self._engine = engine
        self._owns_engine = engine is None  # close only an engine this run built
        # State of the prompts with samples committed or asked and not done; a done prompt leaves it,
        # counted in `prompts_finished` / `prompts_done`; a prompt not in it has nothing yet.
        self.state: dict[str, PromptState] = {}
        self.prompts_finished = 0  # prompts with nothing left to ask (accepted, budget spent, refused)
        self.prompts_done = 0  # ... of which reached `accept`
        self.spent = 0  # samples judged, every session: kept current (the progress line shows them)
        self.accepted = 0
        self._finished_before: pa.Array | None = None  # ids of the prompts finished in earlier sessions
        self.prior = PassRatePrior()
        # A complete run's figures, when a rerun of it may reuse them (finish): the manifest as found.
        found = self.run.manifest()
        self._complete_before = found if found.get("status") == "complete" else None
        self._load_state()
        self.tokens = 0
        self.generated = 0
        self.cancelled = 0  # samples cancelled this session
        self.outstanding = 0  # requests submitted and not yet back
        self._buffer: list[dict] = []  # judged rows waiting for their shard
        self._buffer_since = 0.0
        self._quarantine: list[dict] = []  # prompts the engine refused, committed with the next shard
        self._cancelled_rows: list[dict] = []  # cancelled samples, for the token accounting only
        self._asked: dict[int, tuple[Request, int]] = {}  # id(request) -> (request, round index)
        # The requests in flight per prompt (id(request) -> request): a cancel or the tail fill looks
        # at one prompt's, not at every request in flight (thousands, at each accepted sample).
        self._inflight_of: dict[str, dict[int, Request]] = {}
        # Next shard index per table, counted here: listing the folder at every commit costs O(shards)
        # each time, and a 1M-prompt run commits ~16K shards.
        self._next_shard = {table: self.run.next_shard_index(table)
                            for table in ("samples", "quarantine", CANCELLED_TABLE)}
        self._shards_at_start = dict(self._next_shard)
        self.tally = TallyIndex(self.run)

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
        self.spent = keys.num_rows
        self.accepted = pc.sum(keys.column("accepted")).as_py() or 0
        self.prior.judged, self.prior.accepted = self.spent, self.accepted
        refused = set()  # prompts the engine could not serve
        for shard in self.run.shards("quarantine"):
            table = pq.read_table(shard, columns=["reason", "raw"])
            for reason, raw in zip(table.column("reason").to_pylist(), table.column("raw").to_pylist()):
                if reason and reason.startswith(ENGINE_REASON):
                    refused.add(json.loads(raw)["id"])
        per_prompt = keys.group_by("prompt_id").aggregate(
            [("prompt_id", "count"), ("accepted", "sum"), ("round", "count_distinct")])
        # A finished prompt is counted and dropped at once: holding a state for each of 1M prompts
        # before retiring them was most of a resume's peak RSS (benchmarks/generate_scale.py).
        finished = []
        for prompt_id, spent, accepted, rounds in zip(*(per_prompt.column(c).to_pylist() for c in (
                "prompt_id", "prompt_id_count", "accepted_sum", "round_count_distinct"))):
            self._keep_or_count(prompt_id, PromptState(spent=spent, accepted=accepted or 0, rounds=rounds,
                                                       quarantined=prompt_id in refused), finished)
            refused.discard(prompt_id)
        del per_prompt
        for prompt_id in refused:  # refused before any sample of it was committed
            self._keep_or_count(prompt_id, PromptState(quarantined=True), finished)
        self._finished_before = pa.array(finished, pa.string())
        if self.state:  # the unfinished ones go on: which sample indices they have judged
            open_keys = keys.filter(pc.is_in(keys.column("prompt_id"), value_set=pa.array(list(self.state))))
            for prompt_id, index in zip(open_keys.column("prompt_id").to_pylist(),
                                        open_keys.column("sample_idx").to_pylist()):
                self.state[prompt_id].judged.add(index)

    def _keep_or_count(self, prompt_id: str, prompt: PromptState, finished: list[str]) -> None:
        """A prompt's state as a resume rebuilt it: kept if it goes on, else counted as finished."""
        self.policy.restore(prompt)  # a last round the kill cut short is asked to its end
        if self.done(prompt):
            self._count_finished(prompt)
            finished.append(prompt_id)
        else:
            self.state[prompt_id] = prompt

    def _start(self, prompt_id: str, row: dict) -> None:
        """A prompt is being worked on: hold its row, and its state from now on."""
        self.prompts[prompt_id] = row
        self.state.setdefault(prompt_id, PromptState())

    def _retire(self, prompt_id: str) -> None:
        """Nothing left to ask for this prompt: count it, forget its row and state."""
        prompt = self.state.pop(prompt_id)
        self.prompts.pop(prompt_id, None)
        if self.early is not None:
            self.early.forget(prompt_id)
        self._row_base.pop(prompt_id, None)
        self._count_finished(prompt)

    def _count_finished(self, prompt: PromptState) -> None:
        self.prompts_finished += 1
        self.prompts_done += prompt.accepted >= self.config.accept

    def done(self, prompt: PromptState) -> bool:
        """Nothing left to ask and nothing in flight."""
        return not prompt.asked and self.policy.round_size(prompt, self.prior) == 0

    # -- the loop ----------------------------------------------------------------------------------
    def run_all(self) -> dict:
        start = time.monotonic()
        engine = self.engine
        max_inflight = self.config.concurrency or engine.max_inflight
        # Verdicts may lag by what the engine could hold at first (its nominal concurrency), also once an
        # openai engine has lowered max_inflight to its servers' batches: the checks keep their pace.
        held = max_inflight
        # Prompts not started yet, read from the prompts shard as slots free up (generate/prompts.py).
        fresh = FreshPrompts(self.prompt_file, self._start, self.prompts.pop, skip=self._finished_before)
        self._finished_before = None
        follow_ups = FollowUps()
        checker = Checker(self._build_chain)

        def backlog(checker: Checker) -> int:
            """Samples that may wait for verdicts before no more are asked. Until the chain's first
            verdicts its pool is still starting (imports and warm-up: seconds), not slow: the engine
            is kept fed meanwhile, up to WARMING_BACKLOG x max_inflight rows held."""
            return held * (1 if checker.judged else WARMING_BACKLOG)
        with checker, Progress(self.command, total=self.prompt_file.count, unit="prompts") as progress:
            # One basis on the line: prompts, samples and accepted all count every session; the rate is this one's.
            progress.resumed(self.prompts_finished, samples=self.spent, accepted=self.accepted)

            def settle(prompt_id: str) -> None:
                """After a verdict or a cancel: plan the prompt's next round, or count it done."""
                prompt = self.state.get(prompt_id)
                if prompt is None or prompt.asked:
                    return  # done already; or its round is still out: the next one is planned from all its verdicts
                if self.done(prompt):
                    self._retire(prompt_id)
                    progress.advance(1, samples=self.spent, accepted=self.accepted,
                                     tok_s=f"{self.tokens / max(time.monotonic() - start, 1e-9):.1f}")
                elif prompt_id not in follow_ups:
                    follow_ups.append(prompt_id)

            try:
                while fresh or follow_ups or self.outstanding or checker.pending:
                    # Read each round: an openai engine lowers it once its servers' /metrics tell their batches.
                    max_inflight = self.config.concurrency or engine.max_inflight
                    # Top up: follow-up rounds first, then new prompts, until the engine holds max_inflight;
                    # and no more while max_inflight samples wait for their verdicts (an engine faster
                    # than the checks would otherwise have the driver hold every prompt's rows).
                    while (engine.inflight < max_inflight and checker.pending < backlog(checker)
                           and (follow_ups or fresh)):
                        source = follow_ups or fresh
                        prompt_id = source.popleft()
                        prompt = self.state.get(prompt_id)
                        if prompt is None:  # finished while it waited for a slot
                            continue
                        n = self.policy.round_size(prompt, self.prior)
                        if n == 0:
                            settle(prompt_id)
                            continue
                        if engine.inflight + n > max_inflight and engine.inflight > 0:
                            source.appendleft(prompt_id)  # whole rounds only: it goes at the next top-up
                            break
                        prompt.rounds += 1
                        self._ask(prompt_id, prompt.free_indices(self.config.sample_budget, n))
                    if (self.policy.fills_tail and self.engine.fills_tail and not fresh and not follow_ups
                            and checker.pending < backlog(checker)):
                        self._fill_tail(max_inflight)
                    # Wait briefly when the checker may have verdicts: they plan the next rounds. With
                    # nothing at the engine, only verdicts move the run on: wait for those instead.
                    judge: list[list[dict]] = []  # this poll's samples, handed to the checker at once
                    polled = engine.poll(0.005 if checker.pending else 0.05) if self.outstanding or not checker.pending \
                        else []
                    for finished in polled:
                        request, round_index = self._asked.pop(id(finished.request))
                        self._landed(request)
                        self.outstanding -= 1
                        prompt = self.state[request.key]
                        if finished.error is not None:
                            prompt.asked.discard(request.first_index)
                            self._refuse(request.key, finished.error)
                            self._cancel_prompt(request.key)
                            settle(request.key)
                            continue
                        if finished.completions and finished.completions[0].finish_reason == CANCELLED:
                            self._record_cancelled(finished, round_index)
                            settle(request.key)
                            continue
                        judge.append(self._rows(finished, round_index))
                    checker.submit(judge)
                    for rows in checker.results(wait_s=0.05 if checker.pending and not self.outstanding else 0.0):
                        for row in rows:
                            self._take(row)
                        prompt_id = rows[0]["prompt_id"]
                        prompt = self.state[prompt_id]
                        if prompt.accepted >= self.config.accept and self.policy.cancels:
                            self._cancel_prompt(prompt_id)  # spent siblings: their tokens buy nothing
                        settle(prompt_id)
                        self._maybe_commit()
                    self._maybe_commit()  # by age, also while nothing new was judged
                self.names = checker.names()
            finally:
                self._commit()  # judged rows are complete: keep them whatever stopped the loop
        return self.finish(time.monotonic() - start)

    def _ask(self, prompt_id: str, indices: list[int]) -> None:
        """One request per sample, so each is judged as soon as it ends and can be cancelled alone."""
        prompt = self.state[prompt_id]
        row = self.prompts[prompt_id]
        messages, raw = render_request(self.config.template, row.get("prompt"), row.get("messages"))
        if self.early is not None and indices:  # the language target its watchers judge against
            self.early.prepare(prompt_id, row.get("prompt") or user_text(row.get("messages")), row.get("language"))
        for index in indices:
            # Sample i of a prompt is generated with seed(prompt) + i, however its rounds are cut.
            request = Request(prompt_id, messages, n=1, raw_prompt=raw, first_index=index,
                              seed=sample_seed(self.config.seed, prompt_id, index))
            prompt.asked.add(index)
            self._asked[id(request)] = (request, prompt.rounds - 1)
            self._inflight_of.setdefault(prompt_id, {})[id(request)] = request
            self.engine.submit(request, self.params)
            self.outstanding += 1

    def _fill_tail(self, max_inflight: int) -> None:
        """No prompt waits to start: give free slots to extra samples of the unfinished prompts (a lone
        sample of the run's last prompt would leave the engine nearly empty while it decodes).

        The hardest first (lowest pass rate so far, then fewest in flight): a prompt that keeps failing
        spends its whole budget whatever the order, so asking its samples early costs no tokens, and
        its rounds, run one after another, are what the run's end waits for; an easy prompt's extra
        samples are likely cancelled siblings."""
        engine = self.engine
        if engine.inflight >= max_inflight * TAIL_FILL:
            return
        open_prompts = [pid for pid in self._inflight_of if self.policy.left(self.state[pid]) > 0]
        while open_prompts and engine.inflight < max_inflight * TAIL_FILL:
            open_prompts.sort(key=lambda pid: (pass_rate(self.state[pid], self.prior), len(self.state[pid].asked)))
            prompt_id = open_prompts[0]
            prompt = self.state[prompt_id]
            indices = prompt.free_indices(self.config.sample_budget, 1)
            self._ask(prompt_id, indices)
            if not indices or self.policy.left(prompt) == 0:
                open_prompts.pop(0)

    def _landed(self, request: Request) -> None:
        """`request` came back from the engine (done, cancelled or refused): no longer in flight."""
        mine = self._inflight_of[request.key]
        del mine[id(request)]
        if not mine:
            del self._inflight_of[request.key]

    def _cancel_prompt(self, prompt_id: str) -> None:
        requests = list(self._inflight_of.get(prompt_id, {}).values())
        if requests:
            self.engine.cancel(requests)

    def _record_cancelled(self, finished: Finished, round_index: int) -> None:
        request = finished.request
        prompt = self.state[request.key]
        prompt.asked.discard(request.first_index)
        prompt.dropped.add(request.first_index)
        self.cancelled += 1
        tokens = sum(c.completion_tokens or 0 for c in finished.completions)
        self.tokens += tokens
        self._cancelled_rows.append({"prompt_id": request.key, "sample_idx": request.first_index, "round": round_index,
                                     "seed": request.seed, "completion_tokens": tokens})

    def _rows(self, finished: Finished, round_index: int) -> list[dict]:
        request, completions = finished.request, finished.completions
        if len(completions) != request.n:
            raise CotforgeError(f"engine returned {len(completions)} completions for {request.key}, "
                                f"asked {request.n}")
        base = self._row_base.get(request.key)
        if base is None:  # the same for every sample of the prompt: built once, not per sample
            prompt = self.prompts[request.key]
            base = self._row_base[request.key] = {
                "prompt_id": request.key,
                "prompt": prompt.get("prompt") or user_text(prompt.get("messages")),
                "messages": prompt.get("messages"),
                **{k: prompt.get(k) for k in COPIED},
                "model": self.engine.model, "engine": self.engine.name,
                "temperature": self.params.temperature, "top_p": self.params.top_p,
                "max_tokens": self.params.max_tokens,
                # a plain-text prompt that ends inside <think> (R1-Zero's): no </think> means no summary at all
                "think_opened": opens_think(request.raw_prompt),
            }
        opened = base["think_opened"]
        rows = []
        for offset, completion in enumerate(completions):
            index = request.first_index + offset
            parsed = split_completion(completion.text, opened=opened)
            finish_reason = completion.finish_reason
            if finish_reason == EARLY_STOP:  # stored as stopped:<check>; the chain reads early_stop (not stored)
                finish_reason = STOPPED_PREFIX + str(completion.extra.get("check"))
            rows.append({
                **base, "id": f"{request.key}-{index}", "sample_idx": index, "round": round_index,
                "seed": completion.seed if completion.seed is not None else request.seed + offset,
                "completion": completion.text, "reasoning": parsed.reasoning, "summary": parsed.summary,
                "finish_reason": finish_reason, "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "early_stop": dict(completion.extra) if completion.finish_reason == EARLY_STOP else None,
            })  # think_opened (from base) and early_stop are for the checks; not stored columns
        return rows

    def _take(self, row: dict) -> None:
        """One judged sample: into its prompt's state (plans its next round) and the commit buffer."""
        prompt = self.state[row["prompt_id"]]
        prompt.spent += 1
        prompt.accepted += bool(row["accepted"])
        self.spent += 1
        self.accepted += bool(row["accepted"])
        prompt.judged.add(row["sample_idx"])
        prompt.asked.discard(row["sample_idx"])  # in flight, then being judged: asked until now
        self.prior.add(row["accepted"])
        self.tokens += row["completion_tokens"] or 0
        self.generated += 1
        if not self._buffer:
            self._buffer_since = time.monotonic()
        self._buffer.append(row)

    def _refuse(self, prompt_id: str, error: str) -> None:
        """The engine cannot serve this prompt at all (e.g. longer than the context): quarantine it."""
        if self.state[prompt_id].quarantined:
            return  # another sample of it was refused first
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
        whose refusal landed is never asked again; cancelled samples last (accounting only: a resumed
        run that lost them asks nothing again for them, its prompt having its accepted samples)."""
        if self._quarantine:
            self._write_shard("quarantine", to_table(self._quarantine, QUARANTINE_SCHEMA))
            self._quarantine = []
        if self._buffer:
            index = self._write_shard("samples", to_table(self._buffer, SAMPLE_SCHEMA))
            self.key_index.record(index, self._buffer)  # the resume index (generate/resume.py)
            self._buffer = []
        if self._cancelled_rows:
            self._write_shard(CANCELLED_TABLE, pa.Table.from_pylist(self._cancelled_rows, CANCELLED_SCHEMA))
            self._cancelled_rows = []

    def _write_shard(self, table: str, data: pa.Table) -> int:
        """The next shard of `table`, and its tally for the end-of-run statistics (cotforge/tally.py)."""
        index = self._take_shard_index(table)
        self.run.write_shard(table, index, data)
        self.tally.record(table, index, data)
        return index

    def _take_shard_index(self, table: str) -> int:
        index = self._next_shard[table]
        self._next_shard[table] += 1
        return index

    def _unchanged_complete(self) -> dict | None:
        """The manifest of a complete run this session added nothing to (a rerun of a finished run):
        its counts, funnel and tokens still hold, so they are not recomputed over every shard (minutes
        at 1M prompts). Only where the manifest's samples match the committed keys read at start."""
        old = self._complete_before
        if (old is None or self.finalize is not None or self._next_shard != self._shards_at_start
                or not all(key in old for key in ("counts", "funnel", "tokens"))
                or old["counts"].get("samples") != self.spent):
            return None
        return old

    def finish(self, seconds: float) -> dict:
        old = self._unchanged_complete()
        if old is not None:
            summary = {key: value for key, value in old["counts"].items() if key != "server_faults_this_session"}
            summary.update(seconds_this_session=round(seconds, 2), tokens_per_s_this_session=0.0)
            self.run.update_manifest(status="complete", counts=summary)
            self.close()
            return {**summary, "funnel": old["funnel"], "tokens": old["tokens"]}
        # From the shards' tallies (resume/tally-*), not a scan of every shard: at 1M prompts that
        # was >15 min and 1.8 GB; shards with no tally yet (an older run) are tallied once here.
        totals, groups, cancelled = self.tally.totals()
        counts = counts_of(totals, self.names)
        samples = counts["accepted"] + counts["rejected"]
        tokens = accounting_of(groups, cancelled, self.names)
        summary = {
            **{k: counts[k] for k in ("rows_read", "accepted", "rejected", "quarantined", "completion_tokens")},
            "prompts": self.prompt_file.count,
            "prompts_done": self.prompts_done + sum(p.accepted >= self.config.accept for p in self.state.values()),
            "samples": samples, "accept_rate": counts["accepted"] / max(samples, 1),
            "cancelled": tokens["cancelled"]["samples"],
            "seconds_this_session": round(seconds, 2),
            "tokens_per_s_this_session": round(self.tokens / max(seconds, 1e-9), 2),
        }
        # Server faults ridden out (retried, never judged, never charged to a prompt), counted apart.
        faults = {kind: n for kind, n in (getattr(self._engine, "faults", None) or {}).items() if n}
        if faults:
            summary["server_faults_this_session"] = faults
        extra = self.finalize(self.run) if self.finalize else {}
        self.run.update_manifest(status="complete", counts=summary, funnel=counts["funnel"], tokens=tokens, **extra)
        self.close()
        return {**summary, "funnel": counts["funnel"], "tokens": tokens, **extra}

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
    if "tokens" in summary:
        head += "\n" + format_accounting(summary["tokens"])
    faults = summary.get("server_faults_this_session")
    if faults:
        restarts = faults.get("budget_restarts", 0)
        listed = ", ".join(f"{n} {FAULT_NAMES.get(kind, kind)}" for kind, n in faults.items() if kind != "budget_restarts")
        head += (f"\n  server faults this session: {listed}; all retried, none judged or charged to a prompt"
                 + (f"; {restarts} retry budgets started again after a server came back" if restarts else ""))
    return head + "\n" + format_summary(summary)


FAULT_NAMES = {"connection": "connection errors", "timeout": "timeouts", "probe": "calls moved off a hung server",
               "http_429": "HTTP 429", "http_5xx": "HTTP 5xx", "bad_json": "200 bodies that were not JSON",
               "no_choices": "200 answers without choices", "empty_completion": "empty completions"}


class FollowUps:
    """Prompts whose next round is planned, in order: a deque with a set beside it, so that asking
    whether a prompt already waits costs O(1), not a scan of every waiting prompt."""

    def __init__(self) -> None:
        self._order: deque[str] = deque()
        self._members: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self._order)

    def __contains__(self, prompt_id: str) -> bool:
        return prompt_id in self._members

    def append(self, prompt_id: str) -> None:
        self._order.append(prompt_id)
        self._members.add(prompt_id)

    def appendleft(self, prompt_id: str) -> None:
        self._order.appendleft(prompt_id)
        self._members.add(prompt_id)

    def popleft(self) -> str:
        prompt_id = self._order.popleft()
        self._members.discard(prompt_id)
        return prompt_id
