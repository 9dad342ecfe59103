"""Loop detection on tokens as an engine runs it: vLLM's `repetition_detection` rule, and cotforge's default.

The rule (vLLM 0.32, `vllm/v1/core/sched/utils.py`, checked after every decoded token): the sequence
ends with finish reason `repetition` when, for some pattern length p in [min_pattern_size,
max_pattern_size], its last p tokens equal each of the `min_count - 1` blocks of p tokens before them.
vLLM runs it in its scheduler; the openai engine sends the same parameters in the request body (vLLM's
server takes them); the embedded engine runs `TailRepetition` below as a stopping criterion.

Defaults (`DEFAULT`: patterns of 8 to 256 tokens, 4 copies in a row) calibrated offline with
`python benchmarks/calibrate_repetition.py`: the 184 Sky-T1 traces of tests/data/real_traces, tokenized
with the SmolLM2 tokenizer, replayed through the rule token by token:
    false stops on the 60 finished traces:             0/60
    looping traces caught (46):                       19/46, 35% of their tokens saved
    truncated-but-progressing traces stopped (78):     0/78
Real R1-style loops revisit paragraphs: patterns of 64 tokens or fewer catch only 7/46 (64, 4, 6).
The other 27 loops repeat with variations or with other text in between, which a suffix rule cannot
see (that is the `repetition` check's work, on the finished text). Cost: vLLM checks every pattern
size after every token in its scheduler, but each size usually fails on its first comparison, so
256 sizes cost ~256 comparisons per sequence and step (not measured on a GPU yet).
"""

from __future__ import annotations

from collections.abc import Sequence

from cotforge.engines.base import RepetitionDetection

DEFAULT = RepetitionDetection(max_pattern_size=256, min_pattern_size=8, min_count=4)  # figures above


def repeats_at_tail(tokens: Sequence[int], rule: RepetitionDetection) -> int:
    """The pattern length p whose `min_count` copies end `tokens` (0: none), checked as vLLM does."""
    low = max(rule.min_pattern_size, 1)
    if rule.max_pattern_size <= 0 or rule.min_count < 2:
        return 0
    size = len(tokens)
    for p in range(low, rule.max_pattern_size + 1):
        if p * rule.min_count > size:
            return 0
        tail = tokens[size - p:]
        if all(tokens[size - p * (m + 1):size - p * m] == tail for m in range(1, rule.min_count)):
            return p
    return 0


def first_repetition(tokens: Sequence[int], rule: RepetitionDetection) -> int | None:
    """The token count at which an engine running `rule` after every token would have stopped (None:
    never), so finished traces can be replayed through the rule offline."""
    tokens = list(tokens)
    low = max(rule.min_pattern_size, 1)
    for end in range(low * rule.min_count, len(tokens) + 1):
        # Cheap pre-test: a repeat of any length p ends with tokens[end-1] == tokens[end-1-p]; vLLM
        # compares the same tokens, so the rule's answer is unchanged.
        if repeats_at_tail(tokens[max(0, end - rule.max_pattern_size * rule.min_count):end], rule):
            return end
    return None
