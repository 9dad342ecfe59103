"""Reading one call's answer as server-sent events (`stream: true`), vLLM's chunk shape.

A stream is what makes two things possible that a plain answer cannot give: a sample cancelled or
stopped mid-way still knows the text and tokens it received, and cotforge's own early-stop watchers
(`SamplingParams.early_stop`) can read a sample while it decodes and end it by closing the connection
(vLLM aborts a request whose client disconnects).

Tokens: the call asks `stream_options: {include_usage: true, continuous_usage_stats: true}`; vLLM then
puts each choice's completion tokens so far in every chunk and the request's usage in a last chunk
without choices. A server that sends no usage in chunks is counted by its chunks: vLLM sends one chunk
per token at its default `--stream-interval 1`, so the count is exact there and a lower bound under a
coarser interval (or a server that merges tokens into one chunk).

The text: vLLM with a reasoning parser sends the `<think>` part as `reasoning` (older builds:
`reasoning_content`) deltas and the answer as `content` deltas; `answer()` joins them into the same
choice a plain answer gives, so `calls.choice_text` makes the same `Completion` of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

DONE = b"[DONE]"
STREAM_OPTIONS = {"include_usage": True, "continuous_usage_stats": True}


@dataclass
class ChoiceSoFar:
    """One choice of a stream as far as it came: its parts, its tokens, its finish reason once sent."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    tokens: int | None = None  # completion tokens so far, as the server counts them (continuous usage)
    chunks: int = 0  # chunks that carried a delta for this choice (the count without usage)
    in_answer: bool = False  # a content delta came after reasoning ones: the </think> is crossed

    @property
    def completion_tokens(self) -> int:
        return self.tokens if self.tokens is not None else self.chunks

    def text(self) -> str:
        """The R1-style text so far (what `calls.choice_text` makes of the whole answer)."""
        content = "".join(self.content)
        if not self.reasoning:
            return content
        reasoning = "".join(self.reasoning)
        if not content and self.finish_reason in (None, "length"):
            return f"<think>\n{reasoning}"  # still thinking, or cut off while thinking: left unclosed
        return f"<think>\n{reasoning}\n</think>\n\n{content}"


class EventStream:
    """Parses the bytes of an SSE answer as they come (`feed`) into choices; `answer()` is the choice
    list and usage a non-streaming answer would have had.

    Cheap by design (one Python driver may read a whole fleet's streams): bytes are split on newlines
    without decoding, only `data:` lines are parsed, and a chunk's JSON is decoded once."""

    def __init__(self, n: int, chat: bool) -> None:
        self.chat = chat
        self.choices = [ChoiceSoFar() for _ in range(n)]
        self.usage: dict | None = None  # the request's usage (the last chunk), when the server sends it
        self.prompt_tokens = 0
        self.done = False  # `data: [DONE]` came
        self.events = 0  # data events parsed (the benchmark's count)
        self.bad: str | None = None  # the first data line that was not a JSON object
        self._rest = b""

    def feed(self, data: bytes) -> list[tuple[int, str, int]]:
        """Take the next bytes; returns the (choice index, text delta, its completion tokens so far)
        they completed, in order (a reasoning delta comes as R1-style text: `<think>\\n` before the
        first, `\\n</think>\\n\\n` before the first content after reasoning): what a watcher is fed."""
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()  # an incomplete last line waits for the next bytes
        deltas: list[tuple[int, str, int]] = []
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, `event:`/`id:`/comment lines
            payload = line[5:].strip()
            if payload == DONE:
                self.done = True
                continue
            self.events += 1
            try:
                event = json.loads(payload)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                self.bad = self.bad or payload[:300].decode("utf-8", "replace")
                continue
            self._event(event, deltas)
        return deltas

    def _event(self, event: dict, deltas: list[tuple[int, str, int]]) -> None:
        usage = event.get("usage")
        choices = event.get("choices") or ()
        if usage and not choices:  # the request's usage, after the last choice chunk
            self.usage = usage
            return
        for choice in choices:
            index = choice.get("index", 0)
            if not isinstance(index, int) or not 0 <= index < len(self.choices):
                continue
            so_far = self.choices[index]
            so_far.chunks += 1
            if usage:  # continuous usage: this choice's tokens so far
                so_far.tokens = int(usage.get("completion_tokens") or 0)
                self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            if self.chat:
                delta = choice.get("delta") or {}
                reasoning = delta.get("reasoning") or delta.get("reasoning_content")
                content = delta.get("content")
            else:
                reasoning, content = None, choice.get("text")
            tokens = so_far.completion_tokens
            if reasoning:
                deltas.append((index, reasoning if so_far.reasoning else f"<think>\n{reasoning}", tokens))
                so_far.reasoning.append(reasoning)
            if content:
                if so_far.reasoning and not so_far.in_answer:
                    so_far.in_answer = True
                    deltas.append((index, f"\n</think>\n\n{content}", tokens))
                else:
                    deltas.append((index, content, tokens))
                so_far.content.append(content)
            if choice.get("finish_reason"):
                so_far.finish_reason = choice["finish_reason"]

    @property
    def finished(self) -> bool:
        """Every choice got its finish reason (what a whole answer is; [DONE] alone is not)."""
        return all(c.finish_reason is not None for c in self.choices)

    def answer(self) -> dict:
        """The answer a non-streaming call would have had: choices in the plain shape, and usage (the
        server's, else summed from the choices' counts)."""
        choices = []
        for index, so_far in enumerate(self.choices):
            choice: dict = {"index": index, "finish_reason": so_far.finish_reason}
            if self.chat:
                message = {"role": "assistant", "content": "".join(so_far.content)}
                if so_far.reasoning:
                    message["reasoning"] = "".join(so_far.reasoning)
                choice["message"] = message
            else:
                choice["text"] = "".join(so_far.content)
            choices.append(choice)
        usage = self.usage or {"prompt_tokens": self.prompt_tokens,
                               "completion_tokens": sum(c.completion_tokens for c in self.choices)}
        return {"choices": choices, "usage": usage}

    def per_choice_tokens(self) -> list[int] | None:
        """Each choice's own completion tokens where the server told them (continuous usage), so an n>1
        answer need not split the request's sum evenly; None where it did not."""
        if any(c.tokens is None for c in self.choices):
            return None
        return [c.tokens for c in self.choices]
