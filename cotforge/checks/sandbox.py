"""Run untrusted Python in a subprocess that cannot reach the network, fork without bound or see secrets.

Each run gets: a fresh 0700 temp dir as cwd (and, in its own mount namespace, as /tmp, /var/tmp and
/dev/shm, so stray writes land there); an empty environment; a network namespace with nothing in
it (`unshare(CLONE_NEWNET)`; even loopback is down); rlimits on CPU time, address space, file size,
open files and processes; when we are root, a throwaway uid of its own (RLIMIT_NPROC is not enforced
for root, and the uid lets us kill every process the run left behind, even ones that escaped its
process group). Past the wall limit the whole group and that uid are SIGKILLed.

Not a defence against a solution that games the verifier from inside its own process (introspecting
the harness); it protects the host and the other rows.
"""

from __future__ import annotations

import ctypes
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
_SCRATCH_MOUNTS = ("/var/tmp", "/dev/shm", "/tmp")  # /tmp last: the workdir lives there
_UID_BASE = 1_000_000  # uid = base + worker pid: unique among concurrent workers, owns no files


@dataclass
class RunResult:
    returncode: int | None  # None: killed at the wall limit
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _unshare(flags: int) -> None:
    if hasattr(os, "unshare"):  # Python 3.12+
        os.unshare(flags)
        return
    if _libc().unshare(flags) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _mount(source: str, target: str, flags: int) -> None:
    if _libc().mount(source.encode(), target.encode(), None, flags, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


@lru_cache(maxsize=1)
def isolation() -> tuple[bool, str]:
    """(network namespace available, how): probed once per process in a throwaway child."""
    root = os.geteuid() == 0
    flags = CLONE_NEWNET | CLONE_NEWNS if root else CLONE_NEWUSER | CLONE_NEWNET
    pid = os.fork()
    if pid == 0:  # child: try, report through the exit code, never return
        try:
            _unshare(flags)
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return True, "root: network+mount namespaces, own uid" if root else "user+network namespaces"
    return False, "unshare(CLONE_NEWNET) not permitted here (no CAP_SYS_ADMIN, user namespaces off)"


def _world_executable(path: str) -> bool:
    """True when any uid may run `path`: the file and every folder above it are executable by others."""
    path = os.path.realpath(path)
    parts = [path] + [os.path.dirname(path)]
    while parts[-1] != os.path.dirname(parts[-1]):
        parts.append(os.path.dirname(parts[-1]))
    try:
        return all(os.stat(p).st_mode & 0o001 for p in parts)
    except OSError:
        return False


@lru_cache(maxsize=1)
def interpreter(dropped_uid: bool) -> str:
    """Our Python when the sandbox uid can reach it (a venv under /root cannot), else the system's."""
    if not dropped_uid or _world_executable(sys.executable):
        return sys.executable
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
        if _world_executable(candidate):
            return candidate
    return sys.executable


def _sandbox_uid() -> int | None:
    return _UID_BASE + os.getpid() if os.geteuid() == 0 else None


def _preexec(workdir: str, uid: int | None, cpu_s: int, memory_bytes: int, nproc: int, isolate: bool):
    def setup() -> None:  # runs in the child between fork and exec
        os.setsid()  # own process group, killed as a whole
        if isolate and uid is not None:
            _unshare(CLONE_NEWNET | CLONE_NEWNS)
            _mount("none", "/", MS_REC | MS_PRIVATE)
            for target in _SCRATCH_MOUNTS:
                if os.path.isdir(target):
                    _mount(workdir, target, MS_BIND)
            os.chdir("/tmp")
        elif isolate:
            _unshare(CLONE_NEWUSER | CLONE_NEWNET)
        for limit, value in ((resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_AS, memory_bytes),
                             (resource.RLIMIT_FSIZE, 64 * 1024**2), (resource.RLIMIT_NOFILE, 64),
                             (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, nproc)):
            resource.setrlimit(limit, (value, value))
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return setup


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid` (kill(-1) from a child that took that uid)."""
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            try:
                os.setgid(uid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
            os._exit(0)
        os.waitpid(pid, 0)


def run_python(source: str, stdin: str = "", time_limit_s: float = 5.0, memory_mb: int = 512,
               max_processes: int = 16, require_isolation: bool = True,
               env: dict | None = None) -> RunResult:
    """Run `source` with `stdin`; raises RuntimeError when isolation is required and unavailable."""
    isolate, how = isolation()
    if require_isolation and not isolate:
        raise RuntimeError(f"sandbox: {how}; set require_isolation: false to run without it")
    uid = _sandbox_uid()
    workdir = tempfile.mkdtemp(prefix="cotforge-sandbox-")
    try:
        with open(os.path.join(workdir, "main.py"), "w") as handle:
            handle.write(source)
        with open(os.path.join(workdir, "stdin.txt"), "w") as handle:
            handle.write(stdin)
        if uid is not None:
            for path in (workdir, *(os.path.join(workdir, f) for f in os.listdir(workdir))):
                os.chown(path, uid, uid)
        os.chmod(workdir, 0o700)
        return _run(workdir, uid, time_limit_s, memory_mb, max_processes, isolate, env or {})
    finally:
        if uid is not None:
            _kill_uid(uid)
        shutil.rmtree(workdir, ignore_errors=True)


def _run(workdir: str, uid: int | None, time_limit_s: float, memory_mb: int, max_processes: int,
         isolate: bool, extra_env: dict) -> RunResult:
    # An empty environment: nothing of ours (tokens, keys) is inherited.
    scratch = "/tmp" if isolate and uid is not None else workdir  # what the workdir is called inside
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8", "HOME": scratch,
           "TMPDIR": scratch, **extra_env}
    out_path, err_path = os.path.join(workdir, "stdout.txt"), os.path.join(workdir, "stderr.txt")
    started = time.monotonic()
    with open(os.path.join(workdir, "stdin.txt")) as stdin, open(out_path, "w") as out, \
            open(err_path, "w") as err:
        setup = _preexec(workdir, uid, max(1, math.ceil(time_limit_s)), memory_mb * 1024**2, max_processes, isolate)
        # preexec_fn is the only hook between fork and exec; check workers are single-threaded
        process = subprocess.Popen(
            [interpreter(uid is not None), "-I", "-B", "main.py"], stdin=stdin, stdout=out, stderr=err,
            cwd=workdir, env=env, close_fds=True, preexec_fn=setup)  # noqa: PLW1509
        try:
            returncode: int | None = process.wait(timeout=time_limit_s + 1)  # sleepers; CPU hogs hit RLIMIT_CPU
            timed_out = False
        except subprocess.TimeoutExpired:
            returncode, timed_out = None, True
        try:
            os.killpg(process.pid, signal.SIGKILL)  # its children too, finished or not
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()
    seconds = time.monotonic() - started
    if returncode is not None and returncode in (-signal.SIGXCPU, -signal.SIGKILL) and seconds >= time_limit_s:
        timed_out = True
    return RunResult(returncode, _read(out_path), _read(err_path), seconds, timed_out)


def _read(path: str, limit: int = 1024**2) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""
