"""How many samples a prompt asks for next, from its own verdicts only.

A prompt's first wave asks for `k`. Once a wave's verdicts are in, a prompt still short of `accept`
expects `ceil(needed / p)` more samples (p: its pass rate so far, smoothed towards `PRIOR_RATE` by
`PRIOR_STRENGTH` pseudo-samples; at most what is left of its `budget`) and asks for that need spread
over the waves it has left, capped by `max_per_round`. Samples asked in a later wave are only paid
for when the earlier ones failed, so spreading them saves tokens; a prompt with a low pass rate and
few waves left gets more at once. With `adaptive: false` every short prompt gets `k` again.

The answer depends on nothing but the prompt's own committed verdicts and the config, never on
timing or other prompts: so a resumed run plans exactly the waves the killed run planned, and the
key set of a run does not depend on when anything finished.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cotforge.generate.config import GenerateConfig

PRIOR_RATE = 0.5
PRIOR_STRENGTH = 2.0  # pseudo-samples of PRIOR_RATE in each prompt's estimate
MIN_PASS_RATE = 0.05


@dataclass
class PromptState:
    spent: int = 0  # samples judged
    accepted: int = 0
    waves: int = 0  # waves judged
    quarantined: bool = False  # the engine could not serve it (reason in the quarantine table)


def next_wave(prompt: PromptState, config: GenerateConfig) -> int:
    """Samples for the prompt's next wave; 0 when it is done (accepted, budget or waves spent)."""
    needed = config.accept - prompt.accepted
    left = config.sample_budget - prompt.spent
    if needed <= 0 or left <= 0 or prompt.waves >= config.max_rounds or prompt.quarantined:
        return 0
    if prompt.waves == 0 or not config.adaptive:
        wanted = config.k
    else:
        rate = (prompt.accepted + PRIOR_STRENGTH * PRIOR_RATE) / (prompt.spent + PRIOR_STRENGTH)
        expected = min(math.ceil(needed / max(rate, MIN_PASS_RATE)), left)
        wanted = min(math.ceil(expected / (config.max_rounds - prompt.waves)), config.round_cap)
    return max(1, min(wanted, left))
