"""Self-cognition samples: templated questions and answers about the model's name and maker.

The spec is a small YAML (see `recipes/self_cognition.yaml`): `name`, `maker`, optional `domain`, and
per language a list of `questions` and `answers` with `{name}` / `{maker}` placeholders. Every
question is paired with every answer of its language, in file order, so the output is the same on
every run; the mix's quota and seed choose among them. Answers are summary-only (no reasoning).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cotforge.errors import CotforgeError
from cotforge.io.normalize import short_hash
from cotforge.io.yamlfile import load_mapping


def load_spec(path: str | Path) -> dict:
    path = Path(path)
    spec = load_mapping(path, "self-cognition file")
    for key in ("name", "maker", "languages"):
        if not spec.get(key):
            raise CotforgeError(f"{path}: self-cognition spec needs '{key}'")
    for language, entry in spec["languages"].items():
        if not (entry or {}).get("questions") or not entry.get("answers"):
            raise CotforgeError(f"{path}: language '{language}' needs 'questions' and 'answers'")
    return spec


def self_cognition_rows(spec: dict, name: str | None = None, maker: str | None = None) -> Iterator[dict]:
    """Sample rows (schema fields) for every question x answer pair of every language."""
    fill = {"name": name or spec["name"], "maker": maker or spec["maker"]}
    domain = spec.get("domain", "self_cognition")
    for language, entry in spec["languages"].items():
        for question in entry["questions"]:
            prompt = question.format(**fill)
            prompt_id = "p" + short_hash(prompt)
            for a_index, answer in enumerate(entry["answers"]):
                summary = answer.format(**fill)
                yield {"id": f"{prompt_id}-{a_index}", "prompt_id": prompt_id, "sample_idx": a_index,
                       "prompt": prompt, "domain": domain, "language": language,
                       "source": "self_cognition", "engine": "template", "completion": summary,
                       "reasoning": "", "summary": summary, "accepted": True}
