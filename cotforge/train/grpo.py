"""`cotforge train grpo`: TRL `GRPOTrainer` with cotforge's checks as rule-based rewards.

R1-Zero: plain-text R1-Zero template (no chat template), rewards accuracy + format (R1 added
language consistency). The dataset is prompts with `gold`: a cotforge prompts file (JSONL, Parquet,
CSV) or an exported dataset folder; rows go through the prompt normalizer, so `question`/`answer`
style columns map onto `prompt`/`gold` as in every other stage.
"""

from __future__ import annotations

from pathlib import Path

from cotforge.train import rewards as reward_functions
from cotforge.generate.templates import render
from cotforge.errors import CotforgeError
from cotforge.io.normalize import Normalizer
from cotforge.io.readers import read_rows
from cotforge.train.common import build_config, load_model, load_tokenizer, lora_config, result, save

DEFAULT_REWARDS = ("accuracy", "format", "language")
# Columns the checks read; they reach the reward functions as keyword lists.
REWARD_COLUMNS = ("gold", "answer_type", "domain", "language", "tests")


def prompt_text(row: dict) -> str:
    if row.get("prompt"):
        return row["prompt"]
    users = [turn["content"] for turn in row.get("messages") or [] if turn["role"] == "user"]
    if not users:
        raise CotforgeError(f"prompt {row.get('id')}: no prompt text and no user turn")
    return users[-1]


def load_prompts(path: str | Path, template: str = "r1-zero"):
    """Prompts as a `datasets.Dataset`: `prompt` (templated), `user_prompt` and the reward columns."""
    from datasets import Dataset

    normalize = Normalizer("prompt")
    records = []
    for raw in read_rows(path):
        row = normalize(raw)
        user_prompt = prompt_text(row)
        records.append({"prompt": render(user_prompt, template), "user_prompt": user_prompt,
                        **{column: row.get(column) for column in REWARD_COLUMNS}})
    if not records:
        raise CotforgeError(f"{path}: no prompts")
    return Dataset.from_list(records)


def build_rewards(names: str | list[str]) -> list:
    """`accuracy,format,language` -> reward functions; an unknown check fails here, before training."""
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",") if name.strip()]
    if not names:
        raise CotforgeError("--rewards: no reward names")
    return [reward_functions.get(name) for name in names]


def train_grpo(dataset: str | Path, out: str | Path, model: str = "embedded",
               rewards: str | list[str] = DEFAULT_REWARDS, num_generations: int | None = None,
               max_completion_length: int | None = None, epochs: float | None = None,
               max_steps: int | None = None, lora: bool = False, config: str | Path | None = None,
               batch_size: int | None = None, lr: float | None = None, template: str = "r1-zero") -> dict:
    """GRPO on prompts with `gold`; returns steps, runtime and seconds/step."""
    from trl import GRPOConfig, GRPOTrainer

    reward_funcs = build_rewards(list(rewards) if not isinstance(rewards, str) else rewards)
    train_dataset = load_prompts(dataset, template)
    flags = {"num_generations": num_generations, "max_completion_length": max_completion_length,
             "num_train_epochs": epochs, "max_steps": max_steps, "per_device_train_batch_size": batch_size,
             "learning_rate": lr}
    args = build_config(GRPOConfig, out, {}, config, flags)
    tokenizer = load_tokenizer(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    trainer = GRPOTrainer(model=load_model(model), reward_funcs=reward_funcs, args=args,
                          train_dataset=train_dataset, processing_class=tokenizer,
                          peft_config=lora_config(config) if lora else None)
    output = trainer.train()
    save(trainer, out, tokenizer, lora)
    return result(trainer, output, out)
