"""The servers of an OpenAI-compatible fleet: which one gets the next call, which are down, the probe
that finds a server that stopped answering without closing its connections, and each server's batch
size read from its `/metrics`.

Why the batch size: calls beyond what a server decodes at once wait in its FIFO queue, and a prompt's
follow-up round that lands behind them waits for all of them (a 256-deep queue over 64 slots: ~1,200
decode steps per round of a hard prompt, the tail of a run). vLLM publishes `vllm:num_requests_running`
and `vllm:num_requests_waiting`; while requests wait, the running count is the batch the server
holds. A server's calls are capped at that batch x `HEADROOM` (enough queued to refill the slots that
free between two answers), so the rest wait in cotforge, where follow-up rounds go first. A server
without `/metrics` (a hosted API, a proxy) keeps the plain per-server concurrency."""

from __future__ import annotations

import asyncio
import math
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import aiohttp
import httpx

from cotforge.errors import CotforgeError


def v1(url: str) -> str:
    """The server's /v1 base (both ".../v1" and the root are accepted); anything but an http(s) URL
    with a host is refused here, before any call (else it would be retried as a connection error)."""
    check_url(url)
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def check_url(url) -> None:
    try:
        parts = urllib.parse.urlsplit(str(url))
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as error:
        raise CotforgeError(f"--base-url {url!r}: not a URL ({error}); give one like http://127.0.0.1:8000/v1") from None
    if not isinstance(url, str) or parts.scheme not in ("http", "https") or not parts.hostname:
        raise CotforgeError(f"--base-url {url!r}: not an http(s) URL with a host; give one like "
                            f"http://127.0.0.1:8000/v1")


@dataclass(eq=False)
class Server:
    url: str
    client: aiohttp.ClientSession
    inflight: int = 0  # sequences (kept by the engine's InFlight, the one place that counts them)
    down_until: float = 0.0
    failures: int = 0  # consecutive transport failures: the down period doubles with each
    n_per_request: bool | None = None  # None: send n, learn from the first answer
    last_answer: float = 0.0  # monotonic time of the last answer of any kind
    last_ok: float = 0.0  # ... and of the last answer with choices in it (a retry budget restarts after one)
    tasks: dict = field(default_factory=dict)  # asyncio task -> the Job it sends
    refused: set = field(default_factory=set)  # optional body fields this server answered 4xx to
    batch: int | None = None  # most requests seen running while others waited (its /metrics); None: unknown
    metrics: bool | None = None  # whether it serves vLLM's /metrics (None: not asked yet)

    def up(self, now: float) -> bool:
        return self.down_until <= now

    def cap(self, share: int) -> int:
        """Sequences this server should hold: its batch with headroom where known, else `share`."""
        if self.batch is None:
            return share
        return min(share, max(math.ceil(self.batch * HEADROOM), self.batch + MIN_QUEUED))

    def learn(self, running: float, waiting: float) -> None:
        if waiting > 0 and running > 0:  # full: what runs is the batch it holds
            self.batch = max(self.batch or 0, int(running))


HEADROOM = 1.25  # calls per server beyond its batch: refill what frees between two answers (vLLM's max_inflight slack too)
MIN_QUEUED = 4  # ... and never fewer than this many queued beyond the batch (small servers)
GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")


def scheduler_gauges(text: str) -> tuple[float, float] | None:
    """vLLM's running and waiting request counts from its Prometheus text (summed over label sets: a
    data-parallel server lists one per engine); None when either is missing."""
    sums = dict.fromkeys(GAUGES, None)
    for line in text.splitlines():
        if not line.startswith("vllm:num_requests_"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            try:
                value = float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
            sums[name] = (sums[name] or 0.0) + value
    if any(v is None for v in sums.values()):
        return None
    return sums[GAUGES[0]], sums[GAUGES[1]]


class Fleet:
    """The servers, least-loaded first; `backoff(attempt)` gives a down period (jittered, capped)."""

    def __init__(self, servers: list[Server], probe_session: aiohttp.ClientSession, probe_interval_s: float,
                 backoff: Callable[[int], float], wake: asyncio.Event, share: int = 1 << 30,
                 metrics_interval_s: float = 0.0) -> None:
        self.servers = servers
        self.share = share  # sequences per server without a known batch (the engine's concurrency / servers)
        self.metrics_interval_s = metrics_interval_s
        self.probe_session = probe_session
        self.probe_interval_s = probe_interval_s
        self.backoff = backoff
        self.wake = wake

    def up(self, now: float) -> list[Server]:
        return [s for s in self.servers if s.up(now)]

    def least_loaded(self, up: list[Server], n: int = 1) -> Server | None:
        """The up server holding the fewest sequences that has room for `n` more (None: all full)."""
        server = min(up, key=lambda s: s.inflight)  # min keeps list order on ties
        if server.inflight and server.inflight + n > server.cap(self.share):
            room = [s for s in up if not s.inflight or s.inflight + n <= s.cap(self.share)]
            return min(room, key=lambda s: s.inflight) if room else None
        return server

    def capacity(self) -> int:
        """Sequences the fleet should hold in all (each server's cap)."""
        return sum(s.cap(self.share) for s in self.servers)

    async def watch_metrics(self) -> None:
        """Read each server's /metrics every `metrics_interval_s`; a server that has none is asked once."""
        while self.metrics_interval_s > 0:
            for server in self.servers:
                if server.metrics is False or not server.up(time.monotonic()):
                    continue
                try:
                    async with self.probe_session.get(server.url.removesuffix("/v1") + "/metrics") as response:
                        text = await response.text() if response.status == 200 else ""
                except (TimeoutError, aiohttp.ClientError):
                    continue  # the probe judges health; a missed reading changes nothing
                gauges = scheduler_gauges(text)
                if gauges is None:
                    if server.metrics is None:
                        server.metrics = False  # not a vLLM server, or metrics off: plain concurrency
                    continue
                server.metrics = True
                before = server.batch
                server.learn(*gauges)
                if server.batch != before:
                    self.wake.set()
            await asyncio.sleep(self.metrics_interval_s)

    def next_up_at(self) -> float:
        return min(s.down_until for s in self.servers)

    def mark_down(self, server: Server) -> None:
        now = time.monotonic()
        if server.up(now):
            server.down_until = now + max(self.backoff(server.failures), 0.001)
            server.failures += 1
        self.wake.set()

    async def probe(self) -> None:
        """Find servers that hold calls but stopped answering; bring back servers that answer again."""
        while True:
            await asyncio.sleep(self.probe_interval_s)
            now = time.monotonic()
            for server in self.servers:
                if not server.tasks and server.up(now):
                    continue
                if now - server.last_answer < self.probe_interval_s:
                    continue  # it answered calls lately: alive, however slow a probe might be
                try:
                    async with self.probe_session.get(server.url + "/models") as response:
                        alive = response.status < 500
                except (TimeoutError, aiohttp.ClientError):
                    alive = False
                if alive:
                    if not server.up(time.monotonic()):
                        server.down_until = 0.0
                        self.wake.set()
                    continue
                self.mark_down(server)
                server.down_until = max(server.down_until, time.monotonic() + self.probe_interval_s)
                for task, job in list(server.tasks.items()):
                    job.moved = True
                    task.cancel()

    async def close(self) -> None:
        for server in self.servers:
            await server.client.close()
        await self.probe_session.close()


@dataclass
class Reach:
    """What a server said when the engine started: reachable or not, and the models it lists."""

    url: str
    error: str | None = None  # None: it answered (any HTTP status: a server is there)
    models: list[str] | None = None


def reach(base_urls: list[str], headers: dict, timeout_s: float) -> list[Reach]:
    """Ask every server for its models at once (a fleet's unreachable members are found at the start)."""
    def ask(base: str) -> Reach:
        try:
            response = httpx.get(base + "/models", headers=headers, timeout=timeout_s)
        except httpx.HTTPError as error:
            return Reach(base, f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
        try:
            response.raise_for_status()
            return Reach(base, None, [entry["id"] for entry in response.json()["data"]])
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            return Reach(base, None, None)  # there, but no usable list (a 401, a server without /models)

    with ThreadPoolExecutor(max_workers=min(16, len(base_urls))) as pool:
        return list(pool.map(ask, base_urls))


def unreachable_line(reached: list[Reach], model: str | None) -> str:
    """One line for a start where no server answered: that they cannot be reached, and what to check."""
    down = "; ".join(f"{r.url}: {r.error}" for r in reached)
    what = "the server cannot be reached" if len(reached) == 1 else f"none of the {len(reached)} servers can be reached"
    hint = "" if model else " (without --model, cotforge asks the server which model it serves)"
    return f"{what} ({down}); start it, or fix --base-url{hint}"


def served_model(reached: list[Reach]) -> str:
    """The one model a local server serves (vLLM, llama.cpp); a choice among several is the user's."""
    for entry in reached:  # a fleet serves one model: ask the first server that lists them
        if entry.models is None:
            continue
        if len(entry.models) != 1:
            raise CotforgeError(f"{entry.url}/models: no --model given and the server lists {len(entry.models)} "
                                f"({', '.join(entry.models[:5])}); give --model NAME (model=NAME in Python)")
        return entry.models[0]
    raise CotforgeError(f"{reached[0].url}/models: no --model given and the server lists no models; "
                        f"give --model NAME (model=NAME in Python)")
