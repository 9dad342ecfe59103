"""Reading inputs, validating rows, and the crash-safe run folder."""

from cotforge.errors import CotforgeError
from cotforge.io.errors import BadRow
from cotforge.io.normalize import Normalizer, parse_field_overrides
from cotforge.io.readers import RawRow, read_rows
from cotforge.io.rundir import RunConfigMismatch, RunDir

__all__ = ["BadRow", "CotforgeError", "Normalizer", "RawRow", "RunConfigMismatch", "RunDir",
           "parse_field_overrides", "read_rows"]
