"""`generate`: sample k completions per prompt through an engine and keep them with their verdicts.

`sampler` owns allocation, seeds, resume and shard commits; `recipe` reads generate recipes;
`templates` renders chat and R1-Zero prompts.
"""

from cotforge.generate.sampler import GenerateConfig, generate

__all__ = ["GenerateConfig", "generate"]
