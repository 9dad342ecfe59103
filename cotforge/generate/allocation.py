"""How many samples a prompt asks for next: the allocation policy of a generate run.

A policy (`Allocation`) answers three questions for the scheduler, and nothing else:
- `round_size(prompt, prior)`: how many samples the prompt's next round asks for (0: the prompt is done);
- `cancels`: whether samples still in flight are cancelled once the prompt has its `accept` accepted;
- `fills_tail`: whether, once no prompt is waiting to start, free engine slots go to extra samples of
  unfinished prompts (a prompt's rounds run one after another, so the end of a run would otherwise
  leave the engine nearly empty).

`Adaptive` (the default) plans for tokens per accepted sample. A prompt still short of `accept` expects
`ceil(needed / p)` more samples, p being its pass rate so far smoothed towards the run's prior by
`PRIOR_STRENGTH` pseudo-samples, and asks for that need spread over the rounds it has left (capped by
`max_per_round`; the last round asks for all that is left of the budget, so a prompt that never passes
always spends its whole budget). The prior (`PassRatePrior`) is what the run has learned about pass
rates so far (all samples judged, run-wide), in place of a fixed 0.5. With `accept: 1` the first round
is planned the same way (a prompt of an easy run starts with one sample), else it is `k`. Samples in a
later round are only paid for when the earlier ones failed, so spreading the need saves tokens.
`Fixed` (`adaptive: false`) asks `k` per round and never fills the tail.

Resume: seeds depend only on (run seed, prompt, sample index), never on the round a sample landed in,
so whatever rounds a resumed run plans, a sample index that is asked again gets the same seed, and
indices already committed are never asked. The run-wide prior makes round sizes depend on what other
prompts did first; it changes how many samples are asked at once, never which sample an index is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cotforge.generate.config import GenerateConfig

PRIOR_RATE = 0.5  # the prior's prior: before the run has judged anything
PRIOR_STRENGTH = 2.0  # pseudo-samples of the prior in each prompt's estimate
RUN_PRIOR_STRENGTH = 20.0  # pseudo-samples of PRIOR_RATE in the run-wide estimate
MIN_PASS_RATE = 0.05


@dataclass
class PromptState:
    spent: int = 0  # samples judged (committed or waiting for their shard)
    accepted: int = 0
    rounds: int = 0  # rounds planned (after a restart: rounds with a committed sample)
    quarantined: bool = False  # the engine could not serve it (reason in the quarantine table)
    judged: set = field(default_factory=set)  # sample indices judged
    asked: set = field(default_factory=set)  # sample indices in flight or being judged
    dropped: set = field(default_factory=set)  # sample indices cancelled this session (not asked again)
    cap: int | None = None  # after a restart: where its interrupted last round ends (`Allocation.restore`)

    def free_indices(self, budget: int, count: int) -> list[int]:
        """The first `count` sample indices below `budget` neither judged, in flight nor cancelled."""
        out = []
        for index in range(budget):
            if len(out) >= count:
                break
            if index not in self.judged and index not in self.asked and index not in self.dropped:
                out.append(index)
        return out


class PassRatePrior:
    """The run's pass rate so far: accepted / judged over every prompt, smoothed towards PRIOR_RATE."""

    def __init__(self) -> None:
        self.judged = 0
        self.accepted = 0

    def add(self, accepted: bool) -> None:
        self.judged += 1
        self.accepted += bool(accepted)

    @property
    def rate(self) -> float:
        return (self.accepted + RUN_PRIOR_STRENGTH * PRIOR_RATE) / (self.judged + RUN_PRIOR_STRENGTH)


def pass_rate(prompt: PromptState, prior: PassRatePrior | None = None) -> float:
    """The prompt's pass rate so far, smoothed towards the run's prior by PRIOR_STRENGTH pseudo-samples."""
    prior_rate = prior.rate if prior is not None else PRIOR_RATE
    return (prompt.accepted + PRIOR_STRENGTH * prior_rate) / (prompt.spent + PRIOR_STRENGTH)


class Allocation:
    """The interface the scheduler plans through (see the module docstring)."""

    cancels = True
    fills_tail = False

    def __init__(self, config: GenerateConfig) -> None:
        self.config = config

    def left(self, prompt: PromptState) -> int:
        """Samples the prompt may still ask for; 0 when it is done."""
        config = self.config
        used = prompt.spent + len(prompt.asked) + len(prompt.dropped)
        if prompt.accepted >= config.accept or prompt.quarantined or prompt.rounds >= config.max_rounds:
            return 0
        budget = config.sample_budget if prompt.cap is None else min(prompt.cap, config.sample_budget)
        return max(0, budget - used)

    def last_round_end(self) -> int:
        """Samples a prompt that never passes has asked once its last round is planned."""
        return min(self.config.k * self.config.max_rounds, self.config.sample_budget)

    def restore(self, prompt: PromptState) -> None:
        """After a restart, `prompt.rounds` counts rounds with a committed sample. A run killed during a
        prompt's last round committed only part of it; counted as done, the rest would never be asked
        (an undisturbed run has them). Such a prompt gets its last round again, capped where that
        round ends, so exactly its missing samples are asked (same indices, same seeds)."""
        config = self.config
        if prompt.rounds < config.max_rounds or prompt.accepted >= config.accept or prompt.quarantined:
            return
        end = self.last_round_end()
        if prompt.spent < end:
            prompt.rounds, prompt.cap = config.max_rounds - 1, end

    def round_size(self, prompt: PromptState, prior: PassRatePrior | None = None) -> int:
        raise NotImplementedError


class Fixed(Allocation):
    """`k` samples per round, `max_rounds` rounds at most."""

    def round_size(self, prompt: PromptState, prior: PassRatePrior | None = None) -> int:
        left = self.left(prompt)
        return min(self.config.k, left) if left else 0


class Adaptive(Allocation):
    fills_tail = True

    def round_size(self, prompt: PromptState, prior: PassRatePrior | None = None) -> int:
        config = self.config
        left = self.left(prompt)
        if left == 0:
            return 0
        rounds_left = config.max_rounds - prompt.rounds
        if prompt.rounds == 0 and (config.accept > 1 or prior is None or rounds_left <= 1):
            return min(config.k, left)  # a first round is `k`, also when it is the only one (--max-rounds 1)
        if rounds_left <= 1:
            return left  # the last round: all that is left, so a prompt that never passes spends its budget
        needed = config.accept - prompt.accepted
        rate = pass_rate(prompt, prior)
        expected = min(math.ceil(needed / max(rate, MIN_PASS_RATE)), left)
        wanted = min(math.ceil(expected / rounds_left), config.round_cap)
        return max(1, min(wanted, left))

    def last_round_end(self) -> int:
        # The only round is `k`; a last round of several asks all that is left of the budget.
        config = self.config
        return min(config.k, config.sample_budget) if config.max_rounds == 1 else config.sample_budget


def allocation(config: GenerateConfig) -> Allocation:
    """The policy a generate config asks for."""
    return Adaptive(config) if config.adaptive else Fixed(config)


def next_round(prompt: PromptState, config: GenerateConfig, prior: PassRatePrior | None = None) -> int:
    """Samples for the prompt's next round under the config's policy; 0 when it is done."""
    return allocation(config).round_size(prompt, prior)
