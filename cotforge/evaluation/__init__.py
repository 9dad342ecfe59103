"""`cotforge eval`: how good a model is on prompts with checkable answers, and how hard each prompt is.

`run` samples exactly n per prompt through generate's scheduler and writes votes and metrics;
`metrics` computes pass@1, unbiased pass@k, maj@k, the bootstrap CI (pure functions over a verdict
matrix); `votes` groups equivalent answers with the answer check; `select` writes the prompts whose
pass rate lies in a range; `table` formats results for the terminal.
"""

from cotforge.evaluation.run import compare_runs, evaluate, run_metrics
from cotforge.evaluation.select import select_prompts

__all__ = ["compare_runs", "evaluate", "run_metrics", "select_prompts"]
