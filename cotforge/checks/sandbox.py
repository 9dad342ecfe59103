"""Run untrusted Python where it cannot touch the user's files, reach the network or outlive cotforge.

Each run gets a folder of its own (`cotforge-sandbox-*` in the temp dir) and a launcher
(`_sandbox_init.py`) that builds, root or not, the same box:
- its own user (non-root), mount, network, PID, IPC and UTS namespaces;
- a root filesystem of its own: a tmpfs holding /usr, /lib..., a few /etc files and the Python
  prefix read-only, /dev/null & co, and the run's folder as /tmp (the only writable place). The
  user's home, the repository, the venv and /proc are not there at all;
- an empty environment; no network (even loopback is down);
- rlimits on CPU time, address space, file size, open files and processes; no_new_privs; as root a
  throwaway uid (so RLIMIT_NPROC holds), else our uid mapped to an unprivileged one (no capabilities);
- a life tied to the calling worker: parent-death signals down the chain and a PID namespace whose
  init takes everything with it, so killing the worker, or the whole process group with SIGKILL,
  leaves nothing running (detached, double-forked programs included). Past the wall limit the
  launcher is SIGKILLed, with the same effect. Folders left by killed runs are removed when a later
  run starts (`clean_stale`).
Where these namespaces are not permitted, `isolation()` says why and runs refuse unless the caller
passes `require_isolation=False`.

`report=True` gives the program a pipe (its fd number in `COTFORGE_REPORT_FD`) whose content comes
back as `RunResult.report`: a channel no file in the box can stand in for (see code.py's harness).
"""

from __future__ import annotations

import fcntl
import glob
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache

_UID_BASE = 1_000_000  # as root: uid = base + worker pid, unique among concurrent workers, owns no files
_LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_init.py")
_FOLDER_PREFIX = "cotforge-sandbox-"
_UNLOCKED_GRACE_S = 60  # a folder without a lock file: an older layout (removed once it is this old)
_REPORT_LIMIT = 1024**2
SETUP_FAILED = 125  # the launcher's exit code when the box could not be built


@dataclass
class RunResult:
    returncode: int | None  # None: killed at the wall limit
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool
    report: str = ""  # what the program wrote to its report channel (report=True)


def interpreter() -> str:
    """The real interpreter behind our venv: the box holds its prefix, not the venv."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _world_executable(path: str) -> bool:
    """True when any uid may run `path`: the file and every folder above it are executable by others."""
    path = os.path.realpath(path)
    parts = [path, os.path.dirname(path)]
    while parts[-1] != os.path.dirname(parts[-1]):
        parts.append(os.path.dirname(parts[-1]))
    try:
        return all(os.stat(p).st_mode & 0o001 for p in parts)
    except OSError:
        return False


def _unconfined_interpreter() -> str:
    """Without a box of its own the throwaway uid must reach the interpreter on the host as it is."""
    if _world_executable(interpreter()):
        return interpreter()
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
        if _world_executable(candidate):
            return candidate
    return interpreter()


@lru_cache(maxsize=1)
def isolation() -> tuple[bool, str]:
    """(the box can be built here, how or why not): probed once per process by building one."""
    result = _launch({}, ["-c", "pass"], "", isolate=True, time_limit_s=10, memory_mb=512, nproc=4, env={},
                     report=False)
    if result.returncode == 0:
        how = "root: mount+network+PID namespaces, own root filesystem, own uid" if os.geteuid() == 0 else \
            "user+mount+network+PID namespaces, own root filesystem"
        return True, how
    last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
    return False, (f"cannot build the sandbox here ({last}): unprivileged user namespaces are off (enable them: "
                   "sysctl kernel.unprivileged_userns_clone=1, or on Ubuntu 24.04+ "
                   "kernel.apparmor_restrict_unprivileged_userns=0) or mounts are not permitted (run as root)")


def clean_stale(tempdir: str | None = None) -> int:
    """Remove sandbox folders whose run is gone (its worker was killed); returns how many."""
    removed = 0
    for folder in glob.glob(os.path.join(tempdir or tempfile.gettempdir(), _FOLDER_PREFIX + "*")):
        lock_path = os.path.join(folder, "lock")
        try:
            if not os.path.exists(lock_path):
                if time.time() - os.stat(folder).st_mtime < _UNLOCKED_GRACE_S:
                    continue
                shutil.rmtree(folder)
                removed += 1
                continue
            with open(lock_path) as lock:  # a live run holds an exclusive flock until it is done
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(folder)
                removed += 1
        except OSError:  # in use, or someone else's
            continue
    return removed


@lru_cache(maxsize=1)
def _clean_once() -> int:
    return clean_stale()


def run_python(source: str, stdin: str = "", time_limit_s: float = 5.0, memory_mb: int = 512,
               max_processes: int = 16, require_isolation: bool = True,
               env: dict | None = None) -> RunResult:
    """Run `source` with `stdin`; raises RuntimeError when isolation is required and unavailable."""
    return run_program({"main.py": source}, ["main.py"], stdin, time_limit_s=time_limit_s, memory_mb=memory_mb,
                       max_processes=max_processes, require_isolation=require_isolation, env=env)


def run_program(files: dict[str, str], args: list[str], stdin: str = "", *, time_limit_s: float = 5.0,
                memory_mb: int = 512, max_processes: int = 16, require_isolation: bool = True,
                env: dict | None = None, report: bool = False) -> RunResult:
    """Write `files` into the box and run `python -I -B *args` there (cwd: the box)."""
    isolate, how = isolation()
    if require_isolation and not isolate:
        raise RuntimeError(f"sandbox: {how}; set require_isolation: false to run without it")
    _clean_once()
    return _launch(files, args, stdin, isolate=isolate, time_limit_s=time_limit_s, memory_mb=memory_mb,
                   nproc=max_processes, env=env or {}, report=report)


def _launch(files: dict[str, str], args: list[str], stdin: str, *, isolate: bool, time_limit_s: float,
            memory_mb: int, nproc: int, env: dict, report: bool) -> RunResult:
    # The folder takes its public name only once its lock is held, so clean_stale never sees it unlocked.
    staging = tempfile.mkdtemp(prefix="." + _FOLDER_PREFIX)
    lock = open(os.path.join(staging, "lock"), "w")  # noqa: SIM115  held until the folder is gone
    fcntl.flock(lock, fcntl.LOCK_EX)
    folder = os.path.join(os.path.dirname(staging), os.path.basename(staging)[1:])
    os.rename(staging, folder)
    try:
        box, stage = os.path.join(folder, "box"), os.path.join(folder, "root")
        os.mkdir(box, 0o700)
        os.mkdir(stage)
        for name, text in files.items():
            with open(os.path.join(box, name), "w") as handle:
                handle.write(text)
        uid = _UID_BASE + os.getpid() if os.geteuid() == 0 else None
        if uid is not None:
            for path in (box, *(os.path.join(box, f) for f in os.listdir(box))):
                os.chown(path, uid, uid)
        with open(os.path.join(folder, "stdin.txt"), "w") as handle:
            handle.write(stdin)
        return _run(folder, box, stage, uid, args, isolate, time_limit_s, memory_mb, nproc, env, report)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        lock.close()


def _run(folder: str, box: str, stage: str, uid: int | None, args: list[str], isolate: bool,
         time_limit_s: float, memory_mb: int, nproc: int, extra_env: dict, report: bool) -> RunResult:
    inside = "/tmp" if isolate else box  # what the box is called from inside
    python = interpreter() if isolate or uid is None else _unconfined_interpreter()
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8", "HOME": inside,
           "TMPDIR": inside, **extra_env}
    report_read = report_write = None
    if report:
        report_read, report_write = os.pipe()
        env["COTFORGE_REPORT_FD"] = str(report_write)
    prefixes = sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)})
    config = {"parent": os.getpid(), "isolate": isolate, "uid": uid, "box": box, "stage": stage, "cwd": inside,
              "read_only": prefixes, "argv": [python, "-I", "-B", *args], "env": env, "report_fd": report_write,
              "limits": {"cpu_s": max(1, math.ceil(time_limit_s)), "memory_bytes": memory_mb * 1024**2,
                         "nproc": nproc}}
    out_path, err_path = os.path.join(folder, "stdout.txt"), os.path.join(folder, "stderr.txt")
    started = time.monotonic()
    try:
        with open(os.path.join(folder, "stdin.txt")) as stdin, open(out_path, "w") as out, \
                open(err_path, "w") as err:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", _LAUNCHER, json.dumps(config)], stdin=stdin, stdout=out,
                stderr=err, env={}, close_fds=True, pass_fds=(report_write,) if report else (),
                start_new_session=True)
            if report_write is not None:
                os.close(report_write)
                report_write = None
            returncode, timed_out = _wait(process, time_limit_s + 1)  # sleepers; CPU hogs hit RLIMIT_CPU
        seconds = time.monotonic() - started
        if returncode in (-signal.SIGXCPU, -signal.SIGKILL) and seconds >= time_limit_s:
            timed_out = True
        return RunResult(returncode, _read(out_path), _read(err_path), seconds, timed_out,
                         _drain(report_read) if report_read is not None else "")
    finally:
        for fd in (report_read, report_write):
            if fd is not None:
                os.close(fd)


def _wait(process: subprocess.Popen, wall_s: float) -> tuple[int | None, bool]:
    try:
        return process.wait(timeout=wall_s), False
    except subprocess.TimeoutExpired:
        try:  # the launcher's death takes its init, and so the whole PID namespace, with it
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()
        return None, True


def _drain(fd: int) -> str:
    """What the program wrote to its report channel; never blocks (its writers are all dead)."""
    os.set_blocking(fd, False)
    chunks, size = [], 0
    while size < _REPORT_LIMIT:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def _read(path: str, limit: int = 1024**2) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""
