"""The `judge` check: a model grades what the rules cannot, as a batched stage after the rule chain.

Why a stage and not one more check in the chain: the chain runs per-item checks in forked worker
processes with a hard per-item time limit (`cotforge.checks.chain`), which is right for sympy on
hostile input and wrong for a model call: each worker would load its own model (or open its own
connection pool), items would reach the engine one at a time instead of as one batch, and a judge
call that takes a few seconds would trip the per-item timeout. So the chain (`checks.chain.Chain`, the
one assembly every stage uses) runs the rule checks first and then gives every item that still needs
a verdict to the judge engine in batches (`JudgeStage.judge_open`; `Engine.generate(requests,
params)`: one `model.generate` per batch on the embedded engine, one request per item with bounded
concurrency on an OpenAI-compatible server, one `LLM.generate` on vLLM).

Rules first: the judge is not called for a sample that an earlier rule rejected, nor where the
`answer` check decided (its answer verified, or contradicted a math/choice/numeric gold). Where
`answer` could not decide (no final answer found, gold or answer not verifiable, or a free-text gold
with `answer_type: text` that the wording did not match) its failing verdict becomes
`n/a: left to the judge: ...` and the judge's verdict counts instead.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

from cotforge.checks.base import (DECIDED_BY_RULE, LEFT_TO_JUDGE, NO_REFERENCE, REJECTED_BY_RULES, UNDECIDED,
                                  UNPARSED, Verdict)
from cotforge.checks.chain import JUDGE, Chain, CheckSpec, Result
from cotforge.engines.base import Engine, Request, SamplingParams, build_engine
from cotforge.errors import CotforgeError
from cotforge.judge.cache import JudgeCache, cache_key
from cotforge.judge.prompts import VERDICT_PREFIX, parse_verdict, render, rubric_text, template_text

SCOPES = ("summary", "whole")
# The judge's n/a verdicts where a rule spared the call (their codes are what the funnel counts).
SAVED_BY_ANSWER = "n/a: decided by the answer check"
SAVED_BY_RULES = "n/a: rejected by rules"


@dataclass
class JudgeConfig:
    """The options of a `check: judge` preset entry."""

    name: str = JUDGE  # verdict name; give two judges (e.g. helpfulness, harmlessness) two names
    engine: str = "embedded"
    model: str | None = None
    engine_options: dict = field(default_factory=dict)
    template: str = "auto"  # auto: `reference` for rows with a gold, `rubric` for the others
    rubric: str | None = None  # a name in RUBRICS (helpfulness, harmlessness) or the rubric's text
    scope: str = "summary"  # summary: the final answer only; whole: reasoning and summary
    decided_by: str | None = "answer"  # the rule whose verdict, where it applies, spares the call
    prefill: bool = False  # plain-text prompt ending in "Judgement:" (small base models answer Yes/No)
    max_tokens: int = 64
    temperature: float = 0.0
    batch_size: int = 64  # items per engine call (and per cache shard)
    cache: str | bool | None = None  # a folder; None: ~/.cache/cotforge/judge; false: no cache
    seed: int = 0

    @classmethod
    def from_options(cls, options: dict) -> JudgeConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise CotforgeError(f"check 'judge': unknown option(s) {', '.join(unknown)} "
                                f"(known: {', '.join(sorted(known))})")
        config = cls(**options)
        if config.scope not in SCOPES:
            raise CotforgeError(f"check 'judge': scope {config.scope!r}: choose summary or whole")
        if config.template not in ("auto", "reference", "rubric"):
            try:
                template_text(config.template)
            except ValueError as err:
                raise CotforgeError(f"check 'judge': {err}") from None
        if "{rubric}" in config.template_for(True) + config.template_for(False) and not config.rubric \
                and config.template != "auto":
            raise CotforgeError("check 'judge': the template has a {rubric} field but no `rubric` is set")
        return config

    def template_for(self, has_reference: bool) -> str:
        """The template text for a row with (or without) a reference; '' when nothing applies."""
        if self.template == "auto":
            if has_reference:
                return template_text("reference")
            return template_text("rubric") if self.rubric else ""
        text = template_text(self.template)
        return "" if "{reference}" in text and not has_reference else text

    @property
    def model_key(self) -> str:
        # Cache identity without building the engine: a cached run never loads the judge model.
        return f"{self.engine}:{self.model or 'default'}"


class JudgeStage:
    """Judges a list of samples in engine batches; verdicts are cached on disk."""

    def __init__(self, config: JudgeConfig, engine: Engine | None = None):
        self.config = config
        self.rubric = rubric_text(config.rubric)
        self.cache = None if config.cache is False else JudgeCache(config.cache or None)
        self._engine = engine
        self._owns_engine = engine is None
        self.stats: Counter = Counter()  # this session: calls, cache_hits, unparsed, saved_*

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            try:
                self._engine = build_engine(self.config.engine, self.config.model, self.config.engine_options)
            except (KeyError, TypeError) as err:
                raise CotforgeError(f"check 'judge': {str(err).strip(chr(34) + chr(39))}") from None
        return self._engine

    def prediction(self, sample: dict) -> str:
        if self.config.scope == "summary":
            return (sample.get("summary") or "").strip()
        if sample.get("completion"):
            return sample["completion"].strip()
        return "\n\n".join(p for p in (sample.get("reasoning"), sample.get("summary")) if p).strip()

    def judge(self, samples: list[dict]) -> list[Verdict]:
        """One verdict per sample: judged yes/no, unparsed, or n/a (no reference and no rubric)."""
        verdicts: list[Verdict | None] = [None] * len(samples)
        pending: dict[str, tuple[str, list[int]]] = {}  # cache key -> (judge prompt, sample indices)
        for index, sample in enumerate(samples):
            reference = sample.get("gold") if str(sample.get("gold") or "").strip() else None
            template = self.config.template_for(reference is not None)
            prediction = self.prediction(sample)
            if not template:
                verdicts[index] = Verdict.skip("no reference and no rubric", code=NO_REFERENCE)
            elif not prediction:
                verdicts[index] = Verdict.fail(f"nothing to judge: empty {self.config.scope}")
            if verdicts[index] is not None:
                continue
            text = render(template, sample.get("prompt") or "", prediction, reference, self.rubric)
            key = cache_key(self.config.model_key, template.replace("{rubric}", self.rubric or ""),
                            sample.get("prompt") or "", prediction, reference)
            pending.setdefault(key, (text, []))[1].append(index)
        answers = self._answers(pending)
        for key, (_, indices) in pending.items():
            parsed = parse_verdict(answers[key])
            for index in indices:
                if parsed.verdict is None:
                    self.stats["unparsed"] += 1
                    verdicts[index] = Verdict.fail(parsed.reason, None, code=UNPARSED)
                else:
                    verdicts[index] = Verdict(parsed.verdict, float(parsed.verdict), parsed.reason)
        return verdicts  # type: ignore[return-value]

    def _answers(self, pending: dict[str, tuple[str, list[int]]]) -> dict[str, str]:
        """The judge's raw answer per key: from the cache, else from the engine in batches."""
        answers = {}
        misses = []
        for key in pending:
            cached = self.cache.get(key) if self.cache else None
            if cached is None:
                misses.append(key)
            else:
                answers[key] = cached
                self.stats["cache_hits"] += len(pending[key][1])
        params = SamplingParams(temperature=self.config.temperature, top_p=1.0, max_tokens=self.config.max_tokens)
        for start in range(0, len(misses), self.config.batch_size):
            keys = misses[start:start + self.config.batch_size]
            requests = [self._request(key, pending[key][0]) for key in keys]
            outputs = self.engine.generate(requests, params)
            fresh = {}
            for key, completions in zip(keys, outputs):
                text = completions[0].text
                # Prefilled: the verdict is the first line the model adds after "Judgement:".
                fresh[key] = f"{VERDICT_PREFIX} {(text.strip().splitlines() or [''])[0]}" if self.config.prefill \
                    else text
            self.stats["calls"] += len(keys)
            self.stats["engine_batches"] += 1
            if self.cache:
                self.cache.put_many(fresh)
            answers.update(fresh)
        return answers

    def _request(self, key: str, text: str) -> Request:
        if self.config.prefill:
            return Request(key, [], n=1, seed=self.config.seed, raw_prompt=f"{text}\n\n{VERDICT_PREFIX}")
        return Request(key, [{"role": "user", "content": text}], n=1, seed=self.config.seed)

    def close(self) -> None:
        if self._owns_engine and self._engine is not None:
            self._engine.close()
            self._engine = None

    def manifest_config(self) -> dict:
        """The options that decide verdicts, for the run's manifest and resume key: the cache folder and
        batch size change no verdict and stay out; so do secrets in engine options (api_key)."""
        config = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in ("cache", "batch_size")}
        config["engine_options"] = {k: v for k, v in config["engine_options"].items()
                                    if "key" not in k and "token" not in k}
        return {"check": JUDGE, **config}

    def judge_open(self, samples: list[dict], results: list[Result], rule_names: list[str]) -> None:
        """Append this judge's verdict to each result: n/a where its `decided_by` rule settled the row or
        another rule already rejected it, else the judge's own verdict (batched). Where the rule could
        not decide and the judge did, the rule's failure becomes n/a (left to the judge)."""
        decider = rule_names.index(self.config.decided_by) if self.config.decided_by in rule_names else None
        asked, left_open = [], {}
        for index, result in enumerate(results):
            verdicts = result.verdicts
            decided = decider is not None and verdicts[decider].score is not None
            if decided and not rule_decides(verdicts[decider], samples[index]):
                decided, left_open[index] = False, decider
            others_failed = any(not v.passed for k, v in enumerate(verdicts) if k != decider)
            if decided:
                result.verdicts.append(Verdict.skip(SAVED_BY_ANSWER.removeprefix("n/a: "),
                                                    code=DECIDED_BY_RULE))
                self.stats["saved_by_answer"] += 1
            elif others_failed:
                result.verdicts.append(Verdict.skip(SAVED_BY_RULES.removeprefix("n/a: "),
                                                    code=REJECTED_BY_RULES))
                self.stats["saved_by_rules"] += 1
            else:
                asked.append(index)
        for index, verdict in zip(asked, self.judge([samples[i] for i in asked])):
            if index in left_open and verdict.score is not None:
                rule = left_open[index]
                old = results[index].verdicts[rule]
                results[index].verdicts[rule] = Verdict.skip(f"left to the judge: {old.reason}",
                                                             code=LEFT_TO_JUDGE)
            results[index].verdicts.append(verdict)


def rule_decides(verdict: Verdict, sample: dict) -> bool:
    """Whether an applied `answer` verdict settles the row: a pass always does (the answer verified); a
    failure does unless the rule could not read the answer or gold, or the gold is free text
    (`answer_type: text`, where a different wording is not a wrong answer)."""
    if verdict.passed:
        return True
    return verdict.code != UNDECIDED and (sample.get("answer_type") or "").lower() != "text"


def split_specs(specs: list[CheckSpec]) -> tuple[list[CheckSpec], list[JudgeConfig]]:
    """(rule check specs for the chain, judge configs), preset order kept within each."""
    rules = [s for s in specs if s.name != JUDGE]
    judges = [JudgeConfig.from_options(dict(s.options)) for s in specs if s.name == JUDGE]
    return rules, judges


# The chain with judges is the one chain (checks.chain.Chain); the old name stays for callers of it.
JudgedChain = Chain
