"""Any OpenAI-compatible server, or a fleet of them: vLLM serve, SGLang, llama.cpp's server, hosted APIs.

Split by concern:
- `engine`: `OpenAIEngine`, the public face (submit/poll/close), the asyncio loop's thread, the queue of
  calls waiting for a slot, and the in-flight accounting (`InFlight`: sequences the scheduler counts,
  sequences each server holds) in one place;
- `calls`: one HTTP call and what its answer means (commit, retry with backoff, move, fail), the request
  body and the parsing of choices;
- `fleet`: the servers, which one gets the next call, which are down, and the probe that finds a server
  that stopped answering;
- `stream`: an answer read as server-sent events (`stream: true`): the same completion as a plain answer,
  and what a cancelled or stopped sample had received.

Streaming with asynchronous HTTP (aiohttp: with hundreds of connections open, httpx's async pool spent
the client's CPU on bookkeeping: 491 vs 8,841 calls in 15 s against the simulated server, 256 in
flight, same machine): an asyncio loop in one background thread keeps up to `concurrency`
sequences in flight (default 256 per server, what a vLLM server batches by default), spread over
`base_url` (one URL or a list: one server per node). Each call goes to the least-loaded server that
is up (sequences in flight; ties to the one listed first).

Chat requests go to `/v1/chat/completions`, `raw_prompt` requests to `/v1/completions`. By default
each sample is its own call (`n=1`, seed + j): a server frees a slot as each sequence ends, and a
client that counts a whole `n` group in flight until its longest member ends leaves those slots
empty (measured on the simulated server: 0.6 of 64 slots busy with groups of 4 at concurrency 72).
vLLM's prefix cache still computes the shared prompt once. `n_per_request=None` sends `n` where the
server honours it and learns from the first answer (llama.cpp's server returns one choice whatever
`n` says: short answers are topped up with single calls and that server gets singles from then on);
`True` always sends `n`.

Streaming, and where it pays (`benchmarks/stream_cost.py`, this 2-core machine at load ~6): reading
an answer as server-sent events costs the client ~100-140 us of CPU per event (aiohttp and the loop;
the parser alone is 10.5 us, 95K vLLM-shaped events a CPU second), against ~5.6 ms per 1K tokens for
plain answers. At vLLM's default of one event per token that is ~150 ms per 1K tokens (ratio 13.5 to
plain on the same samples): one core reads ~7K tokens/s, a few busy GPU servers, not a 64-node fleet;
at `--stream-interval 16` on the server, ~15 ms per 1K tokens (ratio 2.7), ~70K tokens/s a core. So:
- plain loops are stopped by the server (`repetition_detection` in the body): no client cost;
- calls stream only where cotforge watches what the server cannot (`SamplingParams.early_stop`: a
  paragraph revisited, a language switch, a reasoning budget), and a fleet read that way wants its
  servers started with `--stream-interval 16` or more (the client cannot set it per request);
- `stream=True/False` forces it either way (`stream=True` also gives cancelled samples their real
  token counts; a plain call that is cancelled received nothing and counts 0).
`cotforge generate`'s default early stop watches the chain's `repetition` and `language` checks (the
r1 preset holds both), so its openai calls stream by default; `--early-stop off` reads them whole. A
watched sample goes one per call; a watcher's stop closes its stream (vLLM aborts the request) and the
sample comes back `early_stop` with the text and tokens it had.
A streamed call asks `stream_options: {include_usage, continuous_usage_stats}` (tokens in every
chunk; a server that refuses the field is learned once and counted by its chunks), and a stream that
ends before its finish reason is a transport fault: asked again with its seed, like a dropped call.

Failures (what each kind of fault does is in `calls`; the counts are `OpenAIEngine.faults`):
- at the start every server is asked for its models (without a model name, the one it serves is taken
  from there). None answering is an outage too: a note says so, they are asked again (pauses doubling
  from 0.5 s up to `probe_interval_s`) for up to `outage_s`, then one line ends the run; `outage_s=0`
  stops at once. A server still loading its model (`vllm serve` refuses connections until it serves) is
  thus waited for. A fleet member that does not answer while others do is named on stderr and gets
  calls once the probe finds it answering. A base URL that is no http(s) URL is refused before
  anything starts (`validate_options`, called by `engines.check_options`).
- outages: 429 and 5xx (honouring `Retry-After`), 200 bodies that are not a JSON object or hold no
  choices, connection errors and timeouts. Retried with exponential backoff and full jitter; a connection
  error marks the server down for a backoff period (doubling while it keeps failing) and the call moves to
  another server at once. A call gives up only after more than `max_retries` failures and `outage_s`
  (default 120 s) of failing, so a restart of a minute or two is ridden out however fast the refusals come;
  after a transport failure its budget starts again once its server has answered since.
- an empty completion (finish reason `stop`, 0 completion tokens, no text) is a server fault, not the
  model's answer: retried, never returned as a sample; more than `max_retries` in a row for one sample
  with no real answer from its server between them ends the run.
- a server that stops answering without closing its connections is found by a probe of `/v1/models`
  every `probe_interval_s` (while it has calls in flight); when the probe fails, its calls are
  cancelled and moved. So `timeout_s` can stay long enough for 32K-token answers (default 1 hour).
- a call that runs out of budget ends the run with one line naming the URL and the last error, ending
  "rerun the same command to resume" (the run folder resumes exactly); 400 "prompt too long" answers come
  back as a per-request error (the scheduler quarantines that prompt); any other 4xx ends the run at
  once (a wrong model name would fail every call).
"""

from cotforge.engines.openai.engine import DEFAULT_BASE_URL, PER_SERVER_CONCURRENCY, OpenAIEngine

__all__ = ["DEFAULT_BASE_URL", "PER_SERVER_CONCURRENCY", "OpenAIEngine"]
