"""The checks as TRL reward functions: one definition serves as data filter and as RL reward.

R1-Zero was trained on rule-based rewards (accuracy + format; R1 added language consistency);
cotforge's checks are those rules. A reward here is the check's `Verdict.score` (None where the
check does not apply, which TRL turns into NaN and leaves out of the group's mean), computed on the
sample dict the filter builds (`cotforge.io.normalize.Normalizer`) by the chain every stage uses
(`cotforge.checks.chain.Chain`): no second implementation.

TRL's calling convention (`GRPOTrainer`, `reward_funcs=[...]`):
    reward(prompts=[...], completions=[...], gold=[...], language=[...], ..., **kwargs) -> [float | None]
`prompts` / `completions` are strings or lists of `{"role", "content"}` messages (the last
assistant turn is the completion); every other dataset column arrives as a list aligned with the
completions. A column `user_prompt` (the prompt before a template such as R1-Zero's was applied)
becomes the sample's `prompt`, so that e.g. the language check reads the user's words.

    from cotforge.train import rewards
    GRPOTrainer(..., reward_funcs=[rewards.accuracy, rewards.format, rewards.from_check("length", max_tokens=4096)])
    rewards.get("judge", engine="openai", rubric="helpfulness")  # a model as judge (cotforge.judge)
"""

from __future__ import annotations

from cotforge.checks.base import Verdict
from cotforge.checks.chain import JUDGE, Chain, CheckSpec
from cotforge.io.normalize import Normalizer
from cotforge.io.readers import RawRow

# Keyword arguments TRL adds that are not dataset columns.
TRL_KEYWORDS = ("trainer_state", "completion_ids", "log_extra", "log_metric", "environments")
# Reward name -> check name.
NAMED = {"accuracy": "answer", "format": "format", "language": "language", "repetition": "repetition",
         "length": "length"}


def message_text(value, role: str) -> str:
    """A plain string, or the content of the last `role` turn of a message list."""
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, dict):
        value = [value]
    turns = [turn for turn in value if turn.get("role") == role] or list(value)
    content = turns[-1].get("content") if turns else ""
    if isinstance(content, list):  # content blocks: [{"type": "text", "text": ...}]
        content = "".join(block.get("text", "") for block in content if isinstance(block, dict))
    return content or ""


def reward_samples(prompts: list | None, completions: list, **columns) -> list[dict]:
    """The sample dicts the filter would build for these completions and dataset columns."""
    for key in TRL_KEYWORDS:
        columns.pop(key, None)
    aligned = {k: v for k, v in columns.items() if isinstance(v, (list, tuple)) and len(v) == len(completions)}
    prompts = prompts if prompts is not None else [None] * len(completions)
    normalize = Normalizer("sample")
    samples = []
    for index, (prompt, completion) in enumerate(zip(prompts, completions)):
        data = {key: values[index] for key, values in aligned.items()}
        user_prompt = data.pop("user_prompt", None)
        data["prompt"] = user_prompt or message_text(prompt, "user")
        data["completion"] = message_text(completion, "assistant")
        samples.append(normalize(RawRow("<reward>", index + 1, data)))
    return samples


class CheckReward:
    """One chain entry (a check, or the judge) as a TRL reward function: the chain every stage uses
    (`cotforge.checks.chain.Chain`), with that one entry and no verification stage. `__name__` is the
    name TRL logs the reward under."""

    def __init__(self, check: str, name: str | None = None, jobs: int = 0, judge_engine=None, **options):
        self.check = check
        self.options = options
        self.jobs = jobs  # 0: in this process; N: the chain's pool, with its hard per-sample timeouts
        self.__name__ = name or check
        self._engine = judge_engine  # the judge's Engine instance to share (e.g. a served model's client)
        self._chain: Chain | None = None

    @property
    def chain(self) -> Chain:
        # Built on first use, so that importing this module never needs every check to exist.
        if self._chain is None:
            engines = {self.options.get("name", JUDGE): self._engine} if self._engine is not None else None
            self._chain = Chain([CheckSpec(self.check, dict(self.options))], jobs=self.jobs, engines=engines)
        return self._chain

    def verdicts(self, prompts: list | None = None, completions: list | None = None, **columns) -> list[Verdict]:
        samples = reward_samples(prompts, completions or [], **columns)
        return [result.verdicts[0] for result in self.chain.run(samples)]

    def __call__(self, prompts: list | None = None, completions: list | None = None,
                 **columns) -> list[float | None]:
        return [verdict.score for verdict in self.verdicts(prompts, completions, **columns)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.check!r}, name={self.__name__!r}, options={self.options!r})"


class JudgeReward(CheckReward):
    """The `judge` check as a reward: 1.0 where the judge says yes, 0.0 for no, None where its answer
    did not parse or nothing applies (no gold and no rubric). Options are the judge's (`JudgeConfig`:
    engine, model, rubric, scope, template, cache, ...); a reward judges every completion it is given,
    batched through the judge engine, with the same verdict cache as the filter."""

    def __init__(self, name: str = "judge", judge_engine=None, **options):
        super().__init__(JUDGE, name, 0, judge_engine, **options)

    @property
    def stage(self):
        return self.chain.judges[0]


def from_check(name: str, reward_name: str | None = None, jobs: int = 0, **options) -> CheckReward:
    """Any registered check (with its options) as a reward; unknown names or options raise now."""
    reward = CheckReward(name, reward_name, jobs, **options)
    reward.chain  # noqa: B018 - build now: a misspelt check fails here, not mid-training
    return reward


def get(name: str, **options) -> CheckReward:
    """A reward by name: one of NAMED (`accuracy` is the `answer` check), `judge`, or any check name."""
    if name == "judge":
        reward = JudgeReward("judge", **options)
        reward.stage  # noqa: B018 - validate the options now, not mid-training
        return reward
    return from_check(NAMED.get(name, name), reward_name=name, **options)


# The named rewards, usable as they are in `reward_funcs`; each builds its check on first call, so a
# check that does not exist yet raises the chain's unknown-check error there.
accuracy = CheckReward("answer", "accuracy")
format = CheckReward("format", "format")  # shadows the builtin here only: it is the check's name
language = CheckReward("language", "language")
repetition = CheckReward("repetition", "repetition")
length = CheckReward("length", "length")
judge = JudgeReward("judge")  # the embedded model against the gold; give options via get("judge", ...)

__all__ = ["NAMED", "CheckReward", "JudgeReward", "accuracy", "format", "from_check", "get", "judge",
           "language", "length", "repetition", "reward_samples"]
