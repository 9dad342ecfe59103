"""`generate`: sample completions per prompt through an engine and keep them with their verdicts.

`scheduler` streams requests to the engine and owns resume and shard commits; `allocation` plans each
prompt's next round from its verdicts; `checking` judges in a thread of its own; `config` holds
`GenerateConfig` and the seeds; `recipe` reads generate recipes; `options` merges a recipe with explicit
options and picks the executor (the one rule the CLI and `generate(...)` share); `templates` renders
prompts.
"""

from cotforge.generate.config import GenerateConfig
from cotforge.generate.options import generate

__all__ = ["GenerateConfig", "generate"]
