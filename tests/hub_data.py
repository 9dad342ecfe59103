"""Dataset repos for the loopback Hub (tests/hubserver.py), shaped like the sets R1 recipes read.

`openr1_files` follows open-r1/OpenR1-Math-220k's layout and schema (README front matter at commit
075afe03: configs `default` -> data/train-*, `extended` -> extended/train-*, `all` -> splits
default/extended; columns problem, solution, answer, problem_type, question_type, source, uuid,
is_reasoning_complete, generations, correctness_math_verify, correctness_llama, finish_reasons,
correctness_count, messages). The problems and traces are written here, not copied.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq


def parquet_bytes(rows: list[dict], row_group_size: int | None = None, schema: pa.Schema | None = None) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer, row_group_size=row_group_size)
    return buffer.getvalue()


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def prompt_rows(n: int, start: int = 0) -> list[dict]:
    return [{"problem": f"What is {i} + {i}?", "answer": str(2 * i), "source": "unit"} for i in range(start, start + n)]


def prompts_files() -> dict[str, bytes]:
    """A plain prompts set, no card configs: data/train-* and data/test-* (the Hub's default layout)."""
    return {"data/train-00000-of-00002.parquet": parquet_bytes(prompt_rows(6)),
            "data/train-00001-of-00002.parquet": parquet_bytes(prompt_rows(4, start=6)),
            "data/test-00000-of-00001.parquet": parquet_bytes(prompt_rows(3, start=100)),
            "extra/more.jsonl": jsonl_bytes([{"question": "Name a prime.", "ground_truth": "2"},
                                             {"question": "Is 9 prime?", "ground_truth": "no"}]),
            "README.md": "---\nlicense: mit\n---\n# prompts\n"}


def _trace(reasoning: str, answer: str) -> str:
    return f"<think>\n{reasoning}\n</think>\n\nThe answer is $\\boxed{{{answer}}}$."


def openr1_rows(extended: bool = False) -> list[dict]:
    """Rows in OpenR1-Math-220k's schema; each problem has 2 to 4 traces, some wrong, one truncated."""
    problems = [("Compute $3 \\cdot 7$.", "21", ["3 times 7 is 21.", "3 sevens make 21.", "3*7 = 24? no, 21."],
                 [True, True, True], ["stop", "stop", "stop"]),
                ("Find $x$ if $2x = 10$.", "5", ["Divide by 2: x = 5.", "x = 10 - 2 = 8."],
                 [True, False], ["stop", "stop"]),
                ("What is $\\frac{1}{2} + \\frac{1}{4}$?", "\\frac{3}{4}",
                 ["Common denominator 4: 2/4 + 1/4 = 3/4.", "Half plus quarter is three quarters.",
                  "1/2 + 1/4 = 2/6 = 1/3.", "The sum is 0.75 which is 3/4."],
                 [True, True, False, True], ["stop", "stop", "stop", "length"])]
    if extended:
        problems = [("How many sides has a hexagon?", "6", ["A hexagon has six sides.", "Hexa means 6."],
                     [True, True], None)]
    rows = []
    for i, (problem, answer, thoughts, correct, finish) in enumerate(problems):
        answers = [answer if ok else "wrong" for ok in correct]
        generations = [_trace(t, a) for t, a in zip(thoughts, answers)]
        rows.append({
            "problem": problem, "solution": f"Worked solution for problem {i}.", "answer": answer,
            "problem_type": "Algebra", "question_type": "math-word-problem",
            "source": "cn_k12" if extended else "olympiads", "uuid": f"{'e' if extended else 'd'}{i:04d}-uuid",
            "is_reasoning_complete": [f != "length" for f in (finish or ["stop"] * len(thoughts))],
            "generations": generations, "correctness_math_verify": correct,
            "correctness_llama": None, "finish_reasons": finish, "correctness_count": sum(correct),
            "messages": [{"role": "user", "content": problem},
                         {"role": "assistant", "content": generations[correct.index(True)]}],
        })
    return rows


OPENR1_CARD = """---
license: apache-2.0
language:
- en
configs:
- config_name: all
  data_files:
  - split: default
    path: all/default-*
  - split: extended
    path: all/extended-*
- config_name: default
  data_files:
  - split: train
    path: data/train-*
- config_name: extended
  data_files:
  - split: train
    path: extended/train-*
---
# OpenR1-Math-220k (loopback stand-in)
"""


def openr1_files() -> dict[str, bytes]:
    default, extended = parquet_bytes(openr1_rows()), parquet_bytes(openr1_rows(extended=True))
    return {"README.md": OPENR1_CARD.encode(), "data/train-00000-of-00001.parquet": default,
            "extended/train-00000-of-00001.parquet": extended, "all/default-00000-of-00001.parquet": default,
            "all/extended-00000-of-00001.parquet": extended}


def openr1_generation_count(extended: bool = False) -> int:
    return sum(len(r["generations"]) for r in openr1_rows(extended))
