"""The engine interface: requests in; completions with token counts and finish reasons out.

One `Request` per prompt asks for `n` samples (vLLM shares the prefill across them). Engines never
see run folders or checks; the sampler (`cotforge.generate.sampler`) owns rounds, resume and seeds.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.6  # DeepSeek-R1's recommended sampling
    top_p: float = 0.95
    max_tokens: int = 1024


@dataclass
class Request:
    key: str  # the prompt id
    messages: list[dict]  # chat turns [{role, content}]; engines apply the model's chat template
    n: int = 1  # samples wanted for this prompt in this call
    seed: int = 0  # deterministic seed of the first sample; sample j uses seed + j where per-sample seeds exist
    raw_prompt: str | None = None  # when set: a plain-text completion prompt, no chat template
    first_index: int = 0  # sample_idx of the first sample asked for (replay and logging use it)


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" | "length" | ...
    prompt_tokens: int
    completion_tokens: int
    extra: dict = field(default_factory=dict)


class Engine:
    """Subclasses set `name` and implement `generate`; `model` names what they run."""

    name = ""
    model = ""

    def generate(self, requests: list[Request], params: SamplingParams) -> list[list[Completion]]:
        """For each request, exactly `request.n` completions, in request order."""
        raise NotImplementedError

    def close(self) -> None:
        pass


ENGINES = {
    "embedded": "cotforge.engines.embedded:EmbeddedEngine",
    "vllm": "cotforge.engines.vllm:VLLMEngine",
    "openai": "cotforge.engines.openai:OpenAIEngine",
    "replay": "cotforge.engines.replay:ReplayEngine",
}


def get_engine(name: str, **options) -> Engine:
    """Build an engine by name; heavy imports happen only here."""
    if name not in ENGINES:
        raise KeyError(f"unknown engine '{name}' (one of {', '.join(ENGINES)})")
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)
