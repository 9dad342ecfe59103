"""The servers of an OpenAI-compatible fleet: which one gets the next call, which are down, and the
probe that finds a server that stopped answering without closing its connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import httpx

from cotforge.io.errors import CotforgeError


def v1(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"  # accept both ".../v1" and the root


@dataclass(eq=False)
class Server:
    url: str
    client: aiohttp.ClientSession
    inflight: int = 0  # sequences (kept by the engine's InFlight, the one place that counts them)
    down_until: float = 0.0
    failures: int = 0  # consecutive transport failures: the down period doubles with each
    n_per_request: bool | None = None  # None: send n, learn from the first answer
    last_answer: float = 0.0  # monotonic time of the last answer of any kind
    tasks: dict = field(default_factory=dict)  # asyncio task -> the Job it sends

    def up(self, now: float) -> bool:
        return self.down_until <= now


class Fleet:
    """The servers, least-loaded first; `backoff(attempt)` gives a down period (jittered, capped)."""

    def __init__(self, servers: list[Server], probe_session: aiohttp.ClientSession, probe_interval_s: float,
                 backoff: Callable[[int], float], wake: asyncio.Event) -> None:
        self.servers = servers
        self.probe_session = probe_session
        self.probe_interval_s = probe_interval_s
        self.backoff = backoff
        self.wake = wake

    def up(self, now: float) -> list[Server]:
        return [s for s in self.servers if s.up(now)]

    @staticmethod
    def least_loaded(up: list[Server]) -> Server:
        return min(up, key=lambda s: s.inflight)  # min keeps list order on ties

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


def first_served_model(base_urls: list[str], headers: dict, connect_timeout_s: float) -> str:
    """The one model a local server serves (vLLM, llama.cpp); a choice among several is the user's."""
    errors = []
    for base in base_urls:  # a fleet serves one model: ask the first server that answers
        url = base + "/models"
        try:
            response = httpx.get(url, headers=headers, timeout=connect_timeout_s)
            response.raise_for_status()
            served = [entry["id"] for entry in response.json()["data"]]
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as error:
            errors.append(f"{url}: {error}")
            continue
        if len(served) != 1:
            raise CotforgeError(f"{url}: no model given and the server lists {len(served)} "
                                f"({', '.join(served[:5])}); pass model=NAME")
        return served[0]
    raise CotforgeError(f"{errors[0].split(': ', 1)[0]}: no model given and none could be listed "
                        f"({'; '.join(e.split(': ', 1)[1] for e in errors)}); pass model=NAME")
