"""Generate recipes: a YAML file whose keys are `GenerateConfig` fields, plus `prompts` and `out`.

```yaml
prompts: data/quickstart_prompts.jsonl   # relative to the recipe file
out: runs/quickstart
engine: {name: embedded, model: null, batch_size: 8}   # or just `engine: vllm` + `model: ...`
k: 4
accept: 1
checks: lenient
```
Command-line options override recipe values.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml

from cotforge.generate.config import GenerateConfig
from cotforge.errors import CotforgeError
from cotforge.io.hub import is_hub
from cotforge.io.yamlfile import load_mapping

PATH_KEYS = ("prompts", "out")


def load_generate_recipe(path: str | Path) -> tuple[dict, dict]:
    """(GenerateConfig keyword arguments, {prompts, out}) from a recipe file."""
    path = Path(path)
    data = load_mapping(path, "recipe")
    data = {k: v for k, v in data.items() if k not in ("name", "description")}
    # Relative to the recipe; a Hub input (`hf://datasets/...`) is taken as written.
    paths = {k: (value if is_hub(value) else str((path.parent / value).resolve()))
             for k in PATH_KEYS if (value := data.pop(k, None))}
    engine = data.pop("engine", None)
    if isinstance(engine, dict):
        engine = dict(engine)
        data["engine"] = engine.pop("name", "embedded")
        if "model" in engine:
            data["model"] = engine.pop("model")
        data["engine_options"] = {**engine, **data.get("engine_options", {})}
    elif engine:
        data["engine"] = engine
    sampling = data.pop("sampling", {}) or {}
    data.update(sampling)
    known = {f.name for f in fields(GenerateConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CotforgeError(f"{path}: unknown recipe key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if isinstance(data.get("template"), str) and data["template"].startswith("few-shot:"):  # relative to the recipe
        data["template"] = "few-shot:" + str((path.parent / data["template"].split(":", 1)[1]).resolve())
    if isinstance(data.get("model"), str) and data["model"].startswith("./"):
        data["model"] = str((path.parent / data["model"]).resolve())
    return data, paths


def parse_engine_options(pairs: list[str]) -> dict:
    """`--engine-option KEY=VALUE` pairs; values read as YAML scalars (8, 0.5, true, text)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CotforgeError(f"--engine-option {pair!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            options[key.strip()] = value
    return options
