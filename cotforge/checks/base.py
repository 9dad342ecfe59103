"""Check, Verdict and the registry.

A check is a small dataclass: its fields are its options (with defaults and where they come from),
`check(sample) -> Verdict` judges one sample. The chain owns everything shared (process pool,
timeouts, funnel, writing rejections). Score in [0, 1] lets the train stage use a check as a
reward; `passed` makes it a filter.

The sample a check sees is a plain dict with the schema's Sample fields (`completion`, `reasoning`,
`summary`, `gold`, `domain`, `language`, `tests`, `finish_reason`, `prompt`, ...); checks that need
more structure re-parse `completion` with `cotforge.parsing.split_completion`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

REGISTRY: dict[str, type[Check]] = {}


PASSED, FAILED, NOT_APPLICABLE = "passed", "failed", "n/a"


class Verdict(NamedTuple):
    """One check's judgement of one sample, in one of three states (`status`):

    passed (`passed`, a score), failed (not `passed`) or not applicable (`passed` with no score: the
    check had nothing to judge, e.g. no gold answer). Not applicable never rejects a sample by itself;
    the chain decides whether a sample that no verifying check could judge is accepted.
    """

    passed: bool
    score: float | None  # None: the check does not apply to this sample
    reason: str
    missing: str | None = None  # n/a because this input field was absent or unreadable (`gold`, `tests`)

    @property
    def status(self) -> str:
        return status_of(self.passed, self.score)

    @classmethod
    def ok(cls, reason: str = "ok", score: float = 1.0) -> Verdict:
        return cls(True, score, reason)

    @classmethod
    def fail(cls, reason: str, score: float = 0.0) -> Verdict:
        return cls(False, score, reason)

    @classmethod
    def skip(cls, reason: str, missing: str | None = None) -> Verdict:
        """The check does not apply (e.g. no gold answer): not a rejection, no score.

        `missing` names the input field whose absence made it so, for the run's summary."""
        return cls(True, None, f"n/a: {reason}", missing)


def status_of(passed: bool, score: float | None) -> str:
    """passed / failed / n/a from a stored verdict's fields (the query views use the same rule)."""
    if not passed:
        return FAILED
    return NOT_APPLICABLE if score is None else PASSED


@dataclasses.dataclass
class Check:
    """Base class. Subclasses are dataclasses whose fields are their options."""

    name: ClassVar[str] = ""
    # True for checks that verify the answer (answer, choice, numeric, code): a sample none of them
    # could judge is unverified, and the chain does not accept it unless the preset allows that.
    verifies: ClassVar[bool] = False
    # Hard wall-time limit per sample in the chain's worker pool; the worker is killed past it.
    timeout_s: ClassVar[float] = 5.0

    def check(self, sample: dict) -> Verdict:  # pragma: no cover - abstract
        raise NotImplementedError

    def options(self) -> dict:
        return dataclasses.asdict(self)


def register(cls: type[Check]) -> type[Check]:
    """Class decorator: make the check available by its `name` in YAML presets and `--checks`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if "__dataclass_fields__" not in cls.__dict__:  # subclasses inherit the base's; make their own
        cls = dataclasses.dataclass(cls)
    REGISTRY[cls.name] = cls
    return REGISTRY[cls.name]


def create(name: str, **options) -> Check:
    """Instantiate a registered check; unknown names or options raise a clear error."""
    from cotforge.checks import load_all

    load_all()
    if name not in REGISTRY:
        raise KeyError(f"unknown check '{name}' (known: {', '.join(sorted(REGISTRY))})")
    cls = REGISTRY[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(options) - known
    if unknown:
        raise KeyError(f"check '{name}': unknown option(s) {', '.join(sorted(unknown))} "
                       f"(known: {', '.join(sorted(known)) or 'none'})")
    return cls(**options)
