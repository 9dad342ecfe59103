"""Rejection sampling in adaptive rounds, resumable after a crash (`cotforge generate`).

Round 0 asks every prompt for `k` samples. Each round's samples go through the same check chain
as `cotforge filter`; prompts that reached `accept` accepted samples drop out. For a prompt still
short, later rounds expect `ceil(needed / p)` more samples (p: its pass rate so far smoothed towards
the run's overall pass rate, a Beta prior; at most what is left of its `budget`) and ask for that
share of them that fits the rounds left, capped by `max_per_round`. Samples asked in a later round
are only paid for when the earlier ones failed, so spreading them saves tokens; a prompt with a
low pass rate and few rounds left gets more at once. With `adaptive: false` every short prompt gets
`k` again.

Crash safety: a round's plan (prompt -> sample indices) is written atomically before the round
starts; every finished batch of requests is one atomic shard. A restart rebuilds the state from
committed shards and asks only for planned samples that are not committed yet, so nothing is
generated twice or lost and committed samples never change.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from cotforge.engines.base import Engine, Request, SamplingParams, get_engine
from cotforge.filtering import split_bad_rows, verdict_rows
from cotforge.io.atomic import atomic_write_bytes
from cotforge.io.errors import CotforgeError
from cotforge.io.normalize import Normalizer
from cotforge.io.readers import read_rows
from cotforge.io.rundir import RunDir
from cotforge.judge import JudgedChain
from cotforge.parsing import split_completion
from cotforge.progress import Progress
from cotforge.schema import PROMPT_SCHEMA, QUARANTINE_SCHEMA, SAMPLE_SCHEMA, to_table, user_text
from cotforge.stats import run_counts
from cotforge.generate.templates import render_request

PRIOR_STRENGTH = 2.0  # pseudo-samples of the run-wide pass rate in each prompt's estimate
MIN_PASS_RATE = 0.05


@dataclass
class GenerateConfig:
    engine: str = "embedded"
    model: str | None = None
    engine_options: dict = field(default_factory=dict)
    k: int = 4  # samples per prompt in round 0 (and per round when not adaptive)
    accept: int = 1  # accepted samples wanted per prompt
    max_rounds: int = 4
    budget: int | None = None  # samples per prompt at most; default k * max_rounds
    max_per_round: int | None = None  # adaptive cap per prompt and round; default 2 * k
    adaptive: bool = True
    temperature: float = 0.6  # DeepSeek-R1's sampling
    top_p: float = 0.95
    max_tokens: int = 1024
    batch_size: int = 8  # prompts (requests) per committed shard
    checks: str | list = "r1"
    # Check workers. One is plenty next to generation (thousands of checks per second) and keeps the
    # hard per-item limits without taking cores from an engine that runs on the CPU.
    jobs: int | None = 1
    template: str = "chat"
    seed: int = 0

    @property
    def sample_budget(self) -> int:
        return self.budget or self.k * self.max_rounds

    @property
    def round_cap(self) -> int:
        return self.max_per_round or 2 * self.k

    def output_config(self) -> dict:
        """What determines the output (the resume key): everything but worker count."""
        config = asdict(self)
        config.pop("jobs")
        return config


@dataclass
class PromptState:
    spent: int = 0
    accepted: int = 0
    indices: set = field(default_factory=set)


def sample_seed(run_seed: int, prompt_id: str, sample_idx: int) -> int:
    digest = hashlib.blake2b(f"{run_seed}:{prompt_id}:{sample_idx}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def allocate(state: dict[str, PromptState], config: GenerateConfig, round_index: int) -> dict[str, int]:
    """Samples to ask per prompt this round (prompts not listed get none)."""
    spent = sum(s.spent for s in state.values())
    overall = sum(s.accepted for s in state.values()) / spent if spent else 0.5
    overall = min(max(overall, MIN_PASS_RATE), 0.95)
    plan = {}
    for prompt_id, prompt in state.items():
        left = config.sample_budget - prompt.spent
        needed = config.accept - prompt.accepted
        if needed <= 0 or left <= 0:
            continue
        if round_index == 0 or not config.adaptive:
            wanted = config.k
        else:
            rate = (prompt.accepted + PRIOR_STRENGTH * overall) / (prompt.spent + PRIOR_STRENGTH)
            expected = min(math.ceil(needed / max(rate, MIN_PASS_RATE)), left)
            # Spread the expected need over the rounds left: samples asked in a later round are only
            # paid for when earlier ones did not succeed, so fewer per round spends fewer tokens.
            rounds_left = max(config.max_rounds - round_index, 1)
            wanted = min(math.ceil(expected / rounds_left), config.round_cap)
        plan[prompt_id] = max(1, min(wanted, left))
    return plan


class Sampler:
    """One generate run over one run folder."""

    def __init__(self, prompts_path: str | Path, out: str | Path, config: GenerateConfig,
                 engine: Engine | None = None, overwrite: bool = False, fields: dict | None = None,
                 bad_rows: str = "fail", argv: list[str] | None = None):
        self.config = config
        self.params = SamplingParams(config.temperature, config.top_p, config.max_tokens)
        self.run = RunDir.open(out, "generate", {**config.output_config(), "fields": fields or {},
                                                 "bad_rows": bad_rows}, [prompts_path], argv=argv,
                               overwrite=overwrite)
        self.prompts = self._load_prompts(prompts_path, fields, bad_rows)
        self.chain = JudgedChain.for_data(config.checks, config.jobs)  # rules, then any judge batched
        self._engine = engine
        self._owns_engine = engine is None  # close only an engine this run built
        self.state: dict[str, PromptState] = {pid: PromptState() for pid in self.prompts}
        self._load_state()
        self.tokens = 0
        self.generated = 0

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            options = dict(self.config.engine_options)
            if self.config.model:
                options["model"] = self.config.model
            self._engine = get_engine(self.config.engine, **options)
        return self._engine

    def _load_prompts(self, path, fields, bad_rows) -> dict[str, dict]:
        normalize = Normalizer("prompt", fields)
        rows, quarantined = split_bad_rows(list(read_rows(path)), normalize, bad_rows)
        prompts: dict[str, dict] = {}
        for row in rows:
            if row["id"] in prompts:
                raise CotforgeError(f"{path}: prompt id {row['id']!r} appears twice; ids must be unique")
            prompts[row["id"]] = row
        if not self.run.has_shard("prompts", 0):
            if quarantined:
                self.run.write_shard("quarantine", 0, to_table(quarantined, QUARANTINE_SCHEMA))
            self.run.write_shard("prompts", 0, to_table(rows, PROMPT_SCHEMA))
        return prompts

    def _load_state(self) -> None:
        for shard in self.run.shards("samples"):
            table = pq.read_table(shard, columns=["prompt_id", "sample_idx", "accepted"])
            for prompt_id, index, accepted in zip(*(table.column(c).to_pylist() for c in table.column_names)):
                prompt = self.state[prompt_id]
                prompt.spent += 1
                prompt.accepted += bool(accepted)
                prompt.indices.add(index)

    def _plan_path(self, round_index: int) -> Path:
        return self.run.path / "rounds" / f"round-{round_index:04d}.json"

    def _plan(self, round_index: int) -> dict[str, list[int]]:
        """The round's plan: loaded when it was committed before a crash, else made and committed."""
        path = self._plan_path(round_index)
        if path.exists():
            return json.loads(path.read_text())
        counts = allocate(self.state, self.config, round_index)
        plan = {pid: list(range(self.state[pid].spent, self.state[pid].spent + n)) for pid, n in counts.items()}
        atomic_write_bytes(path, json.dumps(plan).encode())
        return plan

    def _requests(self, pending: dict[str, list[int]]) -> list[Request]:
        requests = []
        for prompt_id, indices in pending.items():
            prompt = self.prompts[prompt_id]
            messages, raw = render_request(self.config.template, prompt.get("prompt"), prompt.get("messages"))
            requests.append(Request(prompt_id, messages, n=len(indices), raw_prompt=raw, first_index=indices[0],
                                    seed=sample_seed(self.config.seed, prompt_id, indices[0])))
        return requests

    def _rows(self, requests: list[Request], outputs: list, round_index: int) -> list[dict]:
        rows = []
        for request, completions in zip(requests, outputs):
            if len(completions) != request.n:
                raise CotforgeError(f"engine returned {len(completions)} completions for {request.key}, "
                                    f"asked {request.n}")
            prompt = self.prompts[request.key]
            for offset, completion in enumerate(completions):
                index = request.first_index + offset
                parsed = split_completion(completion.text)
                rows.append({
                    "id": f"{request.key}-{index}", "prompt_id": request.key, "sample_idx": index,
                    "round": round_index, "prompt": prompt.get("prompt") or user_text(prompt.get("messages")),
                    "messages": prompt.get("messages"),
                    **{k: prompt.get(k) for k in ("gold", "domain", "language", "source", "tests", "metadata")},
                    "model": self.engine.model, "engine": self.engine.name,
                    "temperature": self.params.temperature, "top_p": self.params.top_p,
                    "max_tokens": self.params.max_tokens, "seed": sample_seed(self.config.seed, request.key, index),
                    "completion": completion.text, "reasoning": parsed.reasoning, "summary": parsed.summary,
                    "finish_reason": completion.finish_reason, "prompt_tokens": completion.prompt_tokens,
                    "completion_tokens": completion.completion_tokens,
                })
        return rows

    def _commit(self, rows: list[dict]) -> None:
        results = self.chain.run(rows)
        rows = verdict_rows(rows, results, self.chain.names)
        self.run.write_shard("samples", self.run.next_shard_index("samples"), to_table(rows, SAMPLE_SCHEMA))
        for row in rows:
            prompt = self.state[row["prompt_id"]]
            prompt.spent += 1
            prompt.accepted += row["accepted"]
            prompt.indices.add(row["sample_idx"])
            self.tokens += row["completion_tokens"] or 0
        self.generated += len(rows)

    def done(self, prompt: PromptState) -> bool:
        return prompt.accepted >= self.config.accept or prompt.spent >= self.config.sample_budget

    def run_rounds(self) -> dict:
        start = time.monotonic()
        total = len(self.state)
        with self.chain, Progress("generate", total=total, unit="prompts") as progress:
            self.chain.start()  # workers load their checks while the first batch generates
            progress.advance(sum(self.done(p) for p in self.state.values()))
            for round_index in range(self.config.max_rounds):
                plan = self._plan(round_index)
                pending = {pid: [i for i in idx if i not in self.state[pid].indices] for pid, idx in plan.items()}
                pending = {pid: idx for pid, idx in pending.items() if idx}
                items = list(pending.items())
                for at in range(0, len(items), self.config.batch_size):
                    batch = dict(items[at:at + self.config.batch_size])
                    requests = self._requests(batch)
                    before = sum(self.done(self.state[pid]) for pid in batch)
                    outputs = self.engine.generate(requests, self.params)
                    self._commit(self._rows(requests, outputs, round_index))
                    elapsed = max(time.monotonic() - start, 1e-9)
                    progress.advance(sum(self.done(self.state[pid]) for pid in batch) - before,
                                     round=round_index, samples=self.generated,
                                     accepted=sum(p.accepted for p in self.state.values()),
                                     tok_s=f"{self.tokens / elapsed:.1f}")
                if not allocate(self.state, self.config, round_index + 1):
                    break
        return self.finish(time.monotonic() - start)

    def finish(self, seconds: float) -> dict:
        counts = run_counts(self.run.path, self.chain.names)
        samples = counts["accepted"] + counts["rejected"]
        summary = {
            **{k: counts[k] for k in ("rows_read", "accepted", "rejected", "quarantined", "completion_tokens")},
            "prompts": len(self.state),
            "prompts_done": sum(p.accepted >= self.config.accept for p in self.state.values()),
            "samples": samples, "accept_rate": counts["accepted"] / max(samples, 1),
            "seconds_this_session": round(seconds, 2),
            "tokens_per_s_this_session": round(self.tokens / max(seconds, 1e-9), 2),
        }
        self.run.update_manifest(status="complete", counts=summary, funnel=counts["funnel"])
        if self._owns_engine and self._engine is not None:
            self._engine.close()
        return {**summary, "funnel": counts["funnel"]}


def generate(prompts_path: str | Path, out: str | Path, config: GenerateConfig | None = None,
             engine: Engine | None = None, **kwargs) -> dict:
    """Run (or resume) rejection sampling; returns the summary with its funnel."""
    sampler = Sampler(prompts_path, out, config or GenerateConfig(), engine=engine, **kwargs)
    try:
        return sampler.run_rounds()
    finally:
        sampler.run.close()  # release the run folder's writer lock


def format_generate_summary(summary: dict) -> str:
    from cotforge.stats import format_summary

    head = (f"prompts {summary['prompts']}: {summary['prompts_done']} reached accept; samples {summary['samples']}, "
            f"accept rate {summary['accept_rate']:.1%}, completion tokens {summary['completion_tokens']}, "
            f"{summary['tokens_per_s_this_session']} tokens/s this session")
    return head + "\n" + format_summary(summary)
