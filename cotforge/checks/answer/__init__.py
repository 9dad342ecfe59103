"""Answer checks: `answer` (math, via a fast number path and math-verify), `choice`, `numeric`.

Importing this package registers the three checks (`cotforge.checks.load_all` imports it).
"""

from cotforge.checks.answer.check import AnswerCheck
from cotforge.checks.answer.choice import ChoiceCheck
from cotforge.checks.answer.equivalence import Options, Outcome, compare
from cotforge.checks.answer.numeric import NumericCheck

__all__ = ["AnswerCheck", "ChoiceCheck", "NumericCheck", "Options", "Outcome", "compare"]
