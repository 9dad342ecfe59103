"""Reading the project's YAML files (recipes, presets, configs) with one clear error on failure."""

from __future__ import annotations

from pathlib import Path

import yaml

from cotforge.errors import CotforgeError


def load_mapping(path: str | Path, what: str) -> dict:
    """The YAML mapping in `path`; a missing file, bad YAML or a non-mapping names `what` it was."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise CotforgeError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CotforgeError(f"{path}: cannot read {what}: {err}") from None
    except yaml.YAMLError as err:
        raise CotforgeError(f"{_where(path, err)}: {what} is not valid YAML: {_problem(err)}") from None
    if not isinstance(data, dict):
        raise CotforgeError(f"{path}: expected a YAML mapping in this {what}, got {type(data).__name__}")
    return data


def _where(path: Path, err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)


def _problem(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: what was expected, and what it was parsing."""
    parts = [getattr(err, "problem", None), getattr(err, "context", None) and f"({err.context})"]
    text = " ".join(part for part in parts if part)
    return text or " ".join(str(err).split())
