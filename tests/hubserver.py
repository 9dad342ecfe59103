"""A loopback stand-in for the Hugging Face Hub: the parts of its HTTP API that `huggingface_hub` and
`datasets` call to read a dataset repo (revision info, tree listing, paths-info, resolve with ranges)
and to write one (create repo, preupload, commit, the large-folder upload's calls).

The real Hub cannot be reached from tests (and must not be): this server holds dataset repos in
memory, each a list of commits, so a test can push a new commit and see a resume refuse it. Clients
reach it through `HF_ENDPOINT` (read by huggingface_hub at import: set it before importing, or run
the CLI in a subprocess). Xet is off (`HF_HUB_DISABLE_XET=1`): its content store is another service.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Repo:
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)  # (sha, files), oldest first
    refs: dict[str, str] = field(default_factory=dict)  # branch/tag -> sha
    gated: bool = False
    private: bool = False

    def resolve(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        sha = self.refs.get(revision, revision)
        return next(((s, files) for s, files in self.commits if s == sha), None)


def _sha(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()


class FakeHub:
    """In-memory dataset repos served on 127.0.0.1; `requests` logs (method, path) for assertions."""

    def __init__(self, token: str = "hf_test") -> None:
        self.repos: dict[str, Repo] = {}
        self.token = token
        self.requests: list[tuple[str, str]] = []
        self.created: list[dict] = []
        self.served: list[tuple[str, int]] = []  # (file, bytes sent) per GET of a file: streaming reads ranges
        self.lock = threading.Lock()
        self.fail_commits = 0  # the next N commits answer 500 (an upload cut off mid-way)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    # -- repos ---------------------------------------------------------------------------------------
    def add_dataset(self, repo_id: str, files: dict[str, bytes | str], gated: bool = False, tag: str | None = None) -> str:
        """Commit `files` (replacing the repo's tree) to `main`; returns the new commit sha."""
        with self.lock:
            repo = self.repos.setdefault(repo_id, Repo(gated=gated))
            repo.gated = repo.gated or gated
            sha = _sha(f"{repo_id}/{len(repo.commits)}")
            repo.commits.append((sha, {p: d.encode() if isinstance(d, str) else d for p, d in files.items()}))
            repo.refs["main"] = sha
            if tag:
                repo.refs[tag] = sha
            return sha

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id].resolve(revision)[1]

    # -- serving -------------------------------------------------------------------------------------
    @contextmanager
    def serving(self) -> Iterator[FakeHub]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            thread.join(timeout=10)

    def env(self, token: bool = True) -> dict[str, str]:
        """The environment a client process needs to reach this server (and nothing else)."""
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN")}
        env.update({"HF_ENDPOINT": self.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                    "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "10"})
        if token:
            env["HF_TOKEN"] = self.token
        return env

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _reply(self, code: int, body: bytes = b"", headers: dict | None = None,
                       content_type: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, code: int, payload, headers: dict | None = None) -> None:
                self._reply(code, json.dumps(payload).encode(), headers)

            def _error(self, code: int, error_code: str, message: str) -> None:
                self._json(code, {"error": message}, {"X-Error-Code": error_code, "X-Error-Message": message})

            def _authorized(self) -> bool:
                return self.headers.get("Authorization") == f"Bearer {hub.token}"

            def _repo(self, repo_id: str) -> Repo | None:
                repo = hub.repos.get(repo_id)
                if repo is None or (repo.private and not self._authorized()):
                    self._error(404, "RepoNotFound", f"Repository Not Found for url: {self.path}.")
                    return None
                if repo.gated and not self._authorized():
                    self._error(401, "GatedRepo", f"Access to dataset {repo_id} is restricted. You must have "
                                                   f"access to it and be authenticated to access it. Please log in.")
                    return None
                return repo

            def _commit(self, repo: Repo, revision: str):
                found = repo.resolve(unquote(revision))
                if found is None:
                    self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return found

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                path, query = unquote(url.path), parse_qs(url.query)
                hub.requests.append((self.command, self.path))
                if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)(?:/revision/(.+))?", path):
                    return self._info(m.group(1), m.group(2) or "main")
                if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path):
                    return self._tree(m.group(1), m.group(2), m.group(3) or "", query)
                if m := re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                    return self._resolve(m.group(1), m.group(2), m.group(3))
                if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/refs", path):
                    if (repo := self._repo(m.group(1))) is not None:
                        return self._json(200, {"branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s}
                                                             for n, s in repo.refs.items() if n == "main"],
                                                "tags": [], "converts": []})
                    return None
                return self._error(404, "NotServed", f"not served by the loopback hub: {self.command} {path}")

            def _info(self, repo_id: str, revision: str) -> None:
                if (repo := self._repo(repo_id)) is None or (found := self._commit(repo, revision)) is None:
                    return
                sha, files = found
                self._json(200, {"id": repo_id, "_id": repo_id, "sha": sha, "private": repo.private,
                                 "gated": "auto" if repo.gated else False, "disabled": False, "downloads": 0,
                                 "likes": 0, "tags": [], "lastModified": "2025-01-01T00:00:00.000Z",
                                 "siblings": [{"rfilename": p} for p in sorted(files)],
                                 "cardData": _card_data(files.get("README.md"))})

            def _entries(self, files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict]:
                prefix = prefix.strip("/")
                out, dirs = [], set()
                for name in sorted(files):
                    if prefix and not name.startswith(prefix + "/"):
                        continue
                    rest = name[len(prefix) + 1:] if prefix else name
                    parts = rest.split("/")
                    for depth in range(1, len(parts)):
                        directory = "/".join(filter(None, [prefix, *parts[:depth]]))
                        if (recursive or depth == 1) and directory not in dirs:
                            dirs.add(directory)
                            out.append({"type": "directory", "path": directory, "oid": _sha(directory), "size": 0})
                    if recursive or len(parts) == 1:
                        out.append(_file_entry(name, files[name]))
                return out

            def _tree(self, repo_id: str, revision: str, prefix: str, query: dict) -> None:
                if (repo := self._repo(repo_id)) is None or (found := self._commit(repo, revision)) is None:
                    return
                files = found[1]
                if prefix and prefix in files:
                    return self._error(404, "EntryNotFound", f"{prefix} is a file")
                entries = self._entries(files, prefix, query.get("recursive", ["false"])[0].lower() == "true")
                if prefix and not entries:
                    return self._error(404, "EntryNotFound", f"{prefix} does not exist on {revision}")
                self._json(200, entries)

            def _resolve(self, repo_id: str, revision: str, name: str) -> None:
                if (repo := self._repo(repo_id)) is None or (found := self._commit(repo, revision)) is None:
                    return
                sha, files = found
                if name not in files:
                    return self._error(404, "EntryNotFound", f"{name} does not exist on {revision}")
                data = files[name]
                headers = {"X-Repo-Commit": sha, "ETag": f'"{_git_oid(data)}"', "Accept-Ranges": "bytes"}
                ranged = self.headers.get("Range")
                if ranged and (m := re.fullmatch(r"bytes=(\d*)-(\d*)", ranged.strip())):
                    if m.group(1) == "":  # suffix range: the last N bytes
                        start, end = max(0, len(data) - int(m.group(2))), len(data) - 1
                    else:
                        start = int(m.group(1))
                        end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
                    if start >= len(data):
                        return self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                    if self.command == "GET":
                        hub.served.append((name, end + 1 - start))
                    return self._reply(206, data[start:end + 1], headers, "application/octet-stream")
                if self.command == "GET":
                    hub.served.append((name, len(data)))
                self._reply(200, data, headers, "application/octet-stream")

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                path = unquote(url.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.requests.append((self.command, self.path))
                if path == "/api/repos/create":
                    request = json.loads(body)
                    hub.created.append(request)
                    repo_id = f"{request['organization']}/{request['name']}" if request.get("organization") \
                        else request["name"]
                    with hub.lock:
                        if repo_id not in hub.repos:
                            hub.repos[repo_id] = Repo(private=bool(request.get("private")
                                                                   or request.get("visibility") == "private"))
                            hub.repos[repo_id].commits.append((_sha(f"{repo_id}/init"), {}))
                            hub.repos[repo_id].refs["main"] = hub.repos[repo_id].commits[0][0]
                    return self._json(200, {"url": f"{hub.url}/datasets/{repo_id}"})
                if path == "/api/validate-yaml":
                    return self._json(200, {"warnings": [], "errors": []})
                if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/paths-info/([^/]+)", path):
                    if (repo := self._repo(m.group(1))) is None or (found := self._commit(repo, m.group(2))) is None:
                        return None
                    files = found[1]
                    wanted = parse_qs(body.decode()).get("paths") or json.loads(body or b"{}").get("paths", [])
                    out = []
                    for name in wanted:
                        if name in files:
                            out.append(_file_entry(name, files[name]))
                        elif any(f.startswith(name.rstrip("/") + "/") for f in files):
                            out.append({"type": "directory", "path": name, "oid": _sha(name), "size": 0})
                    return self._json(200, out)
                if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/preupload/([^/]+)", path):
                    if self._repo(m.group(1)) is None:
                        return None
                    return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                       "shouldIgnore": False, "oid": None}
                                                      for f in json.loads(body)["files"]]})
                if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/commit/([^/]+)", path):
                    return self._commit_files(m.group(1), unquote(m.group(2)), body)
                return self._error(404, "NotServed", f"not served by the loopback hub: POST {path}")

            def _commit_files(self, repo_id: str, revision: str, body: bytes) -> None:
                if (repo := self._repo(repo_id)) is None or (found := self._commit(repo, revision)) is None:
                    return
                with hub.lock:
                    if hub.fail_commits > 0:
                        hub.fail_commits -= 1
                        return self._error(500, "InternalError", "commit failed (injected by the test)")
                    files = dict(found[1])
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                        elif item["key"] == "deletedFile":
                            files.pop(item["value"]["path"], None)
                    sha = _sha(f"{repo_id}/{len(repo.commits)}")
                    repo.commits.append((sha, files))
                    repo.refs["main"] = sha
                self._json(200, {"commitUrl": f"{hub.url}/datasets/{repo_id}/commit/{sha}", "commitOid": sha,
                                 "success": True})

        return Handler


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _file_entry(name: str, data: bytes) -> dict:
    return {"type": "file", "path": name, "oid": _git_oid(data), "size": len(data)}


def _card_data(readme: bytes | None) -> dict | None:
    """The README's YAML front matter, as the Hub returns it in `cardData`."""
    if not readme or not readme.startswith(b"---\n"):
        return None
    import yaml

    return yaml.safe_load(readme.split(b"---\n")[1].decode())
