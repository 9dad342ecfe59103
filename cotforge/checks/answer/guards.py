"""Cheap pre-guards: reject answers that would make sympy hang or blow up, before it sees them.

Two layers: `text_guard` looks at the raw text (length, nesting depth, long digit runs) before
parsing; `expr_guard` walks a parsed, unevaluated sympy tree and bounds the size of every number it
would produce (`9^{9^{9}}`, `10^{100000}`, `99999!`). What slips through is stopped by the chain,
which kills a worker whose check overruns its `timeout_s`.
"""

from __future__ import annotations

import math
import re

MAX_ANSWER_CHARS = 1_000  # an extracted final answer longer than this is not an answer
MAX_DEPTH = 20  # nesting of (), {}, []: real answers stay under 10
MAX_DIGIT_RUN = 400
MAX_LOG10 = 2_000.0  # the largest number sympy may build: 10^2000
MAX_NODES = 400

_DIGIT_RUN = re.compile(rf"\d{{{MAX_DIGIT_RUN + 1},}}")
_POWER_OPS = re.compile(r"\^|\*\*")


def text_guard(text: str, max_chars: int = MAX_ANSWER_CHARS) -> str | None:
    """Why `text` is too costly to parse, or None."""
    if len(text) > max_chars:
        return f"answer too long ({len(text)} chars > {max_chars})"
    depth = deepest = 0
    for char in text:
        if char in "({[":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")}]":
            depth = max(0, depth - 1)
    if deepest > MAX_DEPTH:
        return f"answer nested too deeply (depth {deepest} > {MAX_DEPTH})"
    if _DIGIT_RUN.search(text):
        return f"number with over {MAX_DIGIT_RUN} digits"
    if len(_POWER_OPS.findall(text)) > 50:
        return "too many powers"
    return None


def _bits(value: int) -> float:
    return max(abs(int(value)).bit_length(), 1) * 0.30103


def _log10(node, budget: list[int]) -> float:
    """An upper bound on log10 |node| (symbols count as 10, sums add at most a digit); inf when
    unbounded or when the tree has more than `MAX_NODES` nodes."""
    import sympy

    budget[0] -= 1
    if budget[0] < 0:
        return math.inf
    if isinstance(node, sympy.Integer):
        return _bits(node.p)
    if isinstance(node, sympy.Rational):
        return _bits(node.p) - _bits(node.q) + 0.31
    if isinstance(node, sympy.Float):
        mpf = node._mpf_  # (sign, mantissa, exponent, bit count): |value| < 2^(exponent + bits)
        return (mpf[2] + mpf[3]) * 0.30103 if mpf[1] else 0.0
    if isinstance(node, sympy.Pow):
        base, exponent = node.args
        exponent_size = _log10(exponent, budget)
        if exponent_size > 6:
            return math.inf
        if exponent.is_number:  # bounded above, so cheap to evaluate: use its real size
            try:
                value = complex(exponent.evalf(15))
                exponent_size = math.log10(max(abs(value), 1e-300))
                if value.imag == 0 and value.real < 0 and base.is_Integer and base != 0:
                    return 0.0  # |b^-e| <= 1 for |b| >= 1
            except (TypeError, ValueError, OverflowError):
                pass
        return max(_log10(base, budget), 1.0) * 10 ** exponent_size
    if isinstance(node, (sympy.factorial, sympy.gamma, sympy.factorial2, sympy.binomial)):
        size = max(_log10(arg, budget) for arg in node.args)
        return math.inf if size > 6 else 10 ** size * max(size, 1.0)
    if isinstance(node, sympy.Mul):
        return sum(_log10(arg, budget) for arg in node.args)
    if isinstance(node, sympy.MatrixBase):
        return max((_log10(entry, budget) for entry in node), default=0.0)
    args = getattr(node, "args", ())
    if not args:
        return 1.0
    return max(_log10(arg, budget) for arg in args) + 1.0


def expr_guard(expr) -> str | None:
    """Why the parsed expression `expr` is too costly to compare, or None."""
    if isinstance(expr, str):
        return None
    try:
        size = _log10(expr, [MAX_NODES])
    except RecursionError:
        return "expression nested too deeply"
    except Exception:  # noqa: BLE001 - an odd node: let the chain's timeout handle it
        return None
    if size > MAX_LOG10:
        return "expression too large to evaluate" if math.isinf(size) else f"number too large (~10^{size:.0f})"
    return None
