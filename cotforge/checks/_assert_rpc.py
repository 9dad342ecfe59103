"""Assert tests whose verdict the code under test cannot forge. Copied into the sandbox; stdlib only.

Two processes inside the box:
  harness   `python -I -B _assert_rpc.py harness`: reads the test (then deletes its file), makes itself
            non-dumpable (no ptrace, no /proc/PID/mem from the same uid), starts the solution, runs the
            setup and the assert with the solution's names bound to proxies, and writes the verdict to
            the report pipe that only it holds (COTFORGE_REPORT_FD, see sandbox.py).
  solution  `python -I -B _assert_rpc.py solution`, a fresh interpreter (the test is in no memory it
            can read): runs the solution's code and answers calls, attribute and item lookups over two
            pipes.
Values cross as plain data (None, bool, int, float, complex, str, bytes, list, tuple, set, dict),
rebuilt by the harness as genuine builtins, so a returned object cannot claim to equal anything; any
other object stays in the solution and crosses as a handle, equal only to itself. Lists and dicts
passed to the solution come back with its changes (in-place tests). Objects the test builds from
its own classes cannot be passed to the solution: such a test counts as an error.
"""

import builtins
import json
import os
import subprocess
import sys

_LINE_LIMIT = 16 * 1024**2
PR_SET_DUMPABLE = 4


# --- plain data over the wire -------------------------------------------------------------------
def encode(value, handles=None):
    """A JSON-able tree; objects that are not plain data become handles (solution side only)."""
    kind = type(value)
    if value is None:
        return ["n"]
    if kind is bool:
        return ["b", value]
    if kind is int:
        return ["i", str(value)]
    if kind is float:
        return ["f", repr(value)]
    if kind is complex:
        return ["c", repr(value.real), repr(value.imag)]
    if kind is str:
        return ["s", value]
    if kind is bytes:
        return ["y", value.hex()]
    if kind in (list, tuple, set, frozenset):
        tag = {list: "l", tuple: "t", set: "S", frozenset: "F"}[kind]
        return [tag, [encode(item, handles) for item in value]]
    if kind is dict:
        return ["d", [[encode(k, handles), encode(v, handles)] for k, v in value.items()]]
    if isinstance(value, Proxy):
        return ["h", object.__getattribute__(value, "_handle")]
    if handles is None:
        raise TypeError(f"a {kind.__name__} built by the test cannot be passed to the solution")
    handles.append(value)
    return ["h", len(handles) - 1]


def decode(tree, make_handle):
    tag = tree[0]
    scalars = {"n": lambda: None, "b": lambda: bool(tree[1]), "i": lambda: int(tree[1]),
               "f": lambda: float(tree[1]), "c": lambda: complex(float(tree[1]), float(tree[2])),
               "s": lambda: str(tree[1]), "y": lambda: bytes.fromhex(tree[1]), "h": lambda: make_handle(int(tree[1]))}
    if tag in scalars:
        return scalars[tag]()
    if tag == "d":
        return {decode(k, make_handle): decode(v, make_handle) for k, v in tree[1]}
    items = [decode(item, make_handle) for item in tree[1]]
    return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)


class Channel:
    def __init__(self, read_fd: int, write_fd: int):
        self.reader = os.fdopen(read_fd, "rb")
        self.writer = os.fdopen(write_fd, "wb")

    def send(self, message: dict) -> None:
        self.writer.write(json.dumps(message).encode() + b"\n")
        self.writer.flush()

    def receive(self) -> dict:
        line = self.reader.readline(_LINE_LIMIT)
        if not line:
            raise EOFError
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError("malformed message")  # noqa: TRY004  the protocol broke
        return message


# --- the harness side ---------------------------------------------------------------------------
class SolutionGone(Exception):
    """The solution's process ended or broke the protocol: the test did not run to its end."""


class Proxy:
    """An object living in the solution's process."""

    __slots__ = ("_handle", "_remote")

    def __init__(self, handle, remote):
        object.__setattr__(self, "_handle", handle)
        object.__setattr__(self, "_remote", remote)

    def _ask(self, op, **fields):
        return object.__getattribute__(self, "_remote").ask(op, object.__getattribute__(self, "_handle"), **fields)

    def __call__(self, *args, **kwargs):
        return self._ask("call", args=list(args), kwargs=kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name=name)

    def __getitem__(self, key):
        return self._ask("getitem", key=key)

    def __len__(self):
        return self._ask("len")

    def __iter__(self):
        return iter(self._ask("list"))

    def __bool__(self):
        return bool(self._ask("bool"))

    def __eq__(self, other):  # never delegated: the solution does not decide what equals what
        return isinstance(other, Proxy) and other._handle == self._handle

    def __hash__(self):
        return hash(object.__getattribute__(self, "_handle"))

    def __repr__(self):
        return f"<solution object {object.__getattribute__(self, '_handle')}>"


class Remote:
    def __init__(self, channel: Channel):
        self.channel = channel

    def handle(self, number: int) -> Proxy:
        return Proxy(number, self)

    def ask(self, op, handle, args=(), kwargs=None, **fields):
        message = {"op": op, "handle": handle, **fields}
        if "key" in fields:
            message["key"] = encode(fields["key"])
        message["args"] = [encode(a) for a in args]
        message["kwargs"] = {str(k): encode(v) for k, v in (kwargs or {}).items()}
        try:
            self.channel.send(message)
            answer = self.channel.receive()
        except (OSError, EOFError, ValueError) as err:
            raise SolutionGone(f"the solution's process ended or broke the protocol ({type(err).__name__})")
        if "raised" in answer:
            raise _rebuild_exception(str(answer["raised"]), str(answer.get("message", "")))
        for original, changed in zip(args, answer.get("args", [])):  # in-place changes come back
            if type(original) is list:
                original[:] = decode(changed, self.handle)
            elif type(original) is dict:
                original.clear()
                original.update(decode(changed, self.handle))
        return decode(answer["value"], self.handle)


def _rebuild_exception(name: str, message: str) -> BaseException:
    """The solution's exception as the builtin of that name (so `except ValueError` in a test works)."""
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception) and kind is not SolutionGone:
        try:
            return kind(message)
        except TypeError:
            pass
    return RuntimeError(f"{name}: {message}")


def _make_non_dumpable() -> None:
    import ctypes

    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def run_harness() -> None:
    report = os.fdopen(int(os.environ.pop("COTFORGE_REPORT_FD")), "w")
    _make_non_dumpable()
    with open("test.json") as handle:
        spec = json.load(handle)
    os.unlink("test.json")  # the solution starts after this: nothing on disk tells it the test
    verdict = {"ok": False, "error": "the harness stopped before judging"}
    request_read, request_write = os.pipe()  # harness -> solution
    answer_read, answer_write = os.pipe()  # solution -> harness
    solution = subprocess.Popen([sys.executable, "-I", "-B", os.path.abspath(__file__), "solution",
                                 str(request_read), str(answer_write)], pass_fds=(request_read, answer_write),
                                stdin=subprocess.DEVNULL, close_fds=True)
    os.close(request_read)
    os.close(answer_write)
    remote = Remote(Channel(answer_read, request_write))
    try:
        hello = remote.channel.receive()
        if "raised" in hello:
            raise _rebuild_exception(str(hello["raised"]), str(hello.get("message", "")))
        namespace = {"__name__": "test"}
        namespace.update({str(k): decode(v, remote.handle) for k, v in hello["names"].items()})
        exec(compile(spec["setup"], "setup.py", "exec"), namespace)  # noqa: S102  inside the sandbox
        exec(compile(spec["test"], "test.py", "exec"), namespace)  # noqa: S102
        verdict = {"ok": True}
    except (EOFError, SolutionGone) as err:
        code = solution.poll()
        verdict = {"ok": False, "ended": True, "error": str(err) or f"the solution's process ended (exit code {code})"}
    except BaseException as err:  # noqa: BLE001  the test's own failure, whatever it is
        verdict = {"ok": False, "error": f"{type(err).__name__}: {err}"[:300]}
    finally:
        solution.kill()
    report.write(json.dumps(verdict))
    report.flush()


# --- the solution side --------------------------------------------------------------------------
def run_solution(read_fd: int, write_fd: int) -> None:
    channel = Channel(read_fd, write_fd)
    handles: list = []
    namespace = {"__name__": "solution"}
    try:
        with open("solution.py") as handle:
            exec(compile(handle.read(), "solution.py", "exec"), namespace)  # noqa: S102  inside the sandbox
    except BaseException as err:  # noqa: BLE001
        channel.send({"raised": type(err).__name__, "message": str(err)[:200]})
        return
    names = {name: value for name, value in namespace.items() if not name.startswith("__")}
    channel.send({"names": {name: encode(value, handles) for name, value in names.items()}})
    while True:
        request = channel.receive()
        try:
            answer = _answer(request, handles)
        except Exception as err:  # noqa: BLE001
            answer = {"raised": type(err).__name__, "message": str(err)[:200]}
        channel.send(answer)


def _answer(request: dict, handles: list) -> dict:
    target = handles[int(request["handle"])]
    args = [decode(a, handles.__getitem__) for a in request.get("args", [])]
    kwargs = {k: decode(v, handles.__getitem__) for k, v in request.get("kwargs", {}).items()}
    op = request["op"]
    if op == "call":
        value = target(*args, **kwargs)
    elif op == "getattr":
        value = getattr(target, request["name"])
    elif op == "getitem":
        value = target[decode(request["key"], handles.__getitem__)]
    elif op == "len":
        value = len(target)
    elif op == "list":
        value = list(target)
    elif op == "bool":
        value = bool(target)
    else:
        raise ValueError(f"unknown op {op!r}")
    return {"value": encode(value, handles), "args": [encode(a, handles) for a in args]}


if __name__ == "__main__":
    if sys.argv[1] == "harness":
        run_harness()
    else:
        run_solution(int(sys.argv[2]), int(sys.argv[3]))
