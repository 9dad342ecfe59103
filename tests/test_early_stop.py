"""cotforge's own early stop (cotforge/checks/early.py): detectors stop only on verdicts more text cannot
reverse, on real traces and on generated ones, at any chunking; each costs O(delta) per feed."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cotforge.checks.early import EarlyStops, early_stops
from cotforge.checks.language import LanguageCheck
from cotforge.checks.readability import LengthCheck
from cotforge.checks.repetition import RepetitionCheck
from cotforge.checks.base import STOPPED_EARLY
from cotforge.engines.base import EARLY_STOP, Completion, Engine, Request, SampleWatch, Stop, stopped_completion
from cotforge.errors import CotforgeError

TRACES = Path(__file__).parent / "data" / "real_traces" / "sky_t1_math.jsonl"


def real_traces() -> list[dict]:
    return [json.loads(line) for line in TRACES.read_text(encoding="utf-8").splitlines()]


def run(stops: EarlyStops, key: str, text: str, step: int | list[int]) -> Stop | None:
    """Feed `text` as an engine would: deltas of `step` characters (or the given sizes, cycled)."""
    watcher = stops.watch(Request(key, []))
    sizes = step if isinstance(step, list) else [step]
    at, turn = 0, 0
    while at < len(text):
        size = sizes[turn % len(sizes)]
        turn += 1
        stop = watcher.feed(text[at:at + size], (at + size) // 4)
        at += size
        if stop is not None:
            return stop
    return None


CHECKS = {"repetition": RepetitionCheck(), "language": LanguageCheck(min_share=0.95)}


def finished_verdicts(text: str, prompt: str) -> dict[str, bool]:
    sample = {"completion": text, "prompt": prompt}
    return {name: check.check(dict(sample)).passed for name, check in CHECKS.items()}


def test_no_real_trace_that_passes_a_check_is_stopped_by_its_incremental_form():
    """All 184 Sky-T1 traces (tests/data/real_traces), fed in 256-character deltas: a trace whose
    finished text passes `repetition` (every finished one does) is never stopped by it; most of the
    looping ones are, well before their end."""
    stops = EarlyStops({"repetition": {}, "language": {"min_share": 0.95}})
    caught = saved = 0
    for row in real_traces():
        stops.prepare(row["id"], row["prompt"], None)
        stop = run(stops, row["id"], row["completion"], 256)  # ~64 tokens a feed
        if row["finished"]:
            assert stop is None, f"{row['id']} (finished) stopped: {stop}"
        if stop is not None:
            sample = {"completion": row["completion"], "prompt": row["prompt"]}
            assert not CHECKS[stop.check].check(sample).passed, f"{row['id']}: stopped by {stop}, finished text passes"
            caught += 1
            saved += len(row["completion"]) - 4 * stop.token
    # Measured: 38 of the 49 traces the finished check calls looping, ~1.1M of their 2.4M characters.
    assert caught >= 30 and saved > 800_000, (caught, saved)


# Fragments of reasoning, including every kind of region that removes text from the language check's view
# (quotes, math, code) opened and closed at random, so that chunk boundaries fall inside them.
FRAGMENTS = [
    "Let me add the numbers one by one. ", "First, 1 plus 2 is 3. ", "Then we carry the one. ",
    "Wait, let me check that again.\n", "So the total is 55.\n\n", "The formula $n(n+1)/2$ gives it. ",
    "It costs $5 in total. ", "\\(x^2 + 1\\) is positive. ", "He wrote \"", "\" and left. ", "“", "” ",
    "然后我们继续计算这个和。", "结果是五十五", "Nous devons calculer la somme de tous les nombres. ",
    "```python\n# 计算\nprint(55)\n```\n", "`总和` ", "\\begin{align} 总和 \\end{align} ", "<<2*3=6>> ",
    "we_use snake_case names here. ", "Hmm.\n", "> quoted 引用 line\n", "\n",
]


def random_text(rng: random.Random) -> str:
    return "<think>\n" + "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(5, 40))) + "\n</think>\nIt is 55."


def test_generated_traces_at_random_chunkings_never_stop_what_the_finished_check_passes():
    """Property: 300 random traces (FRAGMENTS), each fed at three random chunkings: a stop is always a
    verdict the finished check agrees with, and the same trace is stopped the same way at any chunking
    that reaches the stopping point (the verdict depends on the text, not on how it arrived)."""
    rng = random.Random(18)
    stops = EarlyStops({"repetition": {}, "language": {"min_share": 0.95}})
    prompt = "Compute the sum of the first ten positive integers."
    stopped = {"language": 0, "repetition": 0}
    for case in range(300):
        text = random_text(rng)
        stops.prepare(f"p{case}", prompt, None)
        passed = finished_verdicts(text, prompt)
        for _ in range(3):
            sizes = [rng.randint(1, 40) for _ in range(7)]
            stop = run(stops, f"p{case}", text, sizes)
            if stop is not None:
                assert not passed[stop.check], f"{text!r} at {sizes}: stopped by {stop}, finished text passes"
                stopped[stop.check] += 1
    assert stopped["language"] > 50, stopped  # the detectors do fire on these traces


def test_language_stops_a_switch_and_never_a_cited_or_formatted_one():
    stops = EarlyStops({"language": {}})
    prompt = "Compute the sum of the first ten positive integers."
    stops.prepare("p", prompt, None)
    filler = "We keep adding the next number to the running total. " * 10  # settling waits for ~400 characters
    switches = [f"<think>\nLet me add them. 然后我们继续计算这个和，得到五十五。\n{filler}\nDone.</think>55",
                "<think>\nLet me think about this carefully. Nous devons calculer la somme de tous les nombres.\n"
                f"{filler}</think>55",
                f"<think>\nWe add the numbers. Дальше считаем сумму всех чисел.\n{filler}\nOk.</think>55"]
    clean = [f'<think>\nThe problem says "然后我们继续计算这个和" in the original.\n{filler}\nSo 55.\n</think>55',
             f"<think>\nWe use \\(\\text{{总和}} = 55\\) and then we are done here.\n{filler}\nOk.</think>55",
             f"<think>\nCode:\n```python\n# 计算总和\nprint(sum(range(11)))\n```\n{filler}\nThis prints 55.\n</think>55",
             f"<think>\nIt costs $5 and the sum is 55. We are done.\n{filler}\n</think>55"]
    for text in switches:
        for step in (1, 5, 64):
            stop = run(stops, "p", text, step)
            assert stop is not None and stop.check == "language", (text, step, stop)
            assert "foreign run" in stop.reason and stop.token * 4 < len(text) - 40  # before the reasoning closed
        assert not LanguageCheck().check({"completion": text, "prompt": prompt}).passed
    for text in clean:
        for step in (1, 2, 7, 64):
            assert run(stops, "p", text, step) is None, (text, step)
        assert LanguageCheck().check({"completion": text, "prompt": prompt}).passed


def test_an_unclosed_quote_holds_its_text_until_it_can_no_longer_close():
    """A foreign sentence after an open “ is not judged while the quote may close (3,000 characters):
    it may be a citation; once the quote is dead, it is."""
    stops = EarlyStops({"language": {}})
    stops.prepare("p", "Add the numbers from one to ten.", None)
    head = "<think>\nThe text reads “ and then 然后我们继续计算这个和。\nWe go on with the sum here.\n"
    assert run(stops, "p", head, 10) is None
    long_tail = "We add one more number to the running total now.\n" * 70  # > 3,000 characters
    stop = run(stops, "p", head + long_tail, 50)
    assert stop is not None and stop.check == "language"


def test_no_target_language_no_language_watch():
    """Without a prompt language (nothing prepared, or a prompt with no words) the check falls back to the
    reasoning's own majority, which more text can change: nothing is watched."""
    stops = EarlyStops({"language": {}})
    assert stops.watch(Request("unknown", [])) is None
    stops.prepare("numbers", "12 + 30 = ?", None)
    assert stops.watch(Request("numbers", [])) is None


def test_repetition_stops_a_revisited_paragraph_with_text_between():
    """A paragraph revisited with other text in between (no back-to-back repeat a suffix rule sees)."""
    stops = EarlyStops({"repetition": {}})
    paragraph = ("Wait, perhaps I need to express the total as a fraction of the whole amount first, "
                 "and then compare it with the remaining part of the sum.\n")
    others = [f"Let me try the case n = {i} with a different approach and see where it leads us now.\n"
              for i in range(10)]
    text = "<think>\n" + "".join(paragraph + other for other in others) + "</think>\nDone."
    stop = run(stops, "p", text, 33)
    assert stop is not None and stop.check == "repetition" and "7 times" in stop.reason
    assert stop.token * 4 < len(text) * 0.8  # stopped at the 7th copy, not at the end
    assert not RepetitionCheck().check({"completion": text}).passed
    six = "<think>\n" + "".join(paragraph + other for other in others[:6]) + "</think>\nDone."
    assert run(stops, "p", six, 33) is None and RepetitionCheck().check({"completion": six}).passed


def test_repetition_counts_only_sentences_that_have_ended():
    """The 7th copy of a sentence does not stop the sample until it has ended: it may go on differently."""
    stops = EarlyStops({"repetition": {}})
    sentence = "We need to check whether the remaining amount of the sum is divisible by seven or by eleven here. "
    text = "<think>\n" + "".join(sentence + f"Other text {i} in between the copies.\n" for i in range(6))
    seventh = sentence.rstrip(". ")
    assert run(stops, "p", text + seventh, 5) is None
    assert run(stops, "p", text + seventh + ", and more words follow", 5) is None
    stop = run(stops, "p", text + seventh + ". Next", 5)
    assert stop is not None and stop.check == "repetition"


def test_only_the_reasoning_is_watched_and_a_bad_layout_ends_the_watch():
    stops = EarlyStops({"repetition": {}})
    sentence = "We need to check whether the remaining amount is divisible by seven here.\n"
    assert run(stops, "p", "<think>\nShort.\n</think>\n" + sentence * 10, 20) is None  # a summary loop
    assert run(stops, "p", "Some text first. <think>\n" + sentence * 10, 20) is None  # format rejects it
    assert run(stops, "p", "|special_token|" + sentence * 10, 20) is None
    assert run(stops, "p", sentence * 10, 20) is not None  # untagged: the field the checks read is all of it
    opened = EarlyStops({"repetition": {}}, opened=lambda request: True)
    assert run(opened, "p", "<think>" + sentence * 10, 20) is not None  # R1's template opened it; repeated opener


def test_budget_and_length_stop_an_open_reasoning_and_not_a_closed_one():
    stops = EarlyStops({}, reasoning_tokens=100)
    text = "<think>\n" + "word " * 400
    stop = run(stops, "p", text, 40)
    assert stop is not None and stop.check == "format" and 100 < stop.token <= 110
    assert run(stops, "p", "<think>\n" + "word " * 60 + "</think>\n" + "more " * 300, 40) is None
    length = EarlyStops({"length": {"max_chars": 500}})
    stop = run(length, "p", "<think>\n" + "word " * 400, 40)
    assert stop is not None and stop.check == "length"
    assert not LengthCheck(max_chars=500).check({"completion": "<think>\n" + "word " * 400}).passed
    assert run(length, "p", "<think>\n" + "word " * 99 + "     " * 50 + "</think>x", 40) is None


def test_early_stops_is_built_from_the_chain_and_can_be_turned_off():
    from cotforge.checks.chain import parse_specs

    specs = parse_specs("r1")
    stops = early_stops(specs, "default")
    assert stops is not None and stops.repetition is not None and stops.language is not None
    assert early_stops(specs, "off") is None
    assert early_stops(parse_specs("format,answer"), "default") is None  # nothing to watch
    only = early_stops(specs, {"language": False, "interval_tokens": 64})
    assert only.language is None and only.interval_tokens == 64
    assert early_stops(parse_specs("language"), None) is not None
    assert early_stops(parse_specs([{"check": "language", "max_foreign_runs": None}]), None) is None
    with pytest.raises(CotforgeError, match="unknown key"):
        early_stops(specs, {"repetitions": True})


def test_sample_watch_batches_deltas_to_the_interval():
    fed = []

    class Recorder:
        interval_tokens = 10

        def watch(self, request):
            outer = self

            class W:
                def feed(self, delta, tokens):
                    fed.append((delta, tokens))
                    return Stop("x", "why", tokens) if tokens >= 25 else None
            return W()

    watch = SampleWatch(Recorder(), Request("p", []))
    results = [watch.add(f"t{i} ", i + 1) for i in range(30)]
    assert [tokens for _, tokens in fed] == [10, 20, 30]
    assert "".join(delta for delta, _ in fed) == "".join(f"t{i} " for i in range(30))
    assert results[28] is None and results[29] == Stop("x", "why", 30) and not watch.active
    completion = stopped_completion("partial", 5, 30, watch.stop)
    assert completion.finish_reason == EARLY_STOP and completion.extra == {"check": "x", "reason": "why", "token": 30}
    assert SampleWatch(None, Request("p", [])).add("text", 100) is None


def test_cost_per_delta_is_amortised_linear_on_a_32k_token_trace():
    """A 32K-token trace (~125K characters: real clean reasoning paragraphs, no loop) in 128-character
    deltas costs about 8x a 4K-token one, not 64x: no detector re-reads the text so far. CPU time, with a
    wide margin (the ratio measured here: ~8-9)."""
    rows = [r for r in real_traces() if r["finished"]]
    paragraphs = [p for r in rows for p in r["completion"].split("\n\n") if "think>" not in p]
    rng = random.Random(0)
    body = []
    while sum(map(len, body)) < 125_000:
        body.append(rng.choice(paragraphs) + f" (step {len(body)})")  # distinct: no paragraph repeats 7 times
    text = "<think>\n" + "\n\n".join(body)
    short = text[:16_400]
    stops = EarlyStops({"repetition": {}, "language": {}, "length": {}})
    stops.prepare("p", rows[0]["prompt"], None)

    def cpu(t: str) -> float:
        best = float("inf")
        for _ in range(2):
            start = time.process_time()
            assert run(stops, "p", t, 128) is None
            best = min(best, time.process_time() - start)
        return best
    small, large = cpu(short), cpu(text)
    assert large < 20 * small, (small, large)
    assert large < 10.0  # ~1-3 s here (loaded 2-core machine); a quadratic detector takes minutes


# -- generate records a stopped sample as rejected by its check ---------------------------------------------
class ScriptedEngine(Engine):
    """Each prompt's completion is fixed text, "generated" 4 characters a token and fed to the sample's
    watcher as an engine does (SampleWatch): the engine side of the interface without a model."""

    name = "scripted"

    def __init__(self, texts: dict[str, str]) -> None:
        self.texts = texts
        self.fed = 0  # characters the watchers were fed

    def generate(self, requests, params):
        out = []
        for request in requests:
            text, completions = self.texts[request.key], []
            for _ in range(request.n):
                watch = SampleWatch(params.early_stop, request)
                stop = None
                for token in range(0, len(text), 4):
                    stop = watch.add(text[token:token + 4], token // 4 + 1)
                    self.fed += 4
                    if stop is not None:
                        break
                completions.append(stopped_completion(text[:token + 4], 3, stop.token, stop) if stop
                                   else Completion(text, "stop", 3, len(text) // 4 + 1))
            out.append(completions)
        return out


def test_generate_records_a_stopped_sample_as_rejected_by_its_check(tmp_path):
    from cotforge.generate import GenerateConfig, generate

    loop = "<think>\n" + "".join(
        "We need to check whether the remaining amount of the sum is divisible by seven or by eleven here.\n"
        f"Let me try another value, number {i}, and see.\n" for i in range(40)) + "</think>\nIt is 55."
    switch = "<think>\nLet me add. 然后我们继续计算这个和，得到五十五。\n" + "".join(f"We add number {i} now. " for i in range(30)) + \
        "\n</think>\nIt is 55."
    clean = "<think>\nLet me add the numbers one by one, which gives 55.\n</think>\nThe sum is 55."
    texts = {"loop": loop, "switch": switch, "clean": clean}
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": key, "prompt": "Compute the sum of the first ten positive integers."})
                               + "\n" for key in texts))
    engine = ScriptedEngine(texts)
    config = GenerateConfig(engine="scripted", k=1, accept=1, max_rounds=1, checks="format,repetition,language",
                            jobs=0)
    summary = generate(prompts, tmp_path / "run", config, engine=engine)
    rows = {r["prompt_id"]: r for r in pq.read_table(tmp_path / "run" / "samples").to_pylist()}
    assert rows["clean"]["accepted"] and rows["clean"]["finish_reason"] == "stop"
    for key, check in (("loop", "repetition"), ("switch", "language")):
        row = rows[key]
        verdicts = {v["check"]: v for v in row["verdicts"]}
        assert row["finish_reason"] == f"stopped:{check}" and not row["accepted"]
        assert not verdicts[check]["passed"] and verdicts[check]["code"] == STOPPED_EARLY
        assert verdicts[check]["reason"].startswith(f"stopped early at token {row['completion_tokens']}: ")
        assert all(v["status"] == "n/a" for name, v in verdicts.items() if name != check)
        assert len(row["completion"]) < len(texts[key]) and row["completion_tokens"] < len(texts[key]) // 4
    tokens = summary["tokens"]
    assert set(tokens["stopped_early"]) == {"repetition", "language"}
    assert tokens["rejected"]["repetition"]["tokens"] == rows["loop"]["completion_tokens"]
    assert tokens["stopped_early"]["language"]["samples"] == 1
    off = generate(prompts, tmp_path / "off", GenerateConfig(**{**config.__dict__, "early_stop": "off"}),
                   engine=ScriptedEngine(texts))
    assert not off["tokens"]["stopped_early"] and off["tokens"]["total"] > tokens["total"]


def test_format_rejects_a_stored_stopped_sample_when_filtered_again():
    from cotforge.checks.format import FormatCheck

    verdict = FormatCheck().check({"completion": "<think>\npartial", "finish_reason": "stopped:language",
                                   "completion_tokens": 80})
    assert not verdict.passed and "stopped early by language at token 80" in verdict.reason
