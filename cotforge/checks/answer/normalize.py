"""Plain numbers without sympy: the fast path of the answer check.

`parse_number` reads an answer that is just a number, possibly dressed: thousands separators
(`7,425,000`, `1 000`, `12,\\!000`), decimal commas (`1,22`), currency (`$`, `\\$`, `€`, `元`),
units (`cm`, `\\text{ miles}`), percent (`28\\%`, `28 percent`), degrees (`90^\\circ`), LaTeX
fractions (`\\frac{10}{9}`), `a/b`, scientific notation (`3e5`, `3 \\times 10^{5}`) and a leading
`x =`. Anything else returns None and goes to the sympy path. Sizes are bounded: no string of
digits over `MAX_DIGITS` and no exponent over `MAX_EXPONENT` is ever turned into an integer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

MAX_DIGITS = 400
MAX_EXPONENT = 400


@dataclass(frozen=True)
class Number:
    value: Fraction
    percent: bool = False  # written with %, percent, pct
    decimals: int | None = None  # digits after the decimal point when written as a decimal

    def __str__(self) -> str:
        text = str(self.value.numerator) if self.value.denominator == 1 else str(self.value)
        if self.decimals is not None and self.value.denominator != 1:
            text = f"{float(self.value):.{self.decimals}f}"
        return text + ("%" if self.percent else "")


_SPACES = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~|\\thinspace|\u00a0|\u202f|\u2009")
_WRAPPERS = re.compile(r"^\\(?:boxed|fbox|mathbf|mathrm|textbf|text|mbox|textnormal|displaystyle)\s*\{(.*)\}$",
                       re.DOTALL)
_UNIT_BRACED = re.compile(r"\\(?:text|mbox|textnormal|mathrm|textrm|textbf|operatorname)\s*\{[^{}]*\}\s*$")
_UNIT_WORDS = re.compile(r"(?:\s+[A-Za-z]{2,}\.?){1,3}\s*$|(?:[a-zA-Z]{1,2}(?:\^\{?[23]\}?)?)$|[\u4e00-\u9fff]{1,3}$")
_UNIT_ATTACHED = {"cm", "mm", "km", "m", "kg", "g", "mg", "ml", "l", "s", "h", "min", "m2", "m²", "m3", "m³",
                  "cm2", "cm²", "cm3", "cm³", "km2", "km²", "ft", "in", "lb", "lbs", "oz", "mph", "hr", "hrs"}
_NOT_UNITS = {"pi", "e", "i", "x", "y", "z", "n", "k"}
_CURRENCY = re.compile(r"^(?:\\\$|\$|€|£|¥|₹|usd|rs\.?|us\$)\s*", re.IGNORECASE)
_CURRENCY_AFTER = re.compile(r"\s*(?:\\\$|\$|€|£|¥|元|块|美元)$")
_PERCENT = re.compile(r"\s*(?:\\%|%|\s+percent(?:age)?|\s+pct|\\text\{\s*percent\s*\})$", re.IGNORECASE)
_DEGREES = re.compile(r"\s*(?:\^\s*\{?\s*\\circ\s*\}?|°|\\degree|\s+degrees?)$")
_ASSIGN = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*(?:=|\\approx|≈)\s*")
_DECIMAL = re.compile(r"^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d{1,6}))?$")
_SCI = re.compile(r"^(.+?)\s*(?:\\times|\\cdot|×|\*|x)\s*10\s*\^\s*\{?\s*([+-]?\d{1,6})\s*\}?$")
_FRAC = re.compile(r"^([+-]?)\\[dtc]?frac\s*\{\s*([+-]?[\d.]+)\s*\}\s*\{\s*([+-]?[\d.]+)\s*\}$")
_SLASH = re.compile(r"^([+-]?[\d.]+)\s*/\s*([+-]?[\d.]+)$")
_REPEATING = re.compile(r"^([+-]?)(\d*)\.(\d*)\\overline\s*\{(\d{1,20})\}$")
_UNICODE = str.maketrans({"−": "-", "–": "-", "×": "\\times ", "÷": "\\div ", "·": "\\cdot ", "π": "\\pi ",
                          "∞": "\\infty ", "≤": "\\le ", "≥": "\\ge ", "≠": "\\ne ", "²": "^2", "³": "^3",
                          "，": ",", "＄": "$", "％": "%"})
_SQRT_SIGN = re.compile(r"√\s*(?:\(([^()]*)\)|\{([^{}]*)\}|(\d+(?:\.\d+)?|[A-Za-z]))")
_WORDS = {word: index for index, word in enumerate([
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"])}
_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
               "hundred": 100, "thousand": 1000, "million": 1_000_000})
_THOUSANDS = re.compile(r"^\d{1,3}(?:,\d{3})+(?:\.\d*)?$|^\d{1,3}(?: \d{3})+(?:\.\d*)?$")


def unicode_math(text: str) -> str:
    """Unicode math as LaTeX: `−5` -> `-5`, `√2` -> `\\sqrt{2}`, `2π` -> `2\\pi`, `x ≤ 3` -> `x \\le 3`."""
    if text.isascii():
        return text
    text = _SQRT_SIGN.sub(lambda m: "\\sqrt{" + next(g for g in m.groups() if g is not None) + "}", text)
    return text.translate(_UNICODE)


def _strip_dress(text: str) -> tuple[str, bool]:
    """Remove what surrounds a number: $...$, \\boxed{}, currency, units, percent, degrees."""
    percent = False
    for _ in range(4):
        before = text
        text = text.strip().rstrip(".").strip()
        if len(text) >= 2 and text[0] == "$" and text[-1] == "$" and text.count("$") % 2 == 0:
            text = text.strip("$")
        for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
            if text.startswith(left) and text.endswith(right):
                text = text[2:-2]
        match = _WRAPPERS.match(text)
        if match:
            text = match.group(1)
        text = _ASSIGN.sub("", text, count=1)
        text = _CURRENCY.sub("", text)
        text = _CURRENCY_AFTER.sub("", text)
        if _PERCENT.search(text):
            text, percent = _PERCENT.sub("", text), True
        text = _DEGREES.sub("", text)
        text = _UNIT_BRACED.sub("", text)
        unit = _UNIT_WORDS.search(text)
        if unit and text[:unit.start()].strip() and _is_unit(unit.group(0)):
            text = text[:unit.start()]
        if text == before:
            break
    return text.strip(), percent


def _is_unit(word: str) -> bool:
    word = re.sub(r"\^\{?([23])\}?", r"\1", word.strip().lower().rstrip("."))
    if word in _NOT_UNITS or "\\" in word:
        return False
    return " " in word or word in _UNIT_ATTACHED or not word.isascii() or len(word) >= 3


def _decimal(text: str, decimal_comma: bool = True) -> tuple[Fraction, int | None] | None:
    """A plain decimal literal, with `,` / space thousands separators or (where `decimal_comma`) a
    decimal comma."""
    text = text.replace(" ", "") if _THOUSANDS.match(text) else text
    if "," in text:
        if _THOUSANDS.match(text) and not text.startswith("0,"):
            text = text.replace(",", "")
        elif decimal_comma and text.count(",") == 1 and "." not in text:
            text = text.replace(",", ".")  # decimal comma: 1,22 / 0,111 / 1000,99
        else:
            return None
    match = _DECIMAL.match(text)
    if not match or not (match.group(2) or match.group(3)):
        return None
    sign, integer, fraction, exponent = match.groups()
    if len(integer or "") + len(fraction or "") > MAX_DIGITS:
        return None
    if exponent and abs(int(exponent)) > MAX_EXPONENT:
        return None
    try:
        value = Fraction(Decimal(f"{sign}{integer or '0'}.{fraction or '0'}e{exponent or 0}"))
    except (InvalidOperation, ValueError):
        return None
    decimals = len(fraction) if fraction and not exponent else None
    return value, decimals


def parse_number(text: str | None, decimal_comma: bool = True) -> Number | None:
    """The number an answer string denotes, or None when it is anything more than a number.

    `decimal_comma=False` where the text is LaTeX math (a box): there a bare comma separates list
    items (`\\boxed{3,5}` is 3 and 5) and a decimal comma is written `3{,}5`."""
    if not text or len(text) > 200:
        return None
    decimal_comma = decimal_comma or "{,}" in text
    body, percent = _strip_dress(_SPACES.sub("", unicode_math(text)).replace("{,}", ","))
    if body.startswith("(") and body.endswith(")") and "," not in body:
        body = body[1:-1].strip()
    plain = _decimal(body, decimal_comma)
    if plain:
        return Number(plain[0], percent, plain[1])
    if body.lower() in _WORDS:
        return Number(Fraction(_WORDS[body.lower()]), percent)
    repeating = _REPEATING.match(body)
    if repeating:
        sign, integer, fixed, period = repeating.groups()
        value = Fraction(int(integer or 0)) + Fraction(int(fixed or 0), 10 ** len(fixed)) if fixed else Fraction(
            int(integer or 0))
        value += Fraction(int(period), (10 ** len(period) - 1) * 10 ** len(fixed))
        return Number(-value if sign == "-" else value, percent)
    sci = _SCI.match(body)
    if sci:
        mantissa, exponent = _decimal(sci.group(1).strip()), int(sci.group(2))
        if mantissa and abs(exponent) <= MAX_EXPONENT:
            return Number(mantissa[0] * Fraction(10) ** exponent, percent)
        return None
    frac = _FRAC.match(body) or _SLASH.match(body)
    if frac:
        groups = frac.groups()
        sign, top, bottom = ("", *groups) if len(groups) == 2 else groups
        top_value, bottom_value = _decimal(top), _decimal(bottom)
        if top_value and bottom_value and bottom_value[0] != 0:
            value = top_value[0] / bottom_value[0]
            return Number(-value if sign == "-" else value, percent)
    return None


def round_half_up(value: Fraction, places: int) -> Fraction:
    scale = Fraction(10) ** places
    scaled = value * scale
    rounded = (scaled.numerator * 2 + scaled.denominator) // (scaled.denominator * 2)
    return Fraction(rounded) / scale


def numbers_equal(gold: Number, pred: Number, precision: int = 6, rounding: bool = False) -> bool:
    """Exact equality, percent either way (`28%` = `28` = `0.28`), and decimals rounded.

    A decimal is compared at `precision` places (math-verify's float rounding: `1/3` =
    `0.333333`). With `rounding` (the prompt asks for a rounded or decimal answer), a prediction
    written with d >= 2 decimals also matches an exact gold (a fraction) that rounds to it (`8/3` =
    `2.6667`); without it `0.333` is not `1/3`.
    """
    candidates = [(gold.value, pred.value)]
    if gold.percent != pred.percent:
        scaled = (gold.value / 100, pred.value) if gold.percent else (gold.value, pred.value / 100)
        candidates.append(scaled)
    for gold_value, pred_value in candidates:
        if gold_value == pred_value:
            return True
        if gold.decimals is None and pred.decimals is None:
            continue
        if round_half_up(gold_value, precision) == round_half_up(pred_value, precision):
            return True
        places = pred.decimals or 0
        exact_gold = gold.decimals is None and gold_value.denominator != 1
        if rounding and places >= 2 and exact_gold and round_half_up(gold_value, places) == pred_value:
            return True
    return False
