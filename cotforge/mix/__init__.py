"""`mix`: quotas, per-prompt selection, dedup and decontamination over run folders.

`pipeline` runs the stages; `recipe` reads the YAML, `sources` turns each source into a DuckDB
relation, `decontam` and `dedup` hold the eval index and the MinHash index, `decisions` records
each row's fate, `selfcog` writes self-cognition rows.
"""

from cotforge.mix.pipeline import format_report, mix

__all__ = ["format_report", "mix"]
