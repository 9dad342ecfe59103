"""A model as judge: what rules cannot check (R1's generative verification, its helpfulness and
harmlessness rubrics). See `stage.py` for why it is a batched stage after the rule chain."""

from cotforge.judge.funnel import format_judge_funnel, judge_funnel
from cotforge.judge.prompts import RUBRICS, TEMPLATES, parse_verdict
from cotforge.judge.stage import JudgeConfig, JudgedChain, JudgeStage

__all__ = ["RUBRICS", "TEMPLATES", "JudgeConfig", "JudgeStage", "JudgedChain", "format_judge_funnel",
           "judge_funnel", "parse_verdict"]
