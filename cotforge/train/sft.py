"""`cotforge train sft`: TRL `SFTTrainer` on an exported dataset, defaults after DeepSeek-R1.

R1 fine-tuned its base on the curated 800K mix for 2 epochs. The chat template must keep the
reasoning: R1-distill's template drops everything before `</think>` in assistant turns (meant for
multi-turn inference), which would silently train the model on summaries only. So training uses the
model's template with that cut removed, and the first tokenized example is checked for its
reasoning before any step runs.
"""

from __future__ import annotations

import re
from pathlib import Path

from cotforge.errors import CotforgeError
from cotforge.parsing import split_completion
from cotforge.train.common import build_config, load_model, load_tokenizer, lora_config, result, save

SFT_DEFAULTS = {"num_train_epochs": 2, "max_length": 8192}  # R1: 2 epochs on the mix
PROBE_REASONING = "cotforge probe: reasoning that training must keep"
PROBE = [{"role": "user", "content": "What is 1 + 1?"},
         {"role": "assistant", "content": f"<think>\n{PROBE_REASONING}\n</think>\n\nThe answer is 2."}]
# `{% set content = content.split('</think>')[-1] %}` and its variants (R1-distill, QwQ, ...).
_STRIP_REASONING = re.compile(r"\{%-?\s*set\s+(\w+)\s*=\s*[\w.\[\]'\"]+\.split\(\s*['\"]</think>['\"]\s*\)"
                              r"\s*\[\s*-1\s*\][^%]*-?%\}")


def renders_reasoning(tokenizer, template: str | None = None) -> bool:
    text = tokenizer.apply_chat_template(PROBE, tokenize=False, chat_template=template)
    return PROBE_REASONING in text


def training_chat_template(tokenizer) -> str | None:
    """The template to train with: the model's own when it renders the reasoning, else the model's
    with the `</think>` cut removed; raises when neither keeps the reasoning."""
    template = tokenizer.chat_template
    if template is None or renders_reasoning(tokenizer):
        return template
    patched = _STRIP_REASONING.sub("", template)
    if patched != template and renders_reasoning(tokenizer, patched):
        return patched
    raise CotforgeError("the model's chat template drops the reasoning from assistant turns and cotforge "
                        "could not patch it; give a template that keeps it with `chat_template_path` in --config")


def fold_reasoning(example: dict) -> dict:
    """Messages with a separate `reasoning_content` become `<think>reasoning</think>\\n\\ncontent`,
    which every template renders; extra message fields are dropped."""
    turns = []
    for turn in example["messages"]:
        content = turn.get("content") or ""
        reasoning = (turn.get("reasoning_content") or "").strip()
        if reasoning:
            content = f"<think>\n{reasoning}\n</think>\n\n{content}"
        turns.append({"role": turn["role"], "content": content})
    return {"messages": turns}


def load_sft_dataset(path: str | Path):
    """An exported dataset folder (`data/train-*.parquet`) or a JSONL/Parquet file, as TRL's
    conversational `messages` (or, for bare `text` without prompts, language-modeling `text`)."""
    from datasets import load_dataset

    path = Path(path)
    if not path.exists():
        raise CotforgeError(f"{path}: no such dataset")
    if path.is_dir():
        dataset = load_dataset(str(path), split="train")
    else:
        kind = "json" if path.suffix in (".jsonl", ".json") else path.suffix.lstrip(".")
        dataset = load_dataset(kind, data_files=str(path), split="train")
    columns = dataset.column_names
    if "messages" in columns:
        return dataset.select_columns(["messages"]).map(fold_reasoning)
    if "text" in columns and "prompt" in columns:  # export's text styles: the assistant side + its prompt
        return dataset.map(prompt_and_text, remove_columns=columns)
    if "text" in columns:
        return dataset.select_columns(["text"])
    raise CotforgeError(f"{path}: needs a `messages` or `text` column (has {', '.join(columns)}); "
                        "write one with `cotforge export --style messages|special-token`")


def prompt_and_text(example: dict) -> dict:
    """`prompt` + `text` (an assistant side in a text style) -> one user/assistant conversation."""
    return {"messages": [{"role": "user", "content": example["prompt"] or ""},
                         {"role": "assistant", "content": example["text"]}]}


def first_assistant(dataset) -> str:
    example = dataset[0]
    if "messages" in example:
        return next((t["content"] for t in reversed(example["messages"]) if t["role"] == "assistant"), "")
    return example["text"]


def check_reasoning_kept(trainer, tokenizer, completion: str) -> None:
    """Decode the first example as SFTTrainer tokenized it; fail when its reasoning is gone while the
    summary is there (truncation by max_length can hide both: that is not an error)."""
    parsed = split_completion(completion)
    if not parsed.reasoning or not parsed.summary:
        return
    decoded = tokenizer.decode(trainer.train_dataset[0]["input_ids"])
    reasoning_head, summary_head = parsed.reasoning[:40], parsed.summary[:40]
    if reasoning_head not in decoded and summary_head in decoded:
        raise CotforgeError("the tokenized training example lost its reasoning (the chat template strips it); "
                            "give a template that keeps it with `chat_template_path` in --config")


def train_sft(dataset: str | Path, out: str | Path, model: str = "embedded", epochs: float | None = None,
              max_steps: int | None = None, lora: bool = False, config: str | Path | None = None,
              max_length: int | None = None, batch_size: int | None = None, lr: float | None = None) -> dict:
    """Fine-tune `model` on an exported dataset; returns steps, runtime and seconds/step."""
    from trl import SFTConfig, SFTTrainer

    train_dataset = load_sft_dataset(dataset)
    flags = {"num_train_epochs": epochs, "max_steps": max_steps, "max_length": max_length,
             "per_device_train_batch_size": batch_size, "learning_rate": lr}
    args = build_config(SFTConfig, out, SFT_DEFAULTS, config, flags)
    tokenizer = load_tokenizer(model)
    inference_template = tokenizer.chat_template
    if "messages" in train_dataset.column_names and not args.chat_template_path:
        tokenizer.chat_template = training_chat_template(tokenizer)
    trainer = SFTTrainer(model=load_model(model), args=args, train_dataset=train_dataset,
                         processing_class=tokenizer, peft_config=lora_config(config) if lora else None)
    check_reasoning_kept(trainer, tokenizer, first_assistant(train_dataset))
    output = trainer.train()
    tokenizer.chat_template = inference_template  # the checkpoint keeps the model's own template
    save(trainer, out, tokenizer, lora)
    return result(trainer, output, out)
