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


class Verdict(NamedTuple):
    passed: bool
    score: float | None  # None: the check does not apply to this sample
    reason: str

    @classmethod
    def ok(cls, reason: str = "ok", score: float = 1.0) -> Verdict:
        return cls(True, score, reason)

    @classmethod
    def fail(cls, reason: str, score: float = 0.0) -> Verdict:
        return cls(False, score, reason)

    @classmethod
    def skip(cls, reason: str) -> Verdict:
        """The check does not apply (e.g. no gold answer): passes, no score."""
        return cls(True, None, f"n/a: {reason}")


@dataclasses.dataclass
class Check:
    """Base class. Subclasses are dataclasses whose fields are their options."""

    name: ClassVar[str] = ""
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
