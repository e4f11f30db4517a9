"""Running a model-written Python program against its task's tests (MBPP pass@1, --execute-code).

Each program runs in a fresh Python subprocess: `setup`, then the program, then each test line (an
`assert`), in one namespace. It passes only when the child's bootstrap reports, under a random nonce
the parent chose, that every test ran without an exception and nothing was refused.

THIS IS A GUARD AGAINST ACCIDENTS, NOT A SECURITY BOUNDARY. It stops the usual ways a wrong program
does harm by mistake: deleting or overwriting files outside its directory, running shell commands,
opening connections, filling memory, looping forever, leaving processes behind. A program written to
escape can: the audit hook lives in the same interpreter as the program (walking frames with
`sys._getframe` or patching `os.path` reaches it, and native code loaded some other way than ctypes
bypasses it), and the operating system limits below stop resource exhaustion, not an attacker.
Untrusted code belongs in a container or a VM with no credentials, mounts or network of value.

The guards, all on for every program:

- the child is `sys.executable -I -B` (isolated: PYTHON* variables and the user site are ignored, no
  .pyc is written), run in an empty temporary working directory that is removed afterwards, with a
  minimal environment (PATH, HOME and TMPDIR = that directory, LANG) and stdin from /dev/null; the
  program arrives in a file there that the bootstrap removes first, never on a command line;
- resource limits set before exec: RLIMIT_AS (memory), RLIMIT_FSIZE (the largest file), RLIMIT_CORE = 0,
  RLIMIT_CPU (the timeout, rounded up, plus a second); the child leads a new session, and its whole
  process group is SIGKILLed when it ends or times out, so children it started do not outlive it;
- no network: under `unshare -rn` (a fresh, empty network namespace) where this machine allows it
  (`isolation()`), and in every case refused by the audit hook;
- an audit hook (`sys.addaudithook`), installed by the child's bootstrap before the program runs, that
  raises PermissionError("refused: ...") on
    - opening for writing, creating, removing, renaming, linking, symlinking, chmod/chown/utime/truncate
      of anything that does not resolve inside the working directory, and opening a directory outside
      it (its descriptor could serve as a `dir_fd`, which the "open" event does not show); os.mkfifo
      and os.mknod, which raise no event, are removed;
    - starting a process: subprocess, os.system, os.exec*, os.posix_spawn, os.fork, os.forkpty
      (`_posixsubprocess`, which starts processes with no event, is removed and cannot be re-imported);
    - sockets that connect, bind or send to an address, and name lookups;
    - native calls no hook sees: ctypes loading a library, looking up a C function or taking a raw
      address (importing ctypes stays allowed: numpy does), importing cffi;
    - raising the resource limits, and signalling another process.
  The first refusal is recorded by the bootstrap too, so a program that catches the PermissionError
  still fails.

Reading files stays allowed (the standard library has to import). Not guarded: how many files are
written inside the working directory (RLIMIT_FSIZE caps each one, not the disk), ctypes.memmove and
memset on raw addresses, CPU use up to the limits, and anything a program does on purpose to defeat an
in-process hook (the nonce and the hook's state are reachable through frame introspection).
"""

from __future__ import annotations

import json
import math
import os
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache, partial

OUTPUT_LIMIT = 64 * 1024  # bytes of the program's stdout+stderr kept: a program printing gigabytes costs no memory
_PAYLOAD = ".synthsteer-payload.json"  # in the working directory; the bootstrap reads and removes it first
_GUARDS = ("files", "network", "processes", "native", "limits")  # every rule group, all on in run_tests
_DRAIN_S = 1.0  # how long to read what is left in the pipes after the group is killed


@dataclass(frozen=True)
class Limits:
    """What one program may use. The defaults fit an MBPP solution with room to spare; they bound a
    wrong program's damage (a loop, a huge list, a huge file), they do not make running it safe."""

    timeout_s: float = 10.0  # wall clock per program
    memory_mb: int = 1024  # RLIMIT_AS of the child (address space, so a little above what it touches)
    file_mb: int = 16  # RLIMIT_FSIZE: the largest file it may write

    def __post_init__(self):
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) \
                or not math.isfinite(self.timeout_s) or self.timeout_s <= 0:
            raise ValueError(f"Limits.timeout_s must be a positive number of seconds, got {self.timeout_s!r}")
        for name in ("memory_mb", "file_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive whole number of megabytes, got {value!r}")


@dataclass(frozen=True)
class Outcome:
    """How one program did. `reason` is one of: "passed"; "failed: <ExceptionType>[: <first line of its
    message>]"; "timeout"; "refused: <what was blocked>"; "memory" (a MemoryError); "crashed: exit <code>"
    or "crashed: signal <n>" (the child ended without the bootstrap's report, e.g. os._exit before the
    tests). `output` is the first 64 KiB of its stdout and stderr, for reading a failure; it takes no
    part in comparisons."""

    passed: bool
    reason: str
    output: str = field(default="", compare=False, repr=False)


def run_tests(code: str, tests: list[str] | tuple[str, ...], setup: str = "", limits: Limits = Limits()) -> Outcome:
    """Run `setup`, then `code`, then each test line, in a fresh isolated Python; passed only when all run
    without error (and the guards refused nothing)."""
    return _run(code, tests, setup, limits, _GUARDS)


def run_many(programs: list[tuple[str, list[str], str]], limits: Limits = Limits(),
             workers: int | None = None) -> list[Outcome]:
    """run_tests over many (code, tests, setup) triples concurrently, results in input order. A thread
    pool suffices: each thread only waits on its subprocess; default workers = os.cpu_count()."""
    workers = workers if workers is not None else os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"run_many: workers must be a positive whole number, got {workers!r}")
    programs = list(programs)
    if not programs:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(programs)), thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda p: run_tests(p[0], p[1], p[2], limits), programs))


def isolation() -> dict[str, bool]:
    """What this machine provides beyond the guards that are always on: {"network_namespace": whether
    `unshare -rn` works here (then every child runs in an empty network namespace)}. Checked once."""
    return {"network_namespace": _unshare() is not None}


# ---------------------------------------------------------------- the parent's side


def _run(code: str, tests, setup: str, limits: Limits, guards: tuple[str, ...]) -> Outcome:
    """run_tests with a choice of rule groups: only tests switch one off, to check a guard behind it."""
    tests = _checked(code, tests, setup)
    nonce = secrets.token_hex(16)
    # ignore_cleanup_errors: a program may chmod its own files; that must not fail the evaluation
    with tempfile.TemporaryDirectory(prefix="synthsteer-sandbox-", ignore_cleanup_errors=True) as workdir:
        with open(os.path.join(workdir, _PAYLOAD), "w", encoding="utf-8") as f:
            json.dump({"nonce": nonce, "setup": setup, "code": code, "tests": list(tests), "guards": list(guards)}, f)
        output, report, returncode, timed_out = _execute(workdir, limits)
    return _outcome(_report(report, nonce), returncode, timed_out, len(tests),
                    output.decode("utf-8", errors="replace"))


def _checked(code, tests, setup) -> tuple[str, ...]:
    """The tests as a tuple, after refusing the mistakes that would otherwise run something else (a
    single string would be iterated character by character)."""
    if not isinstance(code, str) or not isinstance(setup, str):
        raise TypeError("run_tests: code and setup must be strings")
    if isinstance(tests, (str, bytes)):
        raise TypeError("run_tests: tests must be a list of test lines, not one string")
    tests = tuple(tests)
    if not all(isinstance(t, str) for t in tests):
        raise TypeError("run_tests: every test must be a string")
    return tests


def _command(report_fd: int) -> list[str]:
    """The child's command line: the bootstrap under `-I -B`, inside an empty network namespace when
    this machine allows one. The program itself travels in the payload file, not on the command line
    (which every process can read in /proc)."""
    python = [sys.executable, "-I", "-B", "-c", _BOOTSTRAP, str(report_fd)]
    unshare = _unshare()
    return [unshare, "-rn", *python] if unshare else python


def _environment(workdir: str) -> dict[str, str]:
    """Nothing of the parent's environment (tokens, proxies, CUDA settings) reaches the program."""
    return {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}


def _rlimits(limits: Limits) -> tuple[tuple[int, int], ...]:
    """(resource, value) pairs for the child; the CPU limit backs up the wall-clock timeout should the
    parent die before killing it."""
    mb = 1024 * 1024
    return ((resource.RLIMIT_AS, limits.memory_mb * mb), (resource.RLIMIT_FSIZE, limits.file_mb * mb),
            (resource.RLIMIT_CORE, 0), (resource.RLIMIT_CPU, math.ceil(limits.timeout_s) + 1))


def _apply_limits(pairs: tuple[tuple[int, int], ...]) -> None:
    """Runs in the forked child before exec (preexec_fn). Soft = hard, so the program cannot raise them
    back; never above a hard limit already in place, which would make setrlimit fail."""
    for res, value in pairs:
        _, hard = resource.getrlimit(res)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(res, (value, value))


def _execute(workdir: str, limits: Limits) -> tuple[bytearray, bytearray, int, bool]:
    """Run the child; (its output, what it wrote on the report pipe, its exit status, timed out)."""
    report_r, report_w = os.pipe()
    try:
        # preexec_fn with threads around (run_many): safe here, as the function only calls setrlimit on
        # numbers computed beforehand; CPython re-creates the interpreter's locks in the forked child
        proc = subprocess.Popen(_command(report_w), cwd=workdir, env=_environment(workdir), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=(report_w,),
                                start_new_session=True, preexec_fn=partial(_apply_limits, _rlimits(limits)))  # noqa: PLW1509
    except BaseException:
        os.close(report_r)
        raise
    finally:
        os.close(report_w)  # the parent's copy: the pipe reaches EOF when the child's copies close
    out_fd = proc.stdout.fileno()
    streams = {out_fd: bytearray(), report_r: bytearray()}
    try:
        timed_out = _wait(proc.pid, streams, time.monotonic() + limits.timeout_s)
        # the leader is a zombie or alive here (not yet reaped), so its group id cannot have been reused
        _kill_group(proc.pid)
        _drain(streams, time.monotonic() + _DRAIN_S)
        proc.wait()
    finally:
        if proc.returncode is None:  # interrupted in the parent (KeyboardInterrupt): leave nothing running
            _kill_group(proc.pid)
            proc.wait()
        proc.stdout.close()
        os.close(report_r)
    return streams[out_fd], streams[report_r], proc.returncode, timed_out


def _wait(pid: int, streams: dict[int, bytearray], deadline: float) -> bool:
    """Read the pipes until the child exits or the deadline passes; True when it timed out. A pidfd says
    when it exits without polling; without one (an old kernel), waitid is polled every 20 ms."""
    pidfd = _pidfd(pid)
    with selectors.DefaultSelector() as sel:
        for fd, buf in streams.items():
            sel.register(fd, selectors.EVENT_READ, buf)
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ, None)
        try:
            while True:
                if pidfd is None and _exited(pid):
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return True
                for key, _ in sel.select(left if pidfd is not None else min(left, 0.02)):
                    if key.data is None:
                        return False
                    if not _read_into(key.fd, key.data):
                        sel.unregister(key.fd)
        finally:
            if pidfd is not None:
                os.close(pidfd)


def _drain(streams: dict[int, bytearray], until: float) -> None:
    """Read what is left after the group is killed, until EOF; bounded in time, since a process that left
    the group could hold a pipe open forever."""
    with selectors.DefaultSelector() as sel:
        for fd, buf in streams.items():
            sel.register(fd, selectors.EVENT_READ, buf)
        while sel.get_map() and (left := until - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                if not _read_into(key.fd, key.data):
                    sel.unregister(key.fd)


def _read_into(fd: int, buf: bytearray) -> bool:
    """One read into `buf`, keeping at most OUTPUT_LIMIT bytes (the rest is read and dropped, so the child
    never blocks on a full pipe); False at EOF."""
    chunk = os.read(fd, 65536)
    if not chunk:
        return False
    buf += chunk[: max(0, OUTPUT_LIMIT - len(buf))]
    return True


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux, or a kernel before 5.3
        return None


def _exited(pid: int) -> bool:
    """Whether the child has exited, leaving it unreaped (WNOWAIT) so its group can still be killed."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # the group is gone already
        pass


def _report(raw: bytes, nonce: str) -> dict | None:
    """The bootstrap's report: the one line under this run's nonce, parsed and checked; None when there is
    none (the child died or exited first) or it is malformed. Other lines are ignored: only the nonce,
    which the program never sees on purpose, makes a line count."""
    prefix = nonce.encode() + b" "
    for line in bytes(raw).splitlines():
        if line.startswith(prefix):
            try:
                report = json.loads(line[len(prefix):])
            except ValueError:
                return None
            ok = isinstance(report, dict) and report.get("kind") in ("passed", "failed", "memory", "refused") \
                and isinstance(report.get("error"), str) and type(report.get("ran")) is int
            return report if ok else None
    return None


def _outcome(report: dict | None, returncode: int, timed_out: bool, n_tests: int, output: str = "") -> Outcome:
    """The Outcome from what the parent observed. A pass needs the report to say so, every test to have
    run and the child to have exited cleanly: an exit of its own (sys.exit caught by the bootstrap
    fails; os._exit leaves no report) is never a pass."""
    if timed_out or returncode == -signal.SIGXCPU:
        return Outcome(False, "timeout", output)
    if report is None or returncode != 0:
        code = f"signal {-returncode}" if returncode < 0 else f"exit {returncode}"
        return Outcome(False, f"crashed: {code}", output)
    kind, error = report["kind"], report["error"]
    if kind == "passed":
        if report["ran"] == n_tests:
            return Outcome(True, "passed", output)
        return Outcome(False, f"failed: only {report['ran']} of {n_tests} tests ran", output)
    if kind == "memory":
        return Outcome(False, "memory", output)
    return Outcome(False, f"{kind}: {error}", output)


@cache
def _unshare() -> str | None:
    """The path of `unshare` when `unshare -rn true` works here (user namespaces enabled), else None."""
    path = shutil.which("unshare") or next((p for p in ("/usr/bin/unshare", "/bin/unshare") if os.path.exists(p)), None)
    if path is None:
        return None
    try:
        done = subprocess.run([path, "-rn", "true"], check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return path if done.returncode == 0 else None


# ---------------------------------------------------------------- the child's side
#
# The bootstrap is the child's `-c` program. Everything it needs is bound before the program runs (a
# program that rebinds os.write or json.dumps cannot change the report), the payload file is removed
# before the hook is armed, and the program runs in a module of its own installed as __main__, so
# `import __main__` does not reach the bootstrap's globals or the nonce.

_BOOTSTRAP = r'''
# synthsteer sandbox bootstrap
import os, sys


def _hook(root, guards, refusals):
    """The audit hook: the rules of the groups in `guards`, each an event -> check returning what to
    refuse (or None)."""
    realpath, isdir, isabs, join, dirname = os.path.realpath, os.path.isdir, os.path.isabs, os.path.join, os.path.dirname
    fspath, fsdecode, readlink, getpid = os.fspath, os.fsdecode, os.readlink, os.getpid
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    dir_flags = os.O_DIRECTORY | getattr(os, "O_PATH", 0)
    streams = {"/dev/null", "/dev/stdout", "/dev/stderr"}
    native = {"cffi", "_cffi_backend", "_posixsubprocess"}

    def short(value):
        # bytes as text: os.system and bytes paths arrive encoded
        text = repr(fsdecode(value) if isinstance(value, bytes) else value)
        return text if len(text) <= 120 else text[:117] + "..."

    def fd_path(fd):
        # what an open descriptor names; None for a pipe or socket, which is no place in the file system
        try:
            target = readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        return target if target.startswith("/") else None

    def where(path, dir_fd=None):
        """The resolved path an operation acts on; None when it acts on no file-system place."""
        if isinstance(path, int):
            return fd_path(path)
        path = fsdecode(fspath(path))
        if dir_fd is not None and dir_fd >= 0 and not isabs(path):
            base = fd_path(dir_fd)
            path = join(base if base is not None else "/nonexistent", path)
        return realpath(path)

    def inside(path, dir_fd=None):
        try:
            if not isinstance(path, int) and fsdecode(fspath(path)) in streams:
                return True
            place = where(path, dir_fd)
        except Exception:  # a path that cannot even be resolved is not known to be inside
            return False
        return place is None or place == root or place.startswith(root + "/")

    def outside(what, *places):
        return None if all(inside(*p) for p in places) else f"{what} outside the working directory"

    def on_open(path, mode, flags):
        if flags & write_flags:
            what = f"open({short(path)}, {mode!r})" if mode is not None else f"os.open({short(path)}) for writing"
            return outside(what, (path,))
        if isinstance(path, int) or inside(path):
            return None
        try:
            is_dir = flags & dir_flags or isdir(path)
        except Exception:
            is_dir = True
        return f"open({short(path)}) of a directory outside the working directory" if is_dir else None

    def on_symlink(src, dst, dir_fd):
        try:
            target = src if isabs(fsdecode(fspath(src))) else join(dirname(where(dst, dir_fd)), fsdecode(fspath(src)))
        except Exception:
            target = "/"
        return outside(f"os.symlink({short(src)}, {short(dst)})", (dst, dir_fd), (target,))

    def process(name):
        return lambda *a: f"{name}({', '.join(short(x) for x in a)}) starts a process"

    def network(name, shown=1):
        return lambda *a: f"{name}({', '.join(short(x) for x in a[:shown])}) uses the network"

    rules = {
        "files": {
            "open": on_open,
            "os.remove": lambda p, fd: outside(f"os.remove({short(p)})", (p, fd)),
            "os.rmdir": lambda p, fd: outside(f"os.rmdir({short(p)})", (p, fd)),
            "os.mkdir": lambda p, mode, fd: outside(f"os.mkdir({short(p)})", (p, fd)),
            "os.rename": lambda s, d, sfd, dfd: outside(f"os.rename({short(s)}, {short(d)})", (s, sfd), (d, dfd)),
            "os.link": lambda s, d, sfd, dfd: outside(f"os.link({short(s)}, {short(d)})", (s, sfd), (d, dfd)),
            "os.symlink": on_symlink,
            "shutil.rmtree": lambda p, fd: outside(f"shutil.rmtree({short(p)})", (p, fd)),
            "os.truncate": lambda p, n: outside(f"os.truncate({short(p)})", (p,)),
            "os.chmod": lambda p, mode, fd: outside(f"os.chmod({short(p)})", (p, fd)),
            "os.chown": lambda p, u, g, fd: outside(f"os.chown({short(p)})", (p, fd)),
            "os.utime": lambda p, t, ns, fd: outside(f"os.utime({short(p)})", (p, fd)),
            "os.setxattr": lambda p, *a: outside(f"os.setxattr({short(p)})", (p,)),
            "os.removexattr": lambda p, *a: outside(f"os.removexattr({short(p)})", (p,)),
        },
        "processes": {
            "subprocess.Popen": lambda exe, args, cwd, env: f"subprocess.Popen({short(args)}) starts a process",
            "os.system": process("os.system"),
            "os.exec": lambda path, args, env: f"os.exec*({short(path)}) starts a program",
            "os.posix_spawn": lambda path, *a: f"os.posix_spawn({short(path)}) starts a process",
            "os.fork": process("os.fork"),
            "os.forkpty": process("os.forkpty"),
            "os.kill": lambda pid, sig: None if pid in (0, getpid()) else f"os.kill({pid}, {sig}) signals another process",
            "os.killpg": lambda pgid, sig: f"os.killpg({pgid}, {sig}) signals other processes",
        },
        "network": {
            "socket.connect": lambda s, addr: f"socket.connect({short(addr)}) uses the network",
            "socket.bind": lambda s, addr: f"socket.bind({short(addr)}) uses the network",
            "socket.sendto": lambda s, addr: f"socket.sendto({short(addr)}) uses the network",
            "socket.sendmsg": lambda s, addr: f"socket.sendmsg({short(addr)}) uses the network",
            "socket.getaddrinfo": network("socket.getaddrinfo", 2),
            "socket.gethostbyname": network("socket.gethostbyname"),
            "socket.gethostbyaddr": network("socket.gethostbyaddr"),
            "socket.getnameinfo": network("socket.getnameinfo"),
            "socket.sethostname": network("socket.sethostname"),
        },
        "native": {
            # ctypes calls C where no audit event is raised. Importing it stays allowed (numpy does, and
            # it opens only the interpreter itself), but loading a library or looking up a C function,
            # the way ctypes code reaches libc, is refused; cffi cannot be imported, nor can
            # _posixsubprocess, which starts processes without an audit event
            "import": lambda name, *a: None if name.partition(".")[0] not in native
            else f"import {name} (it acts with no audit event, past these guards)",
            "ctypes.dlopen": lambda name: None if name is None else f"ctypes.dlopen({short(name)}) loads native code",
            "ctypes.dlsym": lambda lib, name: f"ctypes lookup of {short(name)} calls native code",
            "ctypes.dlsym/handle": lambda handle, name: f"ctypes lookup of {short(name)} calls native code",
            "ctypes.cdata": lambda address: "ctypes access to a raw address",
            "ctypes.PyObj_FromPtr": lambda obj: "ctypes access to a raw address",
            "ctypes.string_at": lambda address, size: "ctypes access to a raw address",
            "ctypes.wstring_at": lambda address, size: "ctypes access to a raw address",
            "ctypes.call_function": lambda func, args: "ctypes call of a native function",
        },
        "limits": {
            "resource.setrlimit": lambda res, lim: f"resource.setrlimit({res}, {short(lim)}) changes the limits",
            "resource.prlimit": lambda pid, res, lim=None: None if lim is None
            else f"resource.prlimit({pid}, {res}, {short(lim)}) changes the limits",
        },
    }
    checks = {event: check for group in guards for event, check in rules[group].items()}

    def hook(event, args):
        check = checks.get(event)
        if check is None:
            return
        try:
            why = check(*args)
        except Exception as e:  # arguments this Python's event does not have: refuse rather than guess
            why = f"{event} (the guard could not check it: {type(e).__name__})"
        if why:
            if not refusals:
                refusals.append(why)
            raise PermissionError("refused: " + why)

    return hook


def _disarm(guards):
    """Remove what would start a process or create a file with no audit event: _posixsubprocess (imported
    again, it is refused), os.mkfifo and os.mknod."""
    import posix, subprocess
    if "processes" in guards:
        sys.modules.pop("_posixsubprocess", None)
        subprocess.__dict__.pop("_fork_exec", None)  # 3.11+
        subprocess.__dict__.pop("_posixsubprocess", None)  # 3.10
    if "files" in guards:
        for module in (os, posix):
            module.__dict__.pop("mkfifo", None)
            module.__dict__.pop("mknod", None)


def _describe(error):
    """'Type: first line of the message', or just 'Type'; never raises (the program chose the type)."""
    try:
        name = type(error).__name__
    except BaseException:
        name = "BaseException"
    try:
        lines = str(error).strip().splitlines()
    except BaseException:
        lines = []
    message = lines[0][:200] if lines else ""
    return f"{name}: {message}" if message else name


def _run(payload, refusals):
    """Setup, program, tests in one fresh module. It is not named __main__ (as in the usual harnesses, a
    demo under `if __name__ == "__main__":`, often calling input(), does not run), but stands in for it,
    so that `import __main__` does not reach the bootstrap."""
    import builtins, types
    module = types.ModuleType("__sandbox__")
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = sys.modules["__sandbox__"] = module
    sys.argv = ["<program>"]
    ran = 0
    try:
        exec(compile(payload["setup"], "<setup>", "exec", dont_inherit=True), module.__dict__)
        exec(compile(payload["code"], "<program>", "exec", dont_inherit=True), module.__dict__)
        for i, test in enumerate(payload["tests"], 1):
            exec(compile(test, f"<test {i}>", "exec", dont_inherit=True), module.__dict__)
            ran += 1
        kind, error = "passed", ""
    except MemoryError:
        kind, error = "memory", ""
    except BaseException as e:  # SystemExit included: a program that exits has not passed
        kind, error = "failed", _describe(e)
    if refusals:
        kind, error = "refused", refusals[0]
    return {"kind": kind, "error": error, "ran": ran}


def _main(report_fd):
    import json
    write, exit_now, dumps = os.write, os._exit, json.dumps
    with open(".synthsteer-payload.json", "rb") as f:
        payload = json.loads(f.read())
    os.remove(".synthsteer-payload.json")
    nonce, guards = payload.pop("nonce"), frozenset(payload["guards"])
    _disarm(guards)
    refusals = []
    sys.addaudithook(_hook(os.path.realpath(os.getcwd()), guards, refusals))
    result = _run(payload, refusals)
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass
    write(report_fd, (nonce + " " + dumps(result) + "\n").encode())
    exit_now(0)  # no atexit handlers or lingering threads of the program run after the report


_main(int(sys.argv[1]))
'''
