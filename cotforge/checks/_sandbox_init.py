"""The sandbox's launcher: `python -I -S _sandbox_init.py CONFIG_JSON`, started by sandbox.py.

Standard library only and no cotforge import: it runs before isolation, and it must not depend on
the venv. Three processes, each tied to the life of the one above it:

  launcher  PR_SET_PDEATHSIG: dies when the check worker dies (kill -9, OOM killer, whole group).
            unshare(user [non-root], mount, network, PID, IPC, UTS); builds a root of its own
            (tmpfs; /usr, /lib..., the interpreter's prefix read-only; the run's folder as /tmp)
            and pivots into it, so the user's files are not there to be read or written.
  init      PID 1 of the new PID namespace, also PR_SET_PDEATHSIG. When PID 1 exits the kernel
            kills everything in the namespace, so a double-forked, setsid'ed `sleep 300` dies too.
  program   rlimits, no_new_privs, (root) a throwaway uid, then exec.

The program's exit status travels back to the launcher over a pipe; the launcher exits with it (or
kills itself with the same signal), so the caller sees what the program did.
"""

import ctypes
import json
import os
import platform
import resource
import select
import signal
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
INNER_UID = 1000  # the program's uid inside a user namespace: not 0, so exec drops every capability
SETUP_FAILED = 125  # exit code when the sandbox itself could not be built (the reason is on stderr)
# (statvfs flag, mount flag) pairs a read-only remount must keep: the kernel refuses to drop them
_KEPT_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
               (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME))
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache",
                "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime")
DEVICES = ("null", "zero", "full", "random", "urandom")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source, target, fstype, flags, data=None) -> None:
    encode = (lambda s: s.encode() if s is not None else None)
    _check(_libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)),
           f"mount {target}")


def _tie_to_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies; if it already died, leave now."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
    if parent_pid and os.getppid() != parent_pid:
        os._exit(SETUP_FAILED)


def _user_process_count(uid: int) -> int:
    """Processes of `uid` now: RLIMIT_NPROC counts them all, not only the sandbox's."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                pass
    return count


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _bind_read_only(source: str, target: str) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(source, target, None, MS_BIND | MS_REC)
    flags = os.statvfs(source).f_flag
    kept = sum(mount_flag for stat_flag, mount_flag in _KEPT_FLAGS if flags & stat_flag)
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)


def _build_root(cfg: dict) -> None:
    """A tmpfs root holding only system files (read-only), a few devices and the run folder as /tmp."""
    stage = cfg["stage"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks back to the host
    _mount("tmpfs", stage, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m")
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            os.makedirs(os.path.dirname(stage + path), exist_ok=True)
            os.symlink(os.readlink(path), stage + path)
        elif os.path.exists(path):
            _bind_read_only(path, stage + path)
    for prefix in cfg["read_only"]:  # the interpreter's prefix when it is not under /usr
        if os.path.exists(prefix) and not os.path.exists(stage + prefix):
            _bind_read_only(prefix, stage + prefix)
    os.makedirs(stage + "/dev/shm")
    for device in DEVICES:
        open(f"{stage}/dev/{device}", "a").close()
        _mount(f"/dev/{device}", f"{stage}/dev/{device}", None, MS_BIND)
    _mount("tmpfs", stage + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m")
    os.makedirs(stage + "/tmp")
    _mount(cfg["box"], stage + "/tmp", None, MS_BIND)
    os.chdir(stage)
    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(0, f"pivot_root: unknown syscall number on {platform.machine()}")
    _check(_libc.syscall(number, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")  # the host's tree is gone from here
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _isolate(cfg: dict) -> None:
    root = os.geteuid() == 0
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    uid, gid = os.getuid(), os.getgid()
    _check(_libc.unshare(flags if root else flags | CLONE_NEWUSER), "unshare")
    if not root:  # map our uid only; inside it is INNER_UID, outside it stays ours
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{INNER_UID} {uid} 1")
        _write("/proc/self/gid_map", f"{INNER_UID} {gid} 1")
    _build_root(cfg)


def _exec_program(cfg: dict, nproc: int) -> None:
    os.setsid()
    limits = cfg["limits"]
    for limit, value in ((resource.RLIMIT_CPU, limits["cpu_s"]), (resource.RLIMIT_AS, limits["memory_bytes"]),
                         (resource.RLIMIT_FSIZE, 64 * 1024**2), (resource.RLIMIT_NOFILE, 64),
                         (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, nproc)):
        resource.setrlimit(limit, (value, value))
    if cfg["uid"] is not None:  # root: a uid of its own, so RLIMIT_NPROC holds and no file is ours
        os.setgroups([])
        os.setgid(cfg["uid"])
        os.setuid(cfg["uid"])
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    os.chdir(cfg["cwd"])
    os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])


def _init(cfg: dict, alive_read: int, status_write: int, nproc: int) -> None:
    """PID 1: start the program, reap every orphan, report the program's status, then exit (killing the rest)."""
    _tie_to_parent(0)
    if select.select([alive_read], [], [], 0)[0]:  # the launcher died before PDEATHSIG was set
        os._exit(SETUP_FAILED)
    program = os.fork()
    if program == 0:
        try:
            _exec_program(cfg, nproc)
        except BaseException as err:  # noqa: BLE001
            print(f"sandbox: {err}", file=sys.stderr, flush=True)
        os._exit(SETUP_FAILED)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the program cannot stop its init
        signal.signal(number, signal.SIG_IGN)
    if cfg.get("report_fd") is not None:
        os.close(cfg["report_fd"])  # only the program holds the report channel now
    while True:
        pid, status = os.wait()
        if pid == program:
            os.write(status_write, str(os.waitstatus_to_exitcode(status)).encode())
            os._exit(0)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _tie_to_parent(cfg["parent"])
    nproc = cfg["limits"]["nproc"]
    try:
        if cfg["uid"] is None:  # our own uid: the limit counts every process we already run
            nproc += _user_process_count(os.getuid())
        if cfg["isolate"]:
            _isolate(cfg)
        else:
            os.chdir(cfg["box"])
    except OSError as err:
        print(f"sandbox: {err}", file=sys.stderr, flush=True)
        os._exit(SETUP_FAILED)
    alive_read, alive_write = os.pipe()
    status_read, status_write = os.pipe()
    init = os.fork()
    if init == 0:
        os.close(alive_write)
        os.close(status_read)
        _init(cfg, alive_read, status_write, nproc)
    os.close(alive_read)
    os.close(status_write)
    if cfg.get("report_fd") is not None:
        os.close(cfg["report_fd"])
    os.waitpid(init, 0)
    status = os.read(status_read, 32)
    code = int(status) if status else -signal.SIGKILL
    if code < 0:  # die the way the program died, so the caller sees its signal
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


if __name__ == "__main__":
    main()
