"""Kept for callers of the batch-round API's names: generation is now `cotforge.generate.scheduler`."""

from cotforge.generate.allocation import PromptState, next_wave
from cotforge.generate.config import GenerateConfig, sample_seed
from cotforge.generate.scheduler import Scheduler, format_generate_summary, generate

__all__ = ["GenerateConfig", "PromptState", "Scheduler", "format_generate_summary", "generate", "next_wave",
           "sample_seed"]
