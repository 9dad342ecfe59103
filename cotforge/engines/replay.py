"""`replay`: serve recorded completions instead of sampling a model.

Completions come from a samples file (any format the readers take; `prompt_id` or `id` + `prompt`,
and `completion`) and are served per prompt in sample-index order, so request (prompt, first_index,
n) always gets the same texts. Uses: re-judging recorded generations through the sampler's rounds,
and measuring sampling policies (benchmarks/adaptive_vs_fixed.py) without a model.
Token counts are whitespace word counts (no tokenizer); say so wherever they are reported.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from cotforge.engines.base import Completion, Engine, Request, SamplingParams
from cotforge.errors import CotforgeError
from cotforge.io.generations import expand_generations
from cotforge.io.normalize import ALIASES, Normalizer
from cotforge.io.readers import read_rows


class ReplayEngine(Engine):
    name = "replay"
    fills_tail = False  # only the recorded samples exist: extra tail samples would ask for ones never recorded

    def __init__(self, model: str | Path):
        self.model = str(model)
        self.recorded: dict[str, list[dict]] = defaultdict(list)
        normalize = Normalizer("sample")
        for raw in expand_generations(read_rows(model)):  # OpenR1-style rows: one per generation
            if raw.data is not None:  # the prompts' gold grades; a recorded row's (e.g. answer + solution) is unused
                raw.data = {k: v for k, v in raw.data.items() if k not in ALIASES["gold"]}
            row = normalize(raw)
            self.recorded[row["prompt_id"]].append(row)
        for rows in self.recorded.values():
            rows.sort(key=lambda r: r.get("sample_idx") or 0)

    def generate(self, requests: list[Request], params: SamplingParams) -> list[list[Completion]]:
        out = []
        for request in requests:
            rows = self.recorded.get(request.key, [])
            wanted = rows[request.first_index:request.first_index + request.n]
            if len(wanted) < request.n:
                raise CotforgeError(f"replay: prompt {request.key} has {len(rows)} recorded completions, "
                                    f"asked for samples {request.first_index}..{request.first_index + request.n - 1}")
            prompt_words = sum(len(m["content"].split()) for m in request.messages)
            out.append([Completion(r["completion"], r.get("finish_reason") or "stop", prompt_words,
                                   len(r["completion"].split())) for r in wanted])
        return out
