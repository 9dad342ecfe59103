"""Prompt templates shared by the generate and train stages.

`R1_ZERO` is Table 1 of the DeepSeek-R1 paper (arXiv:2501.12948): R1-Zero was trained with RL on a
base model prompted with this plain text, no chat template. The prompt ends inside an opened
`<think>`, so a completion reads `reasoning </think> <answer> answer </answer>`;
`cotforge.parsing.split_completion` understands that bare form.

Generate's templates (`render_request`):
- `chat`: the prompt (or its `messages`) as chat turns; the engine applies the model's chat template.
- `r1-zero`: the plain-text R1-Zero prompt, for base models (no chat template).
- `r1-zero-chat`: the R1-Zero instructions as the user turn of an instruct model.
- `few-shot` / `few-shot:PATH`, `reflect`: cold-start templates (`cotforge.generate.coldstart`).
- `auto-cot`: non-reasoning prompts, a CoT first only where a rule asks for it (`cotforge.generate.routing`).
- any other string holding `{prompt}`: a custom template from a recipe, sent as the user turn.
"""

from __future__ import annotations

from cotforge.generate.coldstart import cold_start_messages, is_cold_start
from cotforge.generate.routing import AUTO_COT, auto_cot_messages

R1_ZERO = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
    "User: {prompt}. Assistant: <think>"
)

TEMPLATES = {"r1-zero": R1_ZERO}
REQUEST_TEMPLATES = ("chat", "r1-zero", "r1-zero-chat", "few-shot", "reflect", "auto-cot")


def render(prompt: str, template: str = "r1-zero") -> str:
    """Fill a named template (or a literal one holding `{prompt}`) with the prompt text."""
    text = TEMPLATES.get(template, template)
    if "{prompt}" not in text:
        raise ValueError(f"template {template!r} is neither a known name ({', '.join(TEMPLATES)}) "
                         "nor a string with a {prompt} field")
    return text.replace("{prompt}", prompt.strip())


def render_request(template: str, prompt: str | None, messages: list[dict] | None) -> tuple[list[dict], str | None]:
    """(chat messages, plain-text prompt or None) for one prompt row under a generate template."""
    text = prompt if prompt is not None else "\n".join(m["content"] for m in messages or [] if m["role"] == "user")
    if template == "chat":
        return (list(messages) if messages else [{"role": "user", "content": text}]), None
    if template == "r1-zero":
        raw = render(text)
        return [{"role": "user", "content": raw}], raw
    if template == "r1-zero-chat":
        return [{"role": "user", "content": render(text).removesuffix(" Assistant: <think>")}], None
    if is_cold_start(template):  # few-shot[:PATH] and reflect (cotforge.generate.coldstart)
        return cold_start_messages(template, text), None
    if template == AUTO_COT:  # a CoT first only where the rule asks for one (cotforge.generate.routing)
        return auto_cot_messages(text, messages), None
    return [{"role": "user", "content": render(text, template)}], None
