"""Imported by the check pool's fork server (`Check.preload`): sympy, math-verify and the LaTeX parser's
first predictions, once, so every worker forks warm (symbolic.warm_up)."""

from cotforge.checks.answer import symbolic

try:
    symbolic.warm_up()
except Exception:  # noqa: BLE001 - the fork server must start whatever happens; each worker then warms itself
    symbolic._warm = False
