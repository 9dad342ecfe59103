"""The sympy path: math-verify's `parse` + `verify`, guarded and without signals.

math-verify does the LaTeX/expression extraction and the comparison (sets, intervals, matrices,
relations, symbolic equality). We call it with its signal-based timeouts off (`parsing_timeout=None`,
`timeout_seconds=None`), which makes it safe off the main thread; hard limits come from the chain,
which kills a worker that overruns. Before anything reaches `verify`, `guards.expr_guard` drops
expressions whose numbers would be astronomically large.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from cotforge.checks.answer.guards import expr_guard

# "Timeout is disabled" warnings: we disable them on purpose (the chain enforces limits).
for _name in ("math_verify", "math_verify.parser", "math_verify.grader", "latex2sympy2_extended"):
    logging.getLogger(_name).setLevel(logging.ERROR)

MATCH_TYPES = ("latex", "expr")
_DECIMAL_LITERAL = re.compile(r"(?<![\d.])\d*\.(\d+)(?![\d.])")


@lru_cache(maxsize=8)
def extraction_config(match_types: tuple[str, ...]) -> tuple:
    """math-verify extraction targets; the boxed answer first, as its own regression tests use."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    targets = []
    for kind in match_types:
        if kind == "latex":
            targets.append(LatexExtractionConfig(boxed_match_priority=0))
        elif kind == "expr":
            targets.append(ExprExtractionConfig())
        else:
            raise ValueError(f"unknown match type {kind!r} (known: latex, expr)")
    return tuple(targets)


_two_stage = False


def use_two_stage_parsing() -> None:
    """Make latex2sympy's ANTLR parser try fast SLL prediction first and full LL only on failure.

    ANTLR's standard two-stage strategy: a parse SLL accepts is the parse LL would give, and
    latex2sympy raises on any syntax error, so a failed SLL attempt is simply retried in LL mode.
    Full-context (LL) prediction is most of latex2sympy's time on sets and tuples; this makes the
    sympy path about 2x faster with the same results.
    """
    global _two_stage
    if _two_stage:
        return
    from antlr4.atn.PredictionMode import PredictionMode
    from latex2sympy2_extended import latex2sympy2

    converter = latex2sympy2._Latex2Sympy
    create_parser, parse_latex = converter.create_parser, converter.parse

    def create_sll_parser(self, latex_str):
        parser = create_parser(self, latex_str)
        parser._interp.predictionMode = getattr(self, "_prediction_mode", PredictionMode.SLL)
        return parser

    def parse_two_stage(self, latex_str):
        try:
            return parse_latex(self, latex_str)
        except Exception:  # noqa: BLE001 - any failure: retry with full LL prediction
            self._prediction_mode = PredictionMode.LL
            return parse_latex(self, latex_str)

    converter.create_parser, converter.parse = create_sll_parser, parse_two_stage
    _two_stage = True


# typical final answers: the parser's first prediction of each construct is its slowest
WARM_UP = ("\\frac{1}{2}", "-\\frac{3}{4}", "(1, 2)", "\\{1, 2\\}", "[0, 1)", "(-\\infty, 3] \\cup (4, 5)", "x^2 + 1 = 0",
           "2\\sqrt{2}\\pi", "x \\le 3", "\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}", "28\\%", "90^\\circ",
           "\\text{odd}", "\\sin(x) + \\log_2 8", "\\binom{5}{2}", "x = 3, y = 4", "1, 2, 3")
_warm = False


def warm_up() -> None:
    """Import sympy and math-verify and run a few parses once per process, so that a fresh worker
    does not spend an item's time limit on imports and the parser's first predictions."""
    global _warm
    if not _warm:
        _warm = True
        for text in WARM_UP:
            parse(f"${text}$")


def parse(text: str, match_types: tuple[str, ...] = MATCH_TYPES) -> list:
    """math-verify's parse without signals: [sympy object(s)..., extracted string] or []."""
    from math_verify import parse as mv_parse

    use_two_stage_parsing()
    try:
        return mv_parse(text, list(extraction_config(match_types)), parsing_timeout=None)
    except RecursionError:
        return []


@lru_cache(maxsize=512)
def parse_gold(text: str, match_types: tuple[str, ...] = MATCH_TYPES) -> tuple:
    """`parse` for gold answers, cached: a prompt's k samples share one gold (sympy objects are
    immutable, so sharing them is safe)."""
    return tuple(parse(text, match_types))


def split(parsed: list | tuple) -> tuple[list, str | None, str | None]:
    """(expressions safe to compare, the extracted string, why some were dropped)."""
    if not parsed:
        return [], None, None
    text = parsed[-1] if isinstance(parsed[-1], str) else None
    safe, why = [], None
    for expr in parsed:
        reason = expr_guard(expr)
        if reason:
            why = reason
        else:
            safe.append(expr)
    if why:  # the extracted string alone must not stand in for a dropped expression
        safe = [expr for expr in safe if not isinstance(expr, str)]
    return safe, text, why


def verify(gold: list, pred: list, precision: int = 6, strict: bool = True,
           allow_set_relation: bool = False) -> bool:
    from math_verify import verify as mv_verify

    try:
        return mv_verify(gold, pred, float_rounding=precision, strict=strict,
                         allow_set_relation_comp=allow_set_relation, timeout_seconds=None)
    except RecursionError:
        return False


def stated_decimals(text: str | None) -> int | None:
    """Most decimal places among the decimal literals of `text` (`(0.6,2.6667]` -> 4)."""
    if not text:
        return None
    places = [len(match.group(1)) for match in _DECIMAL_LITERAL.finditer(text)]
    return max(places) if places else None


def rational_valued(expr) -> bool:
    """True when every number in `expr` is rational: no pi, e, roots, functions or i."""
    if isinstance(expr, str):
        return False
    import sympy

    try:
        nodes = sympy.preorder_traversal(expr)
        for count, node in enumerate(nodes):
            if count > 2_000:
                return False
            if isinstance(node, (sympy.NumberSymbol, sympy.Function)) or node is sympy.I:
                return False
            if isinstance(node, sympy.Pow) and not node.args[1].is_Integer:
                return False
    except Exception:  # noqa: BLE001 - an odd object: do not loosen the comparison
        return False
    return True
