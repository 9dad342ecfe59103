"""Any OpenAI-compatible server: vLLM serve, SGLang, llama.cpp's server, hosted APIs.

Chat requests go to `/v1/chat/completions`, `raw_prompt` requests to `/v1/completions`. A request for
`n` samples is sent once with `n` where the server honours it; llama.cpp's server returns one choice
whatever `n` says, so short answers are topped up with single requests (seed + j) and the engine
remembers to send singles from then on. Calls run `concurrency` at a time; 429, 5xx, timeouts and
connection errors are retried with exponential backoff and jitter, honouring `Retry-After`.
"""

from __future__ import annotations

import email.utils
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from cotforge.engines.base import Completion, Engine, Request, SamplingParams
from cotforge.io.errors import CotforgeError

DEFAULT_BASE_URL = "https://api.openai.com/v1"  # the OpenAI SDK's default too


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(self, base_url: str | None = None, api_key: str | None = None, model: str | None = None,
                 concurrency: int = 8, timeout_s: float = 120, max_retries: int = 5,
                 n_per_request: bool | None = None, backoff_s: float = 1.0, backoff_max_s: float = 60.0) -> None:
        base = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.base_url = base if base.endswith("/v1") else base + "/v1"  # accept both ".../v1" and the root
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.n_per_request = n_per_request  # None: send n, learn from the first answer
        self._lock = threading.Lock()
        self._client = httpx.Client(
            timeout=timeout_s, headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))
        self.model = model or self._first_served_model()

    def generate(self, requests: list[Request], params: SamplingParams) -> list[list[Completion]]:
        results: list[list[Completion]] = [[] for _ in requests]
        # A job asks for `n` samples of request i starting at sample index j0 (seed + j0).
        if self.n_per_request is False:
            jobs = [(i, j, 1) for i, r in enumerate(requests) for j in range(r.n)]
        else:
            jobs = [(i, 0, r.n) for i, r in enumerate(requests) if r.n > 0]
        with ThreadPoolExecutor(self.concurrency) as pool:
            def run(jobs: list[tuple[int, int, int]]) -> None:
                answers = pool.map(lambda job: self._ask(requests[job[0]], params, job[2], job[1]), jobs)
                for (i, _, _), completions in zip(jobs, answers):
                    results[i].extend(completions)

            run(jobs)
            # Top up answers that came back short with single requests for the missing sample indices.
            run([(i, j, 1) for i, r in enumerate(requests) for j in range(len(results[i]), r.n)])
        for request, completions in zip(requests, results):
            if len(completions) != request.n:
                raise CotforgeError(f"{self.base_url}: prompt '{request.key}' got {len(completions)} "
                                    f"completions, {request.n} wanted")
        return results

    def _ask(self, request: Request, params: SamplingParams, n: int, first_sample: int) -> list[Completion]:
        """One HTTP call for `n` samples; fewer may come back (llama.cpp ignores `n`)."""
        body: dict = {"model": self.model, "temperature": params.temperature, "top_p": params.top_p,
                      "max_tokens": params.max_tokens, "seed": request.seed + first_sample}
        if n > 1:
            body["n"] = n
        if request.raw_prompt is not None:
            path, body["prompt"] = "/completions", request.raw_prompt
        else:
            path, body["messages"] = "/chat/completions", request.messages
        answer = self._post(path, body)
        choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))[:n]
        if n > 1:
            with self._lock:
                if self.n_per_request is None or len(choices) < n:
                    self.n_per_request = len(choices) >= n
        usage = answer.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        # Servers report one usage for all n choices: the prompt once, completion tokens summed. We split
        # the sum evenly (remainder to the first choices); per-choice counts are approximate when n > 1.
        total, count = int(usage.get("completion_tokens") or 0), max(len(choices), 1)
        return [Completion(_choice_text(choice), choice.get("finish_reason") or "unknown", prompt_tokens,
                           total // count + (k < total % count), _choice_extra(choice))
                for k, choice in enumerate(choices)]

    def _post(self, path: str, body: dict) -> dict:
        url = self.base_url + path
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                response = self._client.post(url, json=body)
            except httpx.TimeoutException as error:
                last = f"timeout ({type(error).__name__})"
            except httpx.TransportError as error:
                last = f"connection error ({type(error).__name__}: {error})"
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError as error:
                        raise CotforgeError(f"{url}: HTTP 200 but not JSON: {response.text[:300]!r}") from error
                last = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code != 429 and response.status_code < 500:
                    raise CotforgeError(f"{url}: {last}")  # a bad request stays bad: no retry
                retry_after = _retry_after_s(response.headers.get("retry-after"))
            if attempt < self.max_retries:
                backoff = random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** attempt))  # full jitter
                time.sleep(min(self.backoff_max_s, retry_after) if retry_after is not None else backoff)
        raise CotforgeError(f"{url}: gave up after {self.max_retries + 1} attempts; last: {last}")

    def _first_served_model(self) -> str:
        """The one model a local server serves (vLLM, llama.cpp); a choice among several is the user's."""
        url = self.base_url + "/models"
        try:
            response = self._client.get(url)
            response.raise_for_status()
            served = [entry["id"] for entry in response.json()["data"]]
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as error:
            raise CotforgeError(f"{url}: no model given and none could be listed ({error}); "
                                "pass model=NAME") from error
        if len(served) != 1:
            raise CotforgeError(f"{url}: no model given and the server lists {len(served)} "
                                f"({', '.join(served[:5])}); pass model=NAME")
        return served[0]

    def close(self) -> None:
        self._client.close()


def _choice_text(choice: dict) -> str:
    if "message" not in choice:
        return choice.get("text") or ""
    message = choice["message"]
    content = message.get("content") or ""
    # vLLM/SGLang with a reasoning parser move the <think> part out of the content; put it back so the
    # sample keeps the whole R1-style completion.
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return f"<think>\n{reasoning}\n</think>\n\n{content}" if reasoning else content


def _choice_extra(choice: dict) -> dict:
    message = choice.get("message") or {}
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return {"reasoning_content": reasoning} if reasoning else {}


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
