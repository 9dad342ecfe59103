"""CPU seconds per optimizer step of `train sft` and `train grpo` at the test sizes, same run.

Embedded SmolLM2-135M (fp32), batch 2, 2 steps; SFT max length 128 on a filter+export dataset;
GRPO 2 generations of at most 16 tokens per prompt, rewards accuracy,format,language.
seconds/step = TRL's train_runtime / steps (model loading excluded). The last line is
`ratio X`: GRPO seconds/step over SFT seconds/step (generation dominates GRPO's step).

    python benchmarks/train_step_time.py [--steps 2] [--max-completion-length 16]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_data(folder: Path) -> tuple[Path, Path]:
    from cotforge.export import export
    from cotforge.filtering import filter_samples

    rows = [{"prompt": f"What is {i} + {i}?", "gold": str(2 * i),
             "completion": f"<think>\nAdding {i} and {i} gives {2 * i}.\n</think>\n\nThe answer is {2 * i}."}
            for i in range(8)]
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "prompts.jsonl").write_text("".join(json.dumps({"prompt": r["prompt"], "gold": r["gold"]}) + "\n"
                                                  for r in rows))
    filter_samples([folder / "samples.jsonl"], folder / "run", checks="format", jobs=0)
    export(folder / "run", folder / "dataset", style="messages")
    return folder / "dataset", folder / "prompts.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--max-completion-length", type=int, default=16)
    options = parser.parse_args()

    import torch

    from cotforge.train.grpo import train_grpo
    from cotforge.train.sft import train_sft

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        dataset, prompts = make_data(folder)
        sft = train_sft(dataset, folder / "sft", max_steps=options.steps, max_length=128, batch_size=2)
        grpo = train_grpo(prompts, folder / "grpo", max_steps=options.steps, batch_size=2, num_generations=2,
                          max_completion_length=options.max_completion_length)
    print(f"device cpu, torch threads {torch.get_num_threads()}, os cpus {os.cpu_count()}")
    print(f"sft  seconds/step {sft['seconds_per_step']:.2f} ({sft['steps']} steps, max length 128, batch 2)")
    print(f"grpo seconds/step {grpo['seconds_per_step']:.2f} ({grpo['steps']} steps, 2 generations x "
          f"{options.max_completion_length} tokens, batch 2)")
    print(f"ratio {grpo['seconds_per_step'] / sft['seconds_per_step']:.2f} (grpo seconds/step / sft seconds/step)")


if __name__ == "__main__":
    main()
