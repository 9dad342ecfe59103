"""Eval metrics over a verdict matrix: per prompt, its samples in sample order, each correct or not,
with the class of the answer it gave (equivalent answers share a class, see `votes.py`).

- pass@1: the mean over all n samples of each prompt, then over prompts (lighteval's avg@n,
  NeMo-Skills' pass@1[avg-of-n]).
- pass@k: the unbiased estimator of Chen et al. 2021, `1 - C(n-c, k) / C(n, k)` per prompt (c of its
  n samples correct), for k = 1, 2, 4, ... up to n (n itself always included).
- maj@k: a majority vote over the answers of a prompt's first k samples (sample index order, as
  lighteval's MajAtK and NeMo-Skills' majority@k take `predictions[:k]`). Equivalent answers are one
  vote (one class). Ties follow lighteval's MajAtK (`max(answers, key=answers.count)`): among the
  classes with the most votes, the one whose first vote came first in sample order wins. A sample
  with no extracted answer votes for "no answer", as lighteval's empty prediction does, and that
  class is never correct. The winning class is correct when one of its samples among the k was
  accepted by the chain (its members' answers are equal, so they differ only in what the other
  checks said). Prompts whose answers are not votable (code: judged by tests, not by an answer)
  are left out of maj@k; a split without votable prompts has maj@k null.
- pass@1_ci: a 95% percentile bootstrap over prompts of pass@1 (prompts resampled with replacement).
- mean_tokens: mean completion tokens per sample; truncated / stopped: the share of samples that hit
  the token limit (finish reason `length`) / that the engine stopped as a loop (`repetition`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
NO_SOURCE = "(none)"
TRUNCATED, STOPPED = "length", "repetition"


@dataclass
class PromptResult:
    """One prompt's samples, in sample index order."""

    prompt_id: str
    correct: list[bool]
    classes: list[int | None] = field(default_factory=list)  # answer class per sample; None: no answer
    tokens: list[int] = field(default_factory=list)
    finish: list[str | None] = field(default_factory=list)
    source: str | None = None
    domain: str | None = None
    votable: bool = True  # has answers to vote on (not code)
    prompt: str | None = None

    @property
    def n(self) -> int:
        return len(self.correct)

    @property
    def c(self) -> int:
        return sum(self.correct)

    @property
    def pass_rate(self) -> float:
        return self.c / self.n if self.n else 0.0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al. 2021: the chance that k of the n samples drawn without replacement hold a correct one."""
    if not 0 < k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n (n = {n})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def ks_for(n: int) -> list[int]:
    """1, 2, 4, ... below n, then n."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n] if n >= 1 else []


def majority_correct(result: PromptResult, k: int) -> bool:
    """maj@k of one prompt (the rule is in the module docstring)."""
    votes: dict[object, list[int]] = defaultdict(list)  # class -> sample positions, in order
    for position in range(min(k, result.n)):
        cls = result.classes[position] if position < len(result.classes) else None
        votes[("class", cls) if cls is not None else ("none",)].append(position)
    # most votes first; among equals, the class whose first vote is earliest (dicts keep insertion order)
    winner = max(votes, key=lambda key: (len(votes[key]), -votes[key][0]))
    if winner == ("none",):
        return False
    return any(result.correct[position] for position in votes[winner])


def bootstrap_ci(values: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                 level: float = 0.95) -> list[float]:
    """Percentile bootstrap CI of the mean of `values` (rows resampled with replacement)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return [math.nan, math.nan]
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    chunk = max(1, 2_000_000 // len(values))  # bounded memory for large benchmarks
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        means[start:stop] = values[rng.integers(0, len(values), (stop - start, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return [float(low), float(high)]


def per_prompt(results: list[PromptResult], n: int) -> dict[str, np.ndarray]:
    """Each metric's value per prompt (the rows that the means, CIs and paired comparisons use)."""
    values: dict[str, np.ndarray] = {"pass@1": np.array([r.pass_rate for r in results], dtype=float)}
    for k in ks_for(n)[1:]:
        values[f"pass@{k}"] = np.array([pass_at_k(r.n, r.c, k) for r in results], dtype=float)
    votable = [r.votable for r in results]
    for k in maj_ks(n):
        values[f"maj@{k}"] = np.array([float(majority_correct(r, k)) if ok else math.nan
                                       for r, ok in zip(results, votable)], dtype=float)
    return values


def maj_ks(n: int) -> list[int]:
    ks = [k for k in ks_for(n) if k > 1]
    return ks or [1]


def summarize(results: list[PromptResult]) -> dict:
    """The metrics of one split (keys as `cotforge eval --json` writes them)."""
    results = [r for r in results if r.n]
    if not results:
        return {"prompts": 0, "n": 0}
    n = min(r.n for r in results)  # eval runs: every prompt has n; generate runs: the fewest any has
    values = per_prompt(results, n)
    out: dict = {"prompts": len(results), "n": n}
    if any(r.n != n for r in results):
        out["n_max"] = max(r.n for r in results)
    for name, column in values.items():
        kept = column[~np.isnan(column)]
        out[name] = float(kept.mean()) if len(kept) else None
    out["pass@1_ci"] = bootstrap_ci(values["pass@1"])
    tokens = [t for r in results for t in r.tokens if t is not None]
    finishes = [f for r in results for f in r.finish]
    out["mean_tokens"] = float(np.mean(tokens)) if tokens else None
    out["truncated"] = sum(f == TRUNCATED for f in finishes) / len(finishes) if finishes else 0.0
    out["stopped"] = sum(f == STOPPED for f in finishes) / len(finishes) if finishes else 0.0
    return out


def split_by(results: list[PromptResult], attribute: str) -> dict[str, dict]:
    groups: dict[str, list[PromptResult]] = defaultdict(list)
    for result in results:
        groups[getattr(result, attribute) or NO_SOURCE].append(result)
    return {name: summarize(group) for name, group in sorted(groups.items())}


def evaluate_results(results: list[PromptResult]) -> dict:
    """`{"overall": ..., "by_source": {...}, "by_domain": {...}}`."""
    return {"overall": summarize(results), "by_source": split_by(results, "source"),
            "by_domain": split_by(results, "domain")}


def compare_results(a: list[PromptResult], b: list[PromptResult], top: int = 10,
                    samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """B against A on the prompts both hold, paired per prompt: for each metric, A's and B's means,
    the difference B - A and its 95% paired bootstrap CI (the same resampled prompts for both), and
    the prompts whose pass rates differ most."""
    left = {r.prompt_id: r for r in a if r.n}
    right = {r.prompt_id: r for r in b if r.n}
    common = [pid for pid in left if pid in right]
    out = {"prompts": len(common), "only_a": len(left) - len(common), "only_b": len(right) - len(common),
           "metrics": {}, "differ_most": []}
    if not common:
        return out
    n = min(min(left[p].n for p in common), min(right[p].n for p in common))
    values_a = per_prompt([left[p] for p in common], n)
    values_b = per_prompt([right[p] for p in common], n)
    for name in values_a:
        keep = ~(np.isnan(values_a[name]) | np.isnan(values_b[name]))
        if not keep.any():
            continue
        va, vb = values_a[name][keep], values_b[name][keep]
        out["metrics"][name] = {"a": float(va.mean()), "b": float(vb.mean()), "diff": float((vb - va).mean()),
                                "ci": bootstrap_ci(vb - va, samples, seed)}
    out["n"] = n
    rows = []
    for pid in common:
        ra, rb = left[pid], right[pid]
        rows.append({"prompt_id": pid, "prompt": ra.prompt or rb.prompt, "a": ra.pass_rate, "b": rb.pass_rate,
                     "diff": rb.pass_rate - ra.pass_rate})
    rows.sort(key=lambda row: (-abs(row["diff"]), row["prompt_id"]))
    out["differ_most"] = [row for row in rows[:top] if row["diff"] != 0]
    return out
