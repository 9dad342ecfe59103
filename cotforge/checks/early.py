"""cotforge's own early stop: incremental forms of the `repetition`, `language` and `length` rules
(and a hard reasoning budget), run on a sample while the engine generates it.

An engine feeds each sample's text to a watcher (`engines.base`: `EarlyStop`, `Watcher`, `Stop`); a
watcher stops a sample only on a verdict more text cannot reverse, so every sample it stops is one the
finished-text check would reject too. Per detector, why the verdict is final:
- `repetition` (the check's sentence/paragraph rule and its back-to-back rule, on the field the check
  reads): a sentence counts only once a separator ends it, a paragraph once a blank line does, a word
  once a non-word character does; counts and n-gram runs of a prefix are the whole text's. The check
  picks its tokenizer (ASCII words or `text.tokens`) and its CJK scale from the *whole* text, which a
  prefix does not know, so a loop stops the sample only when the rule fires under every choice still
  possible (ASCII words only while the text is ASCII; scale 1 and `cjk_ngram_scale`).
- `language` (`max_foreign_runs`; the share rule is reversible and not watched): sentences are judged
  only up to a point that no quotation, math, code span or other `_NON_LANGUAGE` region can reach
  back over: before any opener still able to close (a `"` with no blank line after it yet, an unclosed
  `\\(` ...), and at a sentence end followed by more text. Each such sentence is the whole text's
  sentence, judged the same way (`language.sentence_runs`); foreign runs only add up. The target is the
  prompt's (`language` field or detected from the prompt); with neither, the check uses the reasoning's
  own majority, which more text can change: not watched.
- `length` (`max_chars` of the reasoning): its characters only grow.
- `reasoning_tokens` (a budget, off by default): a reasoning still open after that many completion
  tokens is over budget whatever follows; charged to `format` (as a reasoning cut by `max_tokens` is).

What is watched: the reasoning (after `<think>`, or from the start where the prompt opened it) up to
`</think>`; a completion without tags is the summary the checks read. After `</think>` nothing is
watched (a loop in a summary is vLLM's `repetition_detection`'s). A `<think>` after other text (a
layout `format` rejects) ends the watch.

Cost: each delta is scanned once (sentence and word boundaries found from the delta's end, three
n-gram runs advanced per word); the language detector re-reads the text not yet settled (bounded: a
sentence, or up to a quotation's 3,000 characters; past 20,000 unsettled characters it gives up).
Measured in tests/test_early_stop.py on a 32K-token trace.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from cotforge.checks.language import _NON_LANGUAGE, _NON_LATIN_RUN, _SENTENCE_END, detect_language, language_code, \
    sentence_runs
from cotforge.checks.repetition import _ASCII_TOKEN, _NORMALIZE, _PARAGRAPH_BREAK, _UNIT_SPLIT, IncrementalTandem
from cotforge.checks.text import CJK_CLASS, tokens
from cotforge.engines.base import Request, Stop
from cotforge.parsing import SPECIAL_TOKEN, opens_think

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
DEFAULT_INTERVAL_TOKENS = 32  # how often an engine need feed a watcher (a coarser one only delays stops)
# Settling re-reads the text not yet settled (usually a sentence): at most once per this many new
# characters, so a sentence is re-read a few times, not once per token (a verdict only waits a little).
SETTLE_EVERY_CHARS = 400
MAX_UNSETTLED_CHARS = 20_000  # the language detector gives up on a text that cannot be settled this long
_WORD_BOUNDARY = re.compile(f"[\\W{CJK_CLASS}]")  # a character that ends every kind of word
_SPACES_TO_END = re.compile(r"[ \t]*\Z")
_MAY_END_SENTENCE = re.compile(r"[.!?;。！？；\n]")


class RepetitionDetector:
    """The `repetition` check's sentence/paragraph and back-to-back rules on a growing field."""

    check = "repetition"

    def __init__(self, options: dict) -> None:
        from cotforge.checks.repetition import RepetitionCheck

        rule = RepetitionCheck(**options)
        self.field = rule.field
        self.max_repeats, self.min_unit_words = rule.max_unit_repeats, rule.min_unit_words
        scales = sorted({1, rule.cjk_ngram_scale})
        # The check's possible final configurations: (tokenizer, scale). ASCII words only while ASCII.
        self.configs = [("tokens", s) for s in scales] + [("ascii", 1)]  # (tokens, 1) first: the one always current
        self.tandems = {(t, s): IncrementalTandem(rule.ngram * s, rule.min_copies, rule.min_loop_words * s)
                        for t, s in self.configs if t == "tokens"}
        # Words as each tokenizer sees them. ASCII words equal `tokens` words until a chunk has an
        # underscore (`tokens` keeps snake_case whole): one list and one run serve both until then.
        self.words: dict[str, list[str]] = {"tokens": []}
        self.words["ascii"] = self.words["tokens"]
        self.tandems[("ascii", 1)] = self.tandems[("tokens", 1)]
        self.unit_fired: dict[tuple, str] = {}  # config -> the unit rule's reason, once it fires there
        self.text = ""
        self.ascii = True
        self._unit_start = self._unit_scan = 0
        self._para_start = self._para_scan = 0
        self._word_pos = 0
        self.counts: Counter = Counter()
        self.sizes: dict[str, tuple[int, int]] = {}  # unit -> (ASCII words, `tokens`)

    def push(self, delta: str, final: bool = False) -> str | None:
        if not delta:
            return None
        start = len(self.text)
        self.text += delta
        if self.ascii and not delta.isascii():
            self.ascii = False
            self.configs = [c for c in self.configs if c[0] != "ascii"]
        self._words(start)
        self._sentences()
        self._paragraphs(start)
        return self._verdict()

    def _words(self, start: int) -> None:
        """Advance the n-gram runs by the words a non-word character has ended."""
        text = self.text
        cut = None
        for index in range(len(text) - 1, max(start, self._word_pos) - 1, -1):
            if _WORD_BOUNDARY.match(text, index):
                cut = index + 1
                break
        if cut is None or cut <= self._word_pos:
            return
        chunk = text[self._word_pos:cut].lower()
        self._word_pos = cut
        shared = self.words["ascii"] is self.words["tokens"]
        if self.ascii and shared and "_" in chunk:  # the tokenizers part here: so do their runs
            self.words["ascii"], shared = list(self.words["tokens"]), False
            self.tandems[("ascii", 1)] = self.tandems[("tokens", 1)].copy()
        self.words["tokens"].extend(tokens(chunk))
        if self.ascii and not shared:
            self.words["ascii"].extend(_ASCII_TOKEN.findall(chunk))
        # The scale-1 run goes word by word; the others only need to catch up when asked (_verdict).
        self.tandems[("tokens", 1)].advance(self.words["tokens"])

    def _sentences(self) -> None:
        text = self.text
        for match in _UNIT_SPLIT.finditer(text, self._unit_scan):
            self._unit(text[self._unit_start:match.start()])
            self._unit_start = match.end()
        self._unit_scan = max(self._unit_start, len(text) - 1)

    def _paragraphs(self, start: int) -> None:
        text = self.text
        for match in _PARAGRAPH_BREAK.finditer(text, self._para_scan):
            paragraph = text[self._para_start:match.start()].strip()
            if "\n" in paragraph:
                self._unit(paragraph)
            self._para_start = match.end()
        # The next break can start only at a newline followed by nothing but spaces and tabs so far.
        newline = text.rfind("\n", max(self._para_start, start))
        if newline >= 0:
            self._para_scan = newline if _SPACES_TO_END.match(text, newline + 1) else len(text)
        elif not _SPACES_TO_END.match(text, start):
            self._para_scan = len(text)
        self._para_scan = max(self._para_scan, self._para_start)

    def _unit(self, unit: str) -> None:
        if not unit.strip():
            return
        key = _NORMALIZE.sub(" ", unit.lower()).strip()
        self.counts[key] += 1
        if key not in self.sizes:
            self.sizes[key] = (len(_ASCII_TOKEN.findall(unit.lower())), len(tokens(unit)))
        count = self.counts[key]
        if count > self.max_repeats:
            ascii_size, tokens_size = self.sizes[key]
            for tokenizer, scale in self.tandems:
                size = ascii_size if tokenizer == "ascii" else tokens_size
                if (tokenizer, scale) not in self.unit_fired and size >= self.min_unit_words * scale:
                    self.unit_fired[(tokenizer, scale)] = (
                        f"loops: the same {len(tokens(key))}-word sentence or line {count} times ('{key[:60]}') "
                        f"> {self.max_repeats}")

    def _verdict(self) -> str | None:
        """The loop, when the check would find one under every configuration still possible. The
        runs other than (tokens, 1) are advanced here, only once every configuration before them has
        fired (their words wait in `self.words`): a clean text costs one run's work per word."""
        reasons = []
        for tokenizer, scale in self.configs:
            config = (tokenizer, scale)
            tandem = self.tandems[config]
            if tandem.best is None:
                tandem.advance(self.words[tokenizer])
            if tandem.best is not None:
                reasons.append(tandem.what())
            elif config in self.unit_fired:
                reasons.append(self.unit_fired[config])
            else:
                return None
        return reasons[0]


class _Openers:
    """Where a `_NON_LANGUAGE` region could still open: an opener whose closer may yet come."""

    # opener -> (closer characters, longest content, ended by a newline / by a blank line)
    BOUNDED = {'"': ('"', 1500, "paragraph"), "＂": ("＂", 3000, None), "“": ("”", 3000, None),
               "‘": ("’", 300, None), "„": ("“”", 3000, None), "「": ("」", 3000, None),
               "『": ("』", 3000, None), "«": ("»", 3000, None), "‹": ("›", 3000, None),
               "《": ("》", 3000, None), "〈": ("〉", 3000, None), "〔": ("〕", 3000, None),
               "【": ("】", 3000, None), "`": ("`", None, "line")}
    PATTERN = re.compile(r"[\"＂“‘„「『«‹《〈〔【`$]|\\[\[(]|\\begin\{|<<|^[ \t]{0,3}(?:```|~~~)", re.MULTILINE)
    _BLANK_LINE = re.compile(r"\n[ \t]*\n")

    @classmethod
    def first_alive(cls, text: str, start: int, end: int, matches: list) -> int:
        """The first position in [start, end) where a region could still open (end: none). `matches`:
        the regions found so far; an opener inside one cannot open anything, and one at a region's
        start only where a higher-priority alternative may still match (a stray `\\begin` command
        before its `\\end` comes)."""
        starts = {m.start(): m for m in matches}
        spans = [(m.start(), m.end()) for m in matches]
        for match in cls.PATTERN.finditer(text, start, end):
            at, opener = match.start(), match.group(0)
            if at in starts:
                if opener == "\\begin{" and starts[at].group(0) == "\\begin":
                    return at
                continue
            if any(s < at < e for s, e in spans):
                continue
            if cls.alive(text, at, opener):
                return at
        return end

    @classmethod
    def alive(cls, text: str, at: int, opener: str) -> bool:
        rest = text[at + len(opener):]
        if opener in cls.BOUNDED:
            closers, longest, ends = cls.BOUNDED[opener]
            if longest is not None and len(rest) > longest + 1:
                return False
            if ends == "line" and "\n" in rest:
                return False
            if ends == "paragraph" and cls._BLANK_LINE.search(rest):
                return False
            return True
        if opener == "$":  # $...$ ends at a newline; $$...$$ never
            doubled = rest.startswith("$") or text[at - 1:at] == "$" or not rest
            return doubled or "\n" not in rest
        if opener == "<<":
            return not any(c in rest for c in ">\n")
        return True  # \( \[ \begin{ and code fences: unbounded


class LanguageDetector:
    """The `language` check's foreign-run rule on the sentences no later text can change."""

    check = "language"

    def __init__(self, options: dict, target: str, cited: frozenset) -> None:
        from cotforge.checks.language import LanguageCheck

        rule = LanguageCheck(**options)
        self.max_runs, self.min_words = rule.max_foreign_runs, rule.min_words
        self.target, self.cited = target, cited
        self.text = ""
        self.settled = 0
        self.foreign: list = []
        self.given_up = False
        self._tried = 0  # text length at the last settle

    def push(self, delta: str, final: bool = False) -> str | None:
        """`final`: the field has ended (no more deltas; settle what can be, whatever the interval)."""
        before = len(self.text)
        self.text += delta
        if self.given_up:
            return None
        # A sentence can have ended only where a sentence-end character is in the delta, or ends the
        # text before it (then whitespace): otherwise settling would find nothing new (an opener's
        # end waits for the next sentence end too).
        back = before
        while back > self.settled and self.text[back - 1].isspace():
            back -= 1
        if (len(self.text) - self._tried < SETTLE_EVERY_CHARS and not final) or \
                not _MAY_END_SENTENCE.search(self.text, max(self.settled, back - 1, self._tried - 1)):
            return None
        self._tried = len(self.text)
        cut, stripped = self._settle()
        if cut is None:
            if len(self.text) - self.settled > MAX_UNSETTLED_CHARS:
                self.given_up = True  # an unclosed \( or code fence: nothing after it can be settled
            return None
        for sentence in _SENTENCE_END.split(stripped):
            if not sentence or not sentence.strip():
                continue
            for run in sentence_runs(sentence.strip(), self.target, self.min_words, self.cited):
                if run.language != self.target:
                    self.foreign.append(run)
        self.settled = cut
        if len(self.foreign) > self.max_runs:
            from cotforge.checks.language import _context

            languages = ",".join(sorted({run.language for run in self.foreign}))
            return (f"has {len(self.foreign)} foreign run(s) ({languages}) > {self.max_runs}, "
                    f"first: {_context(self.foreign[0])!r}")
        return None

    def _settle(self) -> tuple[int | None, str]:
        """(raw position up to which the text is final, the stripped text of [settled, it)), or None."""
        text, start = self.text, self.settled
        matches = []
        limit = len(text)
        for match in _NON_LANGUAGE.finditer(text, start):
            if match.end() >= len(text):  # may grow with the next delta
                limit = match.start()
                break
            matches.append(match)
        limit = _Openers.first_alive(text, start, limit, matches)
        # The stripped text up to `limit`, with where each kept piece came from.
        pieces: list[tuple[int, str]] = []  # (raw start, text): kept text, or a region's " "
        pos = start
        for match in matches:
            if match.end() > limit:
                limit = min(limit, match.start())
                break
            pieces.append((pos, text[pos:match.start()]))
            pieces.append((match.start(), " "))
            pos = match.end()
        if pos < limit:
            pieces.append((pos, text[pos:limit]))
        stripped = "".join(piece for _, piece in pieces)
        # The last sentence end followed by more text: what comes before it is whole sentences.
        boundary = None
        for match in _SENTENCE_END.finditer(stripped):
            if match.end() < len(stripped):
                boundary = match.end()
        if boundary is None:
            return None, ""
        offset = 0
        for raw, piece in pieces:  # the raw position of stripped[boundary]: in kept text, or a region's start
            if offset + len(piece) > boundary:
                return raw + boundary - offset, stripped[:boundary]
            offset += len(piece)
        return None, ""


class BudgetDetector:
    """A reasoning still open past `tokens` completion tokens, or past the `length` check's `max_chars`."""

    check = "budget"

    def __init__(self, tokens: int | None, max_chars: int | None) -> None:
        self.tokens, self.max_chars = tokens, max_chars
        self.chars = 0  # characters fed (the field's leading whitespace is never fed)
        self.trailing = 0  # ... of which trailing whitespace, which the check strips

    def push(self, delta: str, tokens_so_far: int) -> Stop | None:
        self.chars += len(delta)
        kept = delta.rstrip()
        self.trailing = self.trailing + len(delta) if not kept else len(delta) - len(kept)
        if self.tokens is not None and tokens_so_far > self.tokens:
            return Stop("format", f"reasoning still open after {self.tokens} tokens (reasoning_tokens budget)",
                        tokens_so_far)
        if self.max_chars is not None and self.chars - self.trailing > self.max_chars:
            return Stop("length", f"reasoning {self.chars - self.trailing} chars > {self.max_chars} "
                                  "before it closed", tokens_so_far)
        return None


class SampleWatcher:
    """One sample: finds the field the checks read in the generated text and feeds its detectors."""

    def __init__(self, detectors: list, budget: BudgetDetector | None, opened: bool,
                 plain_detectors: list) -> None:
        self.reasoning_detectors, self.plain_detectors = detectors, plain_detectors
        self.budget = budget
        self.opened = opened  # the prompt opened <think>: untagged text is reasoning
        self.mode: str | None = None  # "reasoning" or "plain" (untagged, not opened), once known
        self.detectors: list = []
        self.held = ""  # text not yet handed on: leading whitespace, a tag being written
        self.done = False

    def feed(self, text_delta: str, tokens_so_far: int) -> Stop | None:
        if self.done:
            return None
        text = self.held + text_delta
        self.held = ""
        if self.mode is None:  # the field starts at the first non-space text (the checks strip it)
            stripped = text.lstrip()
            if not stripped or (THINK_OPEN.startswith(stripped) and stripped != THINK_OPEN) \
                    or SPECIAL_TOKEN.startswith(stripped):
                self.held = text  # nothing yet, or "<thi": wait for the rest of the tag
                return None
            if stripped.startswith(SPECIAL_TOKEN):  # the |special_token| layout: not watched
                self.done = True
                return None
            if stripped.startswith(THINK_OPEN):
                self.mode, text = "reasoning", stripped[len(THINK_OPEN):].lstrip()
                if not text:
                    self.mode, self.held = None, THINK_OPEN + stripped[len(THINK_OPEN):]
                    return None
            else:
                self.mode, text = ("reasoning" if self.opened else "plain"), stripped
            self.detectors = self.reasoning_detectors if self.mode == "reasoning" else self.plain_detectors
        # The field ends at </think>; a <think> inside it is a layout `format` rejects: stop watching.
        close, opener = text.find(THINK_CLOSE), text.find(THINK_OPEN)
        if opener >= 0 and (close < 0 or opener < close):
            self.done = True
            return None
        if close >= 0:
            text, self.done = text[:close], True
        else:
            keep = _tag_prefix(text)
            if keep:
                self.held, text = text[-keep:], text[:-keep]
        if self.budget is not None and self.mode == "reasoning":
            stop = self.budget.push(text, tokens_so_far)
            if stop is not None and not self.done:  # closed in this delta: maybe within the budget
                return stop
        field = "reasoning" if self.mode == "reasoning" else "completion"
        for detector in self.detectors:
            why = detector.push(text, self.done)
            if why is not None:
                self.done = True
                return Stop(detector.check, f"{field} {why}", tokens_so_far)
        return None


def opens_think_prompt(request: Request) -> bool:
    """Whether the request's plain-text prompt ends inside `<think>` (R1-Zero's): its untagged text is reasoning."""
    return opens_think(request.raw_prompt)


def _tag_prefix(text: str) -> int:
    """How many trailing characters of `text` could begin `</think>` or `<think>` (held back)."""
    for size in range(min(len(THINK_CLOSE) - 1, len(text)), 0, -1):
        tail = text[-size:]
        if THINK_CLOSE.startswith(tail) or THINK_OPEN.startswith(tail):
            return size
    return 0


class EarlyStops:
    """`SamplingParams.early_stop` for a chain: detectors for the checks it holds (module docstring).

    `prepare(prompt_id, prompt, language)` before a prompt's samples are submitted (the language target
    and cited words come from the prompt; without it the language detector is off for that prompt),
    `forget(prompt_id)` once it is done. `watch(request)` is what engines call."""

    def __init__(self, checks: dict[str, dict], *, repetition: bool = True, language: bool = True,
                 reasoning_tokens: int | None = None, interval_tokens: int = DEFAULT_INTERVAL_TOKENS,
                 opened: Callable[[Request], bool] | None = None) -> None:
        self.repetition = checks.get("repetition") if repetition else None
        language_options = checks.get("language") if language else None
        if language_options is not None:
            from cotforge.checks.language import LanguageCheck

            if LanguageCheck(**language_options).max_foreign_runs is None:
                language_options = None  # only the share rule, which more text can reverse
        self.language = language_options
        length = checks.get("length")
        self.max_chars = None
        if length is not None:
            from cotforge.checks.readability import LengthCheck

            rule = LengthCheck(**length)
            self.max_chars = rule.max_chars if rule.field == "reasoning" else None
        self.reasoning_tokens = reasoning_tokens
        self.interval_tokens = interval_tokens
        self.opened = opened or opens_think_prompt
        self._prompts: dict[str, tuple[str, frozenset]] = {}

    def __getstate__(self) -> dict:
        """Pickled (sampling params sent to Ray replicas, per request): without the prompts' language
        targets, which live with the driver (`prepare`); a copy elsewhere watches all but language."""
        state = dict(self.__dict__)
        state["_prompts"] = {}
        return state

    @property
    def active(self) -> bool:
        return bool(self.repetition is not None or self.language is not None or self.max_chars is not None
                    or self.reasoning_tokens is not None)

    def prepare(self, prompt_id: str, prompt: str | None, language: str | None) -> None:
        if self.language is None or prompt_id in self._prompts:
            return
        prompt = prompt or ""
        target = language_code(language) or detect_language(prompt)
        if target:
            cited = frozenset(_NON_LATIN_RUN.findall(prompt)) if not prompt.isascii() else frozenset()
            self._prompts[prompt_id] = (target, cited)

    def forget(self, prompt_id: str) -> None:
        self._prompts.pop(prompt_id, None)

    def watch(self, request: Request) -> SampleWatcher | None:
        reasoning, plain = [], []
        if self.repetition is not None:
            detector_field = self.repetition.get("field", "both")
            if detector_field in ("both", "reasoning"):
                reasoning.append(RepetitionDetector(self.repetition))
            if detector_field == "both":  # untagged text is the summary, or the reasoning if </think> follows
                plain.append(RepetitionDetector(self.repetition))
        context = self._prompts.get(request.key) if self.language is not None else None
        if context is not None:
            reasoning.append(LanguageDetector(self.language, *context))
            if self.language.get("include_summary", True):
                plain.append(LanguageDetector(self.language, *context))
        budget = BudgetDetector(self.reasoning_tokens, self.max_chars) \
            if self.reasoning_tokens is not None or self.max_chars is not None else None
        if not reasoning and not plain and budget is None:
            return None
        return SampleWatcher(reasoning, budget, self.opened(request), plain)


def early_stops(specs: list, options: dict | str | None, opened: Callable[[Request], bool] | None = None
                ) -> EarlyStops | None:
    """The early stop a generate run asks for: `options` "off" / None-or-"default" / a dict with any of
    repetition, language (bools), reasoning_tokens (int), interval_tokens (int). None when nothing is
    watched. `specs`: the chain's `CheckSpec`s (their options are the detectors')."""
    from cotforge.errors import CotforgeError

    if options in ("off", False):
        return None
    if isinstance(options, str) and options != "default":
        raise CotforgeError(f"--early-stop {options!r}: choose default or off (or a mapping in the recipe: "
                            "repetition, language, reasoning_tokens, interval_tokens)")
    settings = {} if options in (None, "default", True) else dict(options)
    known = {"repetition", "language", "reasoning_tokens", "interval_tokens"}
    unknown = set(settings) - known
    if unknown:
        raise CotforgeError(f"early_stop: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    checks: dict[str, dict] = {}
    for spec in specs:
        checks.setdefault(spec.name, dict(spec.options))
    stops = EarlyStops(checks, opened=opened, **settings)
    return stops if stops.active else None
