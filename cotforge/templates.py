"""Prompt templates shared by generate and train.

- `chat`: the prompt (or its `messages`) as chat turns; the engine applies the model's chat template.
- `r1-zero`: DeepSeek-R1-Zero's training template (Table 1 of the R1 paper): the model reasons in
  `<think>` and answers in `<answer>`. For base models it is a plain-text prompt ending in `<think>`.
- any other string containing `{prompt}`: a custom template from a recipe, sent as the user turn.
"""

from __future__ import annotations

R1_ZERO = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>. User: {prompt}. Assistant: <think>"
)

TEMPLATES = ("chat", "r1-zero", "r1-zero-chat")


def render(template: str, prompt: str | None, messages: list[dict] | None) -> tuple[list[dict], str | None]:
    """(chat messages, raw completion prompt or None) for one prompt row."""
    text = prompt if prompt is not None else "\n".join(m["content"] for m in messages or [] if m["role"] == "user")
    if template == "chat":
        return (list(messages) if messages else [{"role": "user", "content": text}]), None
    if template == "r1-zero":
        raw = R1_ZERO.format(prompt=text)
        return [{"role": "user", "content": raw}], raw
    if template == "r1-zero-chat":  # the R1-Zero instructions as the user turn of an instruct model
        instructions = R1_ZERO.format(prompt=text).removesuffix(" Assistant: <think>")
        return [{"role": "user", "content": instructions}], None
    if "{prompt}" not in template:
        raise ValueError(f"template {template!r}: use chat, r1-zero, r1-zero-chat or a string with {{prompt}}")
    return [{"role": "user", "content": template.replace("{prompt}", text)}], None
