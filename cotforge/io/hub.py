"""Inputs on the Hugging Face Hub: `hf://datasets/ORG/NAME[@REVISION][/PATH][?split=S&config=C]`.

Wherever a prompts or samples file is accepted, such a spec is too (`read_rows` and the run folder's
fingerprints dispatch here). The CLI's `--split` / `--config` (and a mix source's `split:` /
`config:`) are written into the spec's query, so a spec alone says what is read and every stage
passes it on as a plain string.

- Rows stream through `datasets.load_dataset(..., streaming=True)`: files are read a block at a time
  over HTTP range requests, never whole, so a multi-million-row set is never in memory.
- The revision (branch, tag or commit; default `main`) is resolved once per process to its commit
  hash, and the rows are read at that commit: the run's input fingerprint is that hash (with what is
  read of it: path, config, split), so a resume refuses a dataset that changed since, as for files.
- No split given: every split, in the dataset's order, each row with a `split` column (kept in the
  row's metadata) when there are several, as for a local `datasets` folder: nothing is dropped silently.
- Errors are one line: a missing dataset or revision, a wrong split or config, a gated set without
  (or with the wrong) token, an unreachable endpoint or offline mode.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, quote, unquote, urlencode

from cotforge.errors import CotforgeError

SCHEME = "hf://"
_SPEC = re.compile(r"hf://datasets/(?P<repo>[^/@?]+/[^/@?]+)(?:@(?P<revision>[^/?]+))?(?:/(?P<path>[^?]*))?"
                   r"(?:\?(?P<query>.*))?")
_QUERY_KEYS = ("split", "config")


def is_hub(path) -> bool:
    return isinstance(path, str) and path.startswith(SCHEME)


@dataclass(frozen=True)
class HubInput:
    repo_id: str
    revision: str | None = None  # None: main
    path: str | None = None  # a file, folder or glob inside the repo
    split: str | None = None
    config: str | None = None

    @classmethod
    def parse(cls, spec: str) -> HubInput:
        match = _SPEC.fullmatch(spec.strip())
        if match is None:
            raise CotforgeError(f"{spec}: not a Hub dataset; write hf://datasets/ORG/NAME[@REVISION][/PATH]")
        query = dict(parse_qsl(match.group("query") or "", keep_blank_values=True))
        unknown = set(query) - set(_QUERY_KEYS)
        if unknown:
            raise CotforgeError(f"{spec}: unknown option {sorted(unknown)[0]!r} (known: {', '.join(_QUERY_KEYS)})")
        revision = match.group("revision")
        return cls(match.group("repo"), unquote(revision) if revision else None,
                   match.group("path").strip("/") or None if match.group("path") else None,
                   query.get("split") or None, query.get("config") or None)

    def with_options(self, split: str | None = None, config: str | None = None) -> HubInput:
        """The CLI's --split / --config on top of the spec's own; two different values are an error."""
        for name, given in (("split", split), ("config", config)):
            own = getattr(self, name)
            if given is not None and own is not None and given != own:
                raise CotforgeError(f"{self.spec()}: --{name} {given!r} contradicts the spec's {name}={own!r}")
        return replace(self, split=self.split or split, config=self.config or config)

    def spec(self) -> str:
        text = f"{SCHEME}datasets/{self.repo_id}"
        if self.revision:
            text += "@" + quote(self.revision, safe="")
        if self.path:
            text += "/" + self.path
        query = {k: getattr(self, k) for k in _QUERY_KEYS if getattr(self, k)}
        return text + ("?" + urlencode(query) if query else "")

    def label(self, commit: str, split: str | None = None) -> str:
        """How rows of this input are named in errors and the quarantine: the commit they came from."""
        where = f"{SCHEME}datasets/{self.repo_id}@{commit[:12]}" + (f"/{self.path}" if self.path else "")
        parts = [p for p in (self.config and f"config {self.config}", split and f"split {split}") if p]
        return where + (f" ({', '.join(parts)})" if parts else "")


def with_hub_options(path: str, split: str | None, config: str | None) -> str:
    """`path` with the CLI's --split / --config folded in when it is a Hub spec; a file path as it is."""
    if not is_hub(path):
        if split is not None or config is not None:
            flag = "--split" if split is not None else "--config"
            raise CotforgeError(f"{path}: {flag} applies to hf://datasets/... inputs (a local `datasets` folder "
                                f"of several splits gives each row a `split` column)")
        return path
    return HubInput.parse(path).with_options(split, config).spec()


# -- talking to the Hub ----------------------------------------------------------------------------
_commits: dict[tuple[str, str], str] = {}
_commits_lock = threading.Lock()


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@contextmanager
def hub_errors(what: str, hub: HubInput) -> Iterator[None]:
    """Turn huggingface_hub / datasets / network exceptions into one-line CotforgeErrors."""
    from huggingface_hub import errors

    try:
        yield
    except CotforgeError:
        raise
    except errors.GatedRepoError:
        raise _gated(what, hub) from None
    except errors.RevisionNotFoundError:
        raise CotforgeError(f"{what}: dataset {hub.repo_id} has no revision {hub.revision!r} "
                            f"(a branch, tag or commit hash)") from None
    except errors.RepositoryNotFoundError:
        raise CotforgeError(f"{what}: no dataset {hub.repo_id} on {_endpoint()} (or it is private and no token "
                            f"with access is set: HF_TOKEN or `hf auth login`)") from None
    except errors.EntryNotFoundError:
        raise CotforgeError(f"{what}: dataset {hub.repo_id} has no file or folder {hub.path!r}") from None
    except errors.OfflineModeIsEnabled:
        raise CotforgeError(f"{what}: HF_HUB_OFFLINE is set, so the Hub cannot be read; unset it") from None
    except errors.HfHubHTTPError as err:
        raise CotforgeError(f"{what}: the Hub at {_endpoint()} answered: {_first_line(err)}; "
                            f"rerun the same command to resume") from None
    except Exception as err:  # transport errors: httpx (or its fork), httpcore, fsspec, aiohttp
        if isinstance(err, ConnectionError) or type(err).__module__.split(".")[0] in _TRANSPORT_MODULES:
            raise CotforgeError(f"{what}: cannot read from the Hub at {_endpoint()}: {_first_line(err)}; "
                                f"rerun the same command to resume") from None
        raise


_TRANSPORT_MODULES = {"httpx", "httpx2", "httpcore", "aiohttp", "fsspec", "requests", "urllib3"}


def _gated(what: str, hub: HubInput) -> CotforgeError:
    from huggingface_hub import get_token

    why = ("no token is set: accept the dataset's conditions on the Hub, then set HF_TOKEN or run "
           "`hf auth login`") if get_token() is None else ("the token given has no access to it; accept its "
                                                            "conditions on the Hub with that account")
    return CotforgeError(f"{what}: dataset {hub.repo_id} is gated; {why}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def resolve_commit(hub: HubInput) -> str:
    """The commit hash `hub.revision` (default main) names, asked once per process: reads and the
    fingerprint of one run see the same commit even if the branch moves meanwhile."""
    key = (hub.repo_id, hub.revision or "main")
    with _commits_lock:
        if key in _commits:
            return _commits[key]
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise CotforgeError(f"{hub.spec()}: HF_HUB_OFFLINE is set, so the Hub cannot be read; unset it")
    with hub_errors(hub.spec(), hub):
        info = HfApi().dataset_info(hub.repo_id, revision=hub.revision)
    with _commits_lock:
        return _commits.setdefault(key, info.sha)


def hub_fingerprint(spec: str) -> dict:
    """The run folder's fingerprint of a Hub input: its commit, and what of it is read."""
    hub = HubInput.parse(spec)
    commit = resolve_commit(hub)
    digest = hashlib.blake2b(digest_size=16)
    for part in (hub.repo_id, commit, hub.path or "", hub.config or "", hub.split or ""):
        digest.update(part.encode() + b"\x00")
    return {"path": hub.spec(), "revision": hub.revision or "main", "commit": commit, "blake2b": digest.hexdigest()}


def _data_location(hub: HubInput, commit: str) -> dict:
    """load_dataset's data_dir / data_files for the spec's PATH (a folder, a file or a glob)."""
    if not hub.path:
        return {}
    if any(ch in hub.path for ch in "*?["):
        return {"data_files": hub.path}
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFolder

    with hub_errors(hub.spec(), hub):
        found = HfApi().get_paths_info(hub.repo_id, [hub.path], revision=commit, repo_type="dataset")
    if not found:
        raise CotforgeError(f"{hub.spec()}: dataset {hub.repo_id} has no file or folder {hub.path!r} "
                            f"at {commit[:12]}")
    return {"data_dir": hub.path} if isinstance(found[0], RepoFolder) else {"data_files": hub.path}


def _open_splits(hub: HubInput, commit: str):
    import datasets
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # progress is cotforge's own (rows read), not one bar per resolved file
    location = _data_location(hub, commit)
    with hub_errors(hub.spec(), hub):
        try:
            splits = datasets.load_dataset(hub.repo_id, name=hub.config, revision=commit, streaming=True,
                                           **location)
        except datasets.exceptions.DatasetNotFoundError as err:
            if "gated" in str(err):  # datasets' own check, when the commit was resolved with access before
                raise _gated(hub.spec(), hub) from None
            raise CotforgeError(f"{hub.spec()}: {_first_line(err)}") from None
        except (ValueError, FileNotFoundError) as err:
            # A wrong config name ("BuilderConfig 'x' not found. Available: [...]"), no data files.
            raise CotforgeError(f"{hub.spec()}: {_first_line(err)}") from None
    if hub.split is not None and hub.split not in splits:
        config = f" in config {hub.config!r}" if hub.config else ""
        raise CotforgeError(f"{hub.spec()}: no split {hub.split!r}{config} (splits: {', '.join(splits)})")
    return splits


def read_hub_rows(spec: str) -> Iterator:
    """Raw rows of a Hub input, streamed; row numbers count from 1 within each split."""
    from cotforge.io.readers import RawRow

    hub = HubInput.parse(spec)
    commit = resolve_commit(hub)
    splits = _open_splits(hub, commit)
    names = [hub.split] if hub.split else list(splits)
    for name in names:
        label = hub.label(commit, name)
        rows = iter(splits[name])
        number = 0
        while True:
            with hub_errors(label, hub):
                data = next(rows, None)
            if data is None:
                break
            number += 1
            if len(names) > 1:  # rows of several splits say which one they came from
                data.setdefault("split", name)
            yield RawRow(label, number, data)
