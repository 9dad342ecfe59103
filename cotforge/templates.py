"""Prompt templates shared by the generate and train stages.

`R1_ZERO` is Table 1 of the DeepSeek-R1 paper (arXiv:2501.12948): R1-Zero was trained with RL on a
base model prompted with this plain text, no chat template. The prompt ends inside an opened
`<think>`, so a completion reads `reasoning </think> <answer> answer </answer>`;
`cotforge.parsing.split_completion` understands that bare form.
"""

from __future__ import annotations

R1_ZERO = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
    "User: {prompt}. Assistant: <think>"
)

TEMPLATES = {"r1-zero": R1_ZERO}


def render(prompt: str, template: str = "r1-zero") -> str:
    """Fill a named template (or a literal one holding `{prompt}`) with the prompt text."""
    text = TEMPLATES.get(template, template)
    if "{prompt}" not in text:
        raise ValueError(f"template {template!r} is neither a known name ({', '.join(TEMPLATES)}) "
                         "nor a string with a {prompt} field")
    return text.replace("{prompt}", prompt.strip())
