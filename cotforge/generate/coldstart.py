"""Cold-start templates (R1 paper, section 2.3.1): long-CoT data to start RL from.

- `few-shot` (or `few-shot:PATH`): long-CoT exemplars, each a user turn and an assistant turn in the
  readable pattern `|special_token|reasoning|special_token|summary`, put before the prompt as chat
  turns. Even a 135M instruct model copies the layout of the turns it has just seen, so its answers
  come with a reasoning part and a summary. The default exemplars are
  `recipes/data/long_cot_exemplars.jsonl`; any sample file works (a `completion` in the pattern, or
  `reasoning` + `summary` columns).
- `reflect`: the prompt, then an instruction to answer in detail with reflection and verification,
  in the same readable pattern.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from cotforge.errors import CotforgeError
from cotforge.parsing import SPECIAL_TOKEN

DEFAULT_EXEMPLARS = Path(__file__).resolve().parents[2] / "recipes" / "data" / "long_cot_exemplars.jsonl"
FEW_SHOT = "few-shot"
REFLECT = "reflect"
REFLECT_TEXT = (
    "{prompt}\n\nAnswer in detail. First reason step by step. Then reflect on your reasoning and verify the "
    "result another way before you answer. Write it in exactly this layout:\n"
    f"{SPECIAL_TOKEN}your reasoning, reflection and verification{SPECIAL_TOKEN}a short summary with the final "
    "answer"
)


def is_cold_start(template: str) -> bool:
    return template in (FEW_SHOT, REFLECT) or template.startswith(FEW_SHOT + ":")


def exemplar_path(template: str) -> Path:
    return Path(template.split(":", 1)[1]) if ":" in template else DEFAULT_EXEMPLARS


@lru_cache(maxsize=8)
def load_exemplars(path: Path) -> tuple[tuple[str, str], ...]:
    """(prompt, assistant text in the readable pattern) per exemplar; a bad row stops with file:line."""
    from cotforge.io.normalize import Normalizer
    from cotforge.io.readers import read_rows

    if not path.exists():
        raise CotforgeError(f"few-shot exemplars {path}: no such file")
    normalize = Normalizer("sample")
    exemplars = []
    for raw in read_rows(path):
        row = normalize(raw)
        reasoning, summary = (row.get("reasoning") or "").strip(), (row.get("summary") or "").strip()
        if not row.get("prompt") or not reasoning or not summary:
            raise CotforgeError(f"{raw.file}:{raw.line}: field 'completion': an exemplar needs a prompt, a "
                                f"reasoning and a summary ({SPECIAL_TOKEN}reasoning{SPECIAL_TOKEN}summary)")
        exemplars.append((row["prompt"], f"{SPECIAL_TOKEN}{reasoning}{SPECIAL_TOKEN}{summary}"))
    if not exemplars:
        raise CotforgeError(f"few-shot exemplars {path}: no rows")
    return tuple(exemplars)


def cold_start_messages(template: str, text: str) -> list[dict]:
    if template == REFLECT:
        return [{"role": "user", "content": REFLECT_TEXT.replace("{prompt}", text.strip())}]
    turns = []
    for prompt, answer in load_exemplars(exemplar_path(template).resolve()):
        turns += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return [*turns, {"role": "user", "content": text.strip()}]
