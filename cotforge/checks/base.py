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
import importlib.util
import types
import typing
from typing import ClassVar, NamedTuple

REGISTRY: dict[str, type[Check]] = {}


PASSED, FAILED, NOT_APPLICABLE = "passed", "failed", "n/a"
VERIFIED = "verified"  # the data chain's own last stage when it has verifying checks (chain.VerificationGate)

# Verdict codes: what later stages read (the judge gate, the funnel, the unverified summary, queries)
# instead of matching the reason's wording, which is for people and may change. A verdict without a
# code is a plain judgement of the text (its status says which way).
UNDECIDED = "undecided"  # the rule could not decide (no final answer, gold or answer not verifiable)
TIMEOUT = "timeout"  # the check overran its time limit; the worker was killed
WORKER_DIED = "worker_died"  # the item killed its worker twice (segfault, memory): no judgement of the text
ERROR = "error"  # the check raised on this sample
MEMORY = "memory"  # the check ran out of memory on this sample
UNPARSED = "unparsed"  # the judge's answer was neither Yes nor No
MISSING = "missing:"  # prefix: n/a (or unverified) because these input fields were absent: `missing:gold`
OUT_OF_DOMAIN = "out_of_domain"  # n/a: not this check's kind of sample (tests on prose, prose rules on code)
NO_TEXT = "no_text"  # n/a: nothing to judge (empty text, no words)
NOT_MATH = "not_math"  # answer n/a: the gold is words ("Paris"), not mathematics; a judge decides
NO_REFERENCE = "no_reference"  # judge n/a: no gold and no rubric
DECIDED_BY_RULE = "decided_by_rule"  # judge n/a: the rule it defers to (`decided_by`) settled the row
REJECTED_BY_RULES = "rejected_by_rules"  # judge n/a: an earlier rule already rejected the row
LEFT_TO_JUDGE = "left_to_judge"  # rule n/a: it could not decide and the judge's verdict counts instead
JUDGED = "judged"  # `verified` passed: a verifying check judged the sample
# The engine's early stop ended the sample (checks/early.py): failed by the check whose incremental form
# stopped it (reason: where and why), n/a for every other check (a partial text is not judged further).
STOPPED_EARLY = "stopped_early"


def missing_code(fields: str | list[str]) -> str:
    """`missing:gold`, `missing:gold,tests` (fields sorted)."""
    names = [fields] if isinstance(fields, str) else sorted(fields)
    return MISSING + ",".join(names)


class Verdict(NamedTuple):
    """One check's judgement of one sample, in one of three states (`status`):

    passed (`passed`, a score), failed (not `passed`) or not applicable (`passed` with no score: the
    check had nothing to judge, e.g. no gold answer). Not applicable never rejects a sample by itself;
    the chain decides whether a sample that no verifying check could judge is accepted.

    `code` is the machine-readable kind (the constants above; None for a plain judgement of the
    text); `reason` is the same for people.
    """

    passed: bool
    score: float | None  # None: the check does not apply to this sample
    reason: str
    missing: str | None = None  # n/a because this input field was absent or unreadable (`gold`, `tests`)
    code: str | None = None  # machine-readable kind; stages read this, never `reason`

    @property
    def status(self) -> str:
        return status_of(self.passed, self.score)

    @classmethod
    def ok(cls, reason: str = "ok", score: float = 1.0) -> Verdict:
        return cls(True, score, reason)

    @classmethod
    def fail(cls, reason: str, score: float | None = 0.0, code: str | None = None) -> Verdict:
        return cls(False, score, reason, None, code)

    @classmethod
    def skip(cls, reason: str, missing: str | None = None, code: str | None = None) -> Verdict:
        """The check does not apply (e.g. no gold answer): not a rejection, no score.

        `missing` names the input field whose absence made it so, for the run's summary (and makes
        the code `missing:<field>` unless another is given)."""
        return cls(True, None, f"n/a: {reason}", missing, code or (missing_code(missing) if missing else None))

    def record(self, check: str) -> dict:
        """The verdict as stored in a sample's `verdicts` column (schema.VERDICT)."""
        return {"check": check, "passed": self.passed, "score": self.score, "reason": self.reason,
                "status": self.status, "code": self.code}


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
    # (module, pip package) pairs the check imports when it runs: a chain refuses to start, in one
    # line, where one is missing, instead of every worker dying on its first row.
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    # Modules the chain's fork server imports once, before it forks any worker: a check whose workers
    # warm up at start (imports, first parses) names a module that does it, so every worker, and every
    # replacement of a killed one, forks warm instead of each paying the warm-up itself.
    preload: ClassVar[tuple[str, ...]] = ()

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
    for option, value in options.items():
        problem = option_problem(cls, option, value)
        if problem:
            raise TypeError(f"check '{name}': option {option} = {value!r}: {problem}")
    return cls(**options)


def missing_requirements(cls: type[Check]) -> list[str]:
    """The pip packages of `cls.requires` whose module cannot be found (none: all there)."""
    missing = []
    for module, package in cls.requires:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing, or a broken meta-path entry
            found = False
        if not found:
            missing.append(package)
    return missing


def _type_name(kind) -> str:
    return getattr(kind, "__name__", str(kind))


def option_problem(cls: type[Check], option: str, value) -> str | None:
    """Why `value` does not fit the option's declared type (str, int, float, bool, `X | None`), or None.

    A wrong type would otherwise fail on every row (`min_share: high` compared with a float) as a
    per-row error verdict instead of one line before the first row."""
    try:
        expected = typing.get_type_hints(cls).get(option)
    except (NameError, TypeError):
        return None
    arms = typing.get_args(expected) if isinstance(expected, types.UnionType) or \
        typing.get_origin(expected) is typing.Union else (expected,)
    if not arms or any(_fits(value, arm) for arm in arms):
        return None
    return "expected " + " or ".join("null" if arm is type(None) else _type_name(arm) for arm in arms)


def _fits(value, kind) -> bool:
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    origin = typing.get_origin(kind) or kind
    return not isinstance(origin, type) or isinstance(value, origin)
