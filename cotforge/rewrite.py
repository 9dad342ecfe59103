"""`cotforge rewrite RUN --out RUN2`: accepted R1-Zero-style outputs rewritten into the readable pattern.

R1's cold-start data gathered "DeepSeek-R1-Zero outputs in a readable format" and refined them: R1-Zero's
completions mix languages and lack a summary. Here a model rewrites each accepted sample of RUN as
`|special_token|reasoning|special_token|summary`, batched through any engine; the rewrite is then checked
again before it is kept: it must be in that pattern (`pattern`), and pass the chain (default
`filters/rewrite.yaml`: format, its answer verified against the gold, one language, no loops). RUN2 holds
one row per accepted original: the rewrite, accepted, or rejected with every verdict's reason; `origin_id`
links it to the original, which stays in RUN. Human post-processing then works on RUN2 like on any run
(`cotforge view`: the `reviews` table keeps each edited text and its reviewer).

Resumable like `filter`: originals are taken in id order in fixed chunks, chunk i is shard i.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from cotforge.checks.base import Verdict
from cotforge.checks.chain import Chain, verdict_rows
from cotforge.engines.base import Engine, Request, SamplingParams, build_engine
from cotforge.errors import CotforgeError
from cotforge.io.rows import chunks
from cotforge.io.rundir import RunDir, source_marks
from cotforge.parsing import SPECIAL_TOKEN, split_completion
from cotforge.progress import Progress
from cotforge.query import connect
from cotforge.schema import PROMPT_COPIED, SAMPLE_SCHEMA, to_table
from cotforge.stats import run_counts

PATTERN = "pattern"
REWRITE_PROMPT = (
    "Rewrite the solution below so that it is easy to read. Keep the steps of its reasoning that matter, "
    "write in the language of the question, and keep its final answer exactly. Write the reasoning first and "
    "then a short summary that states the final answer, in exactly this layout:\n"
    f"{SPECIAL_TOKEN}the reasoning{SPECIAL_TOKEN}the summary\n\n"
    "Question:\n{prompt}\n\nSolution:\n{solution}"
)
# What a rewrite copies from its original; the rest is the rewrite's own.
KEEP = ("prompt_id", "sample_idx", "round", "prompt", "messages", *PROMPT_COPIED)


@dataclass
class RewriteConfig:
    engine: str = "embedded"
    model: str | None = None
    engine_options: dict = field(default_factory=dict)
    checks: str | list = "rewrite"
    template: str = REWRITE_PROMPT  # fields {prompt} and {solution}
    temperature: float = 0.0
    max_tokens: int = 1024
    chunk_rows: int = 64  # originals per engine call and committed shard
    seed: int = 0


def solution_text(sample: dict) -> str:
    """The original as the rewriter sees it: its reasoning, then its final answer."""
    reasoning, summary = (sample.get("reasoning") or "").strip(), (sample.get("summary") or "").strip()
    if not reasoning and not summary:
        return (sample.get("completion") or "").strip()
    return f"{reasoning}\n\nFinal answer: {summary}" if reasoning else summary


def pattern_verdict(text: str) -> Verdict:
    parsed = split_completion(text)
    if parsed.style != "special-token":
        return Verdict.fail(f"not in the readable pattern {SPECIAL_TOKEN}reasoning{SPECIAL_TOKEN}summary "
                            f"(parsed as {parsed.style})")
    return Verdict.ok()


class Rewriter:
    def __init__(self, run: str | Path, out: str | Path, config: RewriteConfig, engine: Engine | None = None,
                 overwrite: bool = False, argv: list[str] | None = None, allow_partial: bool = False):
        if "{solution}" not in config.template:
            raise CotforgeError("rewrite: the template needs a {solution} field")
        self.source, self.config = Path(run), config
        RunDir(run).manifest()  # a clear error for a folder that is not a run, before RUN2 is made
        # an unfinished source is refused unless allow_partial; RUN2 then carries the partial mark
        self.marks = source_marks([run], "rewrite", allow_partial)
        self.chain = Chain.for_data(config.checks, jobs=1)  # as filter: unverified rows rejected
        self.names = [PATTERN, *self.chain.names]
        run_config = {**asdict(config), "checks": self.chain.config()}
        self.out = RunDir.open(out, "rewrite", run_config, [run], argv=argv, overwrite=overwrite)
        self._engine, self._owns_engine = engine, engine is None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = build_engine(self.config.engine, self.config.model, self.config.engine_options)
        return self._engine

    def originals(self) -> list[dict]:
        con = connect(self.source)
        return con.sql("SELECT * FROM accepted ORDER BY id").to_arrow_table().to_pylist()

    def rewrite(self, originals: list[dict]) -> list[dict]:
        params = SamplingParams(temperature=self.config.temperature, top_p=1.0, max_tokens=self.config.max_tokens)
        requests = [Request(o["id"], [{"role": "user", "content": self.config.template
                                       .replace("{prompt}", o.get("prompt") or "")
                                       .replace("{solution}", solution_text(o))}], n=1, seed=self.config.seed)
                    for o in originals]
        rows = []
        for original, (completion,) in zip(originals, self.engine.generate(requests, params)):
            parsed = split_completion(completion.text)
            rows.append({**{k: original.get(k) for k in KEEP}, "id": f"{original['id']}~rw",
                         "origin_id": original["id"], "rewritten_by": f"{self.engine.name}:{self.engine.model}",
                         "model": self.engine.model, "engine": self.engine.name,
                         "temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_tokens,
                         "seed": self.config.seed, "completion": completion.text, "reasoning": parsed.reasoning,
                         "summary": parsed.summary, "finish_reason": completion.finish_reason,
                         "prompt_tokens": completion.prompt_tokens,
                         "completion_tokens": completion.completion_tokens})
        return rows

    def check(self, rows: list[dict]) -> list[dict]:
        results = self.chain.run(rows)
        for row, result in zip(rows, results):
            result.verdicts.insert(0, pattern_verdict(row["completion"]))
        return verdict_rows(rows, results, self.names)

    def run(self) -> dict:
        originals = self.originals()
        with self.out, self.chain, Progress("rewrite", total=len(originals), unit="samples") as progress:
            for index, chunk in enumerate(chunks(originals, self.config.chunk_rows)):
                if self.out.has_shard("samples", index):
                    progress.resumed(len(chunk))  # an earlier session's: not in this session's rate
                    continue
                rows = self.check(self.rewrite(chunk))
                self.out.write_shard("samples", index, to_table(rows, SAMPLE_SCHEMA))
                progress.advance(len(chunk))
            counts = run_counts(self.out.path, self.names)
            self.out.update_manifest(status="complete", counts={k: counts[k] for k in
                                                                ("rows_read", "accepted", "rejected", "quarantined")},
                                     funnel=counts["funnel"], **({"partial": self.marks} if self.marks else {}))
        if self._owns_engine and self._engine is not None:
            self._engine.close()
        return counts


def rewrite(run: str | Path, out: str | Path, config: RewriteConfig | None = None, engine: Engine | None = None,
            **kwargs) -> dict:
    """Rewrite RUN's accepted samples into the readable pattern; returns the counts and funnel of RUN2."""
    return Rewriter(run, out, config or RewriteConfig(), engine=engine, **kwargs).run()
