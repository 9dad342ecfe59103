"""`GenerateConfig`: what a generate run does, split into what decides the samples and what only
decides how fast they come.

The resume key (`output_config`) holds the first kind only: model, template, sampling parameters,
seeds, checks, k/accept/rounds/budget, and the engine options that change samples. Throughput
settings (`concurrency`, `shard_size`, `shard_age_s`, `jobs`, and engine options such as base URLs,
timeouts, tensor parallelism or worker counts: `engines.base.THROUGHPUT_OPTIONS`) may change between a
crash and its resume.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field

from cotforge.engines.base import THROUGHPUT_OPTIONS
from cotforge.errors import CotforgeError

THROUGHPUT_FIELDS = ("concurrency", "shard_size", "shard_age_s", "jobs")
CPU_ENGINES = {"embedded"}  # engines whose model computes on this machine's CPU


@dataclass
class GenerateConfig:
    engine: str = "embedded"
    model: str | None = None
    engine_options: dict = field(default_factory=dict)
    k: int = 4  # samples in a prompt's first round (and in every round when not adaptive)
    accept: int = 1  # accepted samples wanted per prompt
    max_rounds: int = 4  # rounds per prompt at most
    budget: int | None = None  # samples per prompt at most; default k * max_rounds
    max_per_round: int | None = None  # adaptive cap per prompt and round; default 2 * k
    adaptive: bool = True
    temperature: float = 0.6  # DeepSeek-R1's sampling
    top_p: float = 0.95
    max_tokens: int = 1024
    checks: str | list = "r1"
    # Stop loops in the engine (vLLM's repetition_detection; engines.repetition): "default" (calibrated),
    # "off", or {max_pattern_size, min_pattern_size, min_count}.
    repetition_detection: str | dict = "default"
    # cotforge's own early stop (checks/early.py: incremental repetition / language / length of the chain's
    # checks, run by the engine on each sample as it is generated): "default" (on for the checks the
    # chain holds), "off", or {repetition, language: bool, reasoning_tokens: N, interval_tokens: N}.
    early_stop: str | dict = "default"
    template: str = "chat"
    seed: int = 0
    # Throughput only (not in the resume key):
    concurrency: int | None = None  # sequences kept in flight; default: what saturates the engine
    shard_size: int = 256  # a shard is committed once this many samples are judged ...
    shard_age_s: float = 30.0  # ... or once its oldest sample has waited this long
    # Check workers; None: `check_workers()` picks from the engine.
    jobs: int | None = None

    def __post_init__(self) -> None:
        # A zero or negative size would plan nothing and report an empty run as complete.
        at_least_one = {"k": self.k, "accept": self.accept, "max_rounds": self.max_rounds, "budget": self.budget,
                        "max_per_round": self.max_per_round, "max_tokens": self.max_tokens,
                        "concurrency": self.concurrency, "shard_size": self.shard_size}
        for name, value in at_least_one.items():
            if value is not None and value < 1:
                raise CotforgeError(f"--{name.replace('_', '-')} {value}: must be at least 1")
        if not 0 < self.top_p <= 1:
            raise CotforgeError(f"--top-p {self.top_p}: must be in (0, 1]")
        if self.temperature < 0:
            raise CotforgeError(f"--temperature {self.temperature}: must be 0 or more")

    def repetition_rule(self):
        """The engine-side loop stop this config asks for (None: off)."""
        from cotforge.engines.base import RepetitionDetection
        from cotforge.engines.repetition import DEFAULT

        value = self.repetition_detection
        if value in ("default", True, None):
            return DEFAULT
        if value in ("off", False):
            return None
        if isinstance(value, str):
            parts = value.split(",")
            if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
                raise CotforgeError(f"--repetition-detection {value!r}: give default, off, or "
                                    "MAX_PATTERN,MIN_PATTERN,MIN_COUNT (e.g. 64,4,6)")
            value = dict(zip(("max_pattern_size", "min_pattern_size", "min_count"), map(int, parts)))
        try:
            rule = RepetitionDetection(**value)
        except TypeError as error:
            raise CotforgeError(f"repetition_detection {value!r}: {error}") from error
        if rule.max_pattern_size < max(rule.min_pattern_size, 1) or rule.min_count < 2:
            raise CotforgeError(f"repetition_detection {value!r}: needs max_pattern_size >= min_pattern_size "
                                "and min_count >= 2")
        return rule

    def check_workers(self) -> int:
        """Check worker processes: `jobs` when given; else one beside an engine that computes on this
        machine's CPU (more would take cores from the model), and up to 8 cores beside an engine whose
        model runs elsewhere (a GPU, a server fleet), where one worker became the limit: a fleet of 4
        simulated servers ran 0.87 busy with one worker and 0.92 with two
        (`benchmarks/generate_utilization.py`)."""
        if self.jobs is not None:
            return self.jobs
        if self.engine in CPU_ENGINES:
            return 1
        return max(1, min(os.cpu_count() or 1, 8))

    @property
    def sample_budget(self) -> int:
        return self.budget or self.k * self.max_rounds

    @property
    def round_cap(self) -> int:
        return self.max_per_round or 2 * self.k

    def output_config(self) -> dict:
        """What determines the samples (the resume key): everything but throughput settings."""
        config = asdict(self)
        for name in THROUGHPUT_FIELDS:
            config.pop(name)
        config["engine_options"] = {k: v for k, v in self.engine_options.items() if k not in THROUGHPUT_OPTIONS}
        return config

    def engine_build_options(self) -> dict:
        options = dict(self.engine_options)
        if self.model:
            options["model"] = self.model
        if self.concurrency and self.engine == "openai":
            options.setdefault("concurrency", self.concurrency)
        return options


def sample_seed(run_seed: int, prompt_id: str, sample_idx: int) -> int:
    """The seed sample `sample_idx` of a prompt is generated with: the prompt's seed + the index.

    A request for samples i..i+n-1 carries sample_seed(.., i) and engines seed its sample j with
    that + j, so a sample's seed does not depend on how the prompt's rounds were cut."""
    digest = hashlib.blake2b(f"{run_seed}:{prompt_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") & 0x3FFFFFFF) + sample_idx  # stays within a signed 32-bit seed
