"""Verdicts on disk, so that a resumed or re-run filter does not pay for a judge call twice.

Key: a hash of (judge model, template, prompt, prediction, reference) (the rubric is part of the
template text). Each engine batch's new verdicts become one JSONL shard written atomically
(`cotforge.io.atomic`), named by a hash of its content: a killed run loses at most the batch it was
in, two runs sharing the folder never write the same file, and a reader never sees half a shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cotforge.io.atomic import atomic_write_bytes

def default_dir() -> Path:
    """$COTFORGE_CACHE/judge, else ~/.cache/cotforge/judge: read when a cache is made, not at import."""
    return Path(os.environ.get("COTFORGE_CACHE", Path.home() / ".cache" / "cotforge")) / "judge"


def cache_key(model: str, template: str, prompt: str, prediction: str, reference: str | None) -> str:
    payload = json.dumps([model, template, prompt, prediction, reference], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class JudgeCache:
    """key -> the judge's raw answer text (parsed again on read, so a parser fix applies to old entries)."""

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder else default_dir()
        self._entries: dict[str, str] | None = None

    @property
    def entries(self) -> dict[str, str]:
        if self._entries is None:
            self._entries = {}
            for shard in sorted(self.folder.glob("*.jsonl")) if self.folder.is_dir() else []:
                for line in shard.read_text(encoding="utf-8").splitlines():
                    try:
                        key, answer = json.loads(line)
                    except (ValueError, TypeError):
                        continue  # a foreign or damaged line costs one judge call, not the run
                    self._entries[key] = answer
        return self._entries

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def put_many(self, answers: dict[str, str]) -> None:
        if not answers:
            return
        data = "".join(json.dumps([k, v], ensure_ascii=False) + "\n" for k, v in sorted(answers.items())).encode()
        atomic_write_bytes(self.folder / f"{hashlib.sha256(data).hexdigest()[:24]}.jsonl", data)
        self.entries.update(answers)
