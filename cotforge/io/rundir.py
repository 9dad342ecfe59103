"""The run folder: the unit of resume.

```
RUN/manifest.json                 version, command, config + hash, input fingerprints, counts
RUN/samples/part-000000.parquet   one shard per committed input chunk / generation batch
RUN/prompts/part-*.parquet        prompts (generate) and per-prompt stats
RUN/quarantine/part-*.parquet     bad input rows with file, line, reason and raw bytes
```
Shards are named by the chunk they cover, so a rerun skips committed chunks and rewrites a chunk
whose shard never landed; every file is published with an atomic rename.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Self

import pyarrow as pa
import pyarrow.parquet as pq

from cotforge import __version__
from cotforge.io.atomic import atomic_write_bytes, atomic_write_table, check_writable, remove_stale_temps
from cotforge.errors import CotforgeError
from cotforge.io.hub import hub_fingerprint, is_hub
from cotforge.io.lock import FolderLock, is_lock_file


class RunConfigMismatch(CotforgeError):
    pass


def fingerprint(path: str | Path) -> dict:
    """Content fingerprint of an input file or folder (blake2b over every file's bytes); of a Hub
    dataset, its resolved commit hash (with the path, config and split read of it)."""
    if is_hub(path):
        return hub_fingerprint(path)
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()
                                                and not p.name.startswith("."))
    digest = hashlib.blake2b(digest_size=16)
    size = 0
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
                size += len(chunk)
    return {"path": str(path), "bytes": size, "blake2b": digest.hexdigest()}


def config_hash(command: str, config: dict, inputs: list[dict]) -> str:
    payload = json.dumps({"command": command, "config": config, "inputs": [i["blake2b"] for i in inputs]},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class RunDir:
    """A run folder opened for writing (see `open`) or reading (the constructor)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock: FolderLock | None = None

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def manifest(self) -> dict:
        if not self.path.exists():
            raise CotforgeError(f"{self.path}: no such run folder")
        if not self.path.is_dir():
            raise CotforgeError(f"{self.path}: is a file; give the run folder that generate, filter or mix wrote "
                                f"(to judge a samples file, run `cotforge filter` on it first)")
        try:
            return json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            raise CotforgeError(f"{self.path}: not a cotforge run folder (no manifest.json)") from None
        except (ValueError, UnicodeDecodeError) as err:
            raise CotforgeError(f"{self.manifest_path}: damaged manifest ({err}); rerun the command that "
                                f"wrote the run with --overwrite") from None

    def unfinished(self) -> str | None:
        """The manifest's status when the run did not finish (killed, interrupted), else None."""
        status = self.manifest().get("status")
        return None if status == "complete" else str(status)

    def require_finished(self, use: str, allow_partial: bool) -> bool:
        """Refuse an unfinished run as a source unless `allow_partial`; True when it is partial."""
        status = self.unfinished()
        if status is None:
            return False
        if not allow_partial:
            command = self.manifest().get("command", "cotforge")
            raise CotforgeError(f"{self.path}: unfinished {command} run (status {status}); rerun its command to "
                                f"finish it, or pass --allow-partial to {use} the "
                                f"{self.count_rows('samples')} rows committed so far")
        return True

    def partial_marks(self) -> list[str]:
        """The partial marks this run carries: notes that it was made from unfinished runs taken with
        --allow-partial (kept in its manifest; export puts them on the data card)."""
        value = self.manifest().get("partial") or []
        return [value] if isinstance(value, str) else [str(note) for note in value]

    def source_marks(self, use: str, allow_partial: bool) -> list[str]:
        """This run read as the source of `cotforge {use}`: refused while unfinished unless `allow_partial`;
        returns the marks the output must carry (this run's own unfinished state, then what it carries)."""
        marks = []
        if self.require_finished(use, allow_partial):
            manifest = self.manifest()
            marks.append(f"`{self.path.name}` was an unfinished {manifest.get('command')} run (status "
                         f"{manifest.get('status')}) when `cotforge {use}` read it with --allow-partial: only "
                         f"the {self.count_rows('samples')} rows it had committed by then.")
        return marks + [mark for mark in self.partial_marks() if mark not in marks]

    @classmethod
    def open(cls, path: str | Path, command: str, config: dict, inputs: list[str | Path],
             argv: list[str] | None = None, overwrite: bool = False) -> RunDir:
        """Create a run folder, or reopen it to resume when the command and config match.

        The folder is locked for this process until `close()` (or exit): a second writer is refused.
        """
        run = cls(path)
        fingerprints = [fingerprint(p) for p in inputs]
        wanted = config_hash(command, config, fingerprints)
        run.lock = FolderLock.acquire(run.path, command)
        try:
            run._prepare(command, config, fingerprints, wanted, argv, overwrite)
        except BaseException:
            run.close()
            raise
        return run

    def _prepare(self, command: str, config: dict, fingerprints: list[dict], wanted: str,
                 argv: list[str] | None, overwrite: bool) -> None:
        run = self
        if run.manifest_path.exists():
            old = run.manifest()
            if old.get("config_hash") != wanted and not overwrite:
                change = _harmless_change(run, old, command, config, fingerprints)
                if change == "restart":
                    overwrite = True
                elif change == "resume":
                    old = run.update_manifest(config=config, config_hash=wanted, argv=argv or [])
            if old.get("config_hash") != wanted and not overwrite:
                raise RunConfigMismatch(
                    f"{run.path}: holds a '{old.get('command')}' run with another configuration "
                    f"({_describe_change(old, command, config, fingerprints)}); "
                    f"use another --out, or --overwrite to discard it")
            if old.get("config_hash") != wanted or overwrite:
                run._refuse_to_erase_reviews()
                run._clear()
        elif run.path.exists() and any(not _is_ours(p) for p in run.path.iterdir()):
            if not overwrite:
                raise CotforgeError(f"{run.path}: folder exists and is not a cotforge run; "
                                    f"use --overwrite to replace its contents")
            run._clear()
        run.path.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run.path)
        check_writable(run.path)
        if not run.manifest_path.exists():
            run.write_manifest({
                "cotforge_version": __version__, "command": command, "argv": argv or [],
                "config": config, "config_hash": wanted, "inputs": fingerprints,
                "created": _now(), "status": "running", "counts": {},
            })

    def close(self) -> None:
        """Release the writer's lock (the run's files stay as they are)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _refuse_to_erase_reviews(self) -> None:
        """Decisions made by hand (`cotforge view`) are not ours to discard with the data they judged."""
        reviews = self.shards("reviews")
        if reviews:
            raise CotforgeError(f"{self.path}: holds {len(reviews)} review decisions made by hand (cotforge view, "
                                f"in {self.path / 'reviews'}); --overwrite would erase them: move that folder "
                                f"aside to discard them, or use another --out")

    def _clear(self) -> None:
        """Empty the folder: shards, round plans, work files and manifest alike (manifest last)."""
        for target in sorted(self.path.iterdir(), key=lambda p: p.name == "manifest.json"):
            if is_lock_file(target):
                continue
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()

    def write_manifest(self, manifest: dict) -> None:
        manifest["updated"] = _now()
        atomic_write_bytes(self.manifest_path, json.dumps(manifest, indent=2, default=str).encode())

    def update_manifest(self, **fields) -> dict:
        manifest = self.manifest()
        manifest.update(fields)
        self.write_manifest(manifest)
        return manifest

    # shards
    def shard_path(self, table: str, index: int) -> Path:
        return self.path / table / f"part-{index:06d}.parquet"

    def has_shard(self, table: str, index: int) -> bool:
        return self.shard_path(table, index).exists()

    def shards(self, table: str) -> list[Path]:
        return sorted((self.path / table).glob("part-*.parquet"))

    def next_shard_index(self, table: str) -> int:
        shards = self.shards(table)
        return int(shards[-1].stem.split("-")[1]) + 1 if shards else 0

    def write_shard(self, table: str, index: int, data: pa.Table) -> Path:
        path = self.shard_path(table, index)
        atomic_write_table(path, data)
        return path

    def read_table(self, table: str, columns: list[str] | None = None) -> pa.Table | None:
        shards = self.shards(table)
        if not shards:
            return None
        return pa.concat_tables([pq.read_table(s, columns=columns) for s in shards], promote_options="default")

    def count_rows(self, table: str) -> int:
        return sum(pq.ParquetFile(s).metadata.num_rows for s in self.shards(table))


def source_marks(paths: list[str | Path], use: str, allow_partial: bool) -> list[str]:
    """The partial marks an output of `cotforge {use}` carries from its inputs; an input that is an
    unfinished run folder is refused (one line) unless `allow_partial`. Every stage that reads runs
    (filter, rewrite, mix, eval, select, export) goes through here, so none is a back door for a run
    that is still being written or was killed."""
    marks: list[str] = []
    for path in paths:
        if (Path(path) / "manifest.json").is_file():
            marks += [mark for mark in RunDir(path).source_marks(use, allow_partial) if mark not in marks]
    return marks


def _harmless_change(run: RunDir, old: dict, command: str, config: dict, fingerprints: list[dict]) -> str | None:
    """'restart' or 'resume' when a run with another configuration can be taken over without
    --overwrite because nothing is lost: it committed no rows (e.g. refused by --bad-rows fail before
    its first shard): restart; only --bad-rows changed from fail to quarantine (rows committed under
    `fail` had no bad rows, so they stand): resume."""
    if not any(run.path.glob("*/part-*.parquet")):
        return "restart"
    old_config = dict(old.get("config") or {})
    new_config = dict(config)
    if (old.get("command") == command and old_config.pop("bad_rows", None) == "fail"
            and new_config.pop("bad_rows", None) == "quarantine" and _same(old_config, new_config)
            and [i.get("blake2b") for i in old.get("inputs", [])] == [i["blake2b"] for i in fingerprints]):
        return "resume"
    return None


def _same(left: dict, right: dict) -> bool:
    def canonical(value: dict) -> str:
        return json.dumps(value, sort_keys=True, default=str)
    return canonical(left) == canonical(right)


def _is_ours(path: Path) -> bool:
    """Our lock file, or a temp file a killed writer left (e.g. killed during the first manifest write)."""
    return is_lock_file(path) or (path.is_file() and path.name.startswith(".") and path.name.endswith(".tmp"))


def _describe_change(old: dict, command: str, config: dict, fingerprints: list[dict]) -> str:
    if old.get("command") != command:
        return f"command {old.get('command')!r} -> {command!r}"
    changed = sorted(k for k in set(old.get("config", {})) | set(config)
                     if old.get("config", {}).get(k) != config.get(k))
    if changed:
        return "changed: " + ", ".join(f"{k} {old['config'].get(k)!r} -> {config.get(k)!r}" for k in changed[:4])
    old_inputs = {i.get("path"): i for i in old.get("inputs", [])}
    for new in fingerprints:
        before = old_inputs.get(new["path"])
        if before and before.get("commit") and before.get("blake2b") != new["blake2b"]:
            return (f"input {new['path']} moved from commit {before['commit'][:12]} to {new['commit'][:12]}; "
                    f"pin the old one with @{before['commit']} to resume")
    return "input files changed"
