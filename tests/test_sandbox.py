"""The sandbox that runs model-written programs for MBPP pass@1: a right program passes, and each guard
stops what it is there to stop (each test would fail with that guard removed)."""

import os
import secrets
import time
from pathlib import Path

import pytest

from synthsteer import sandbox
from synthsteer.sandbox import Limits, Outcome, isolation, run_many, run_tests

QUICK = Limits(timeout_s=2.0)


def test_a_correct_program_passes_and_a_wrong_one_fails():
    assert run_tests("def add(a, b): return a + b", ["assert add(1, 2) == 3"], limits=QUICK) == Outcome(True, "passed")
    wrong = run_tests("def add(a, b): return a - b", ["assert add(1, 2) == 3"], limits=QUICK)
    assert not wrong.passed and wrong.reason.startswith("failed: AssertionError")
    # setup runs first, in the same namespace; a failing second test fails the program
    out = run_tests("def f(): return X", ["assert f() == 7", "assert f() == 8"], setup="X = 7", limits=QUICK)
    assert not out.passed and out.reason == "failed: AssertionError"
    crash = run_tests("def f(:", ["assert f()"], limits=QUICK)
    assert crash.reason.startswith("failed: SyntaxError: ")


def test_the_standard_library_works_under_the_hook():
    code = ("import math, re, collections, itertools, heapq, functools, string, typing, fractions, bisect, json\n"
            "import dataclasses, tempfile, subprocess, socket\n"
            "from collections import namedtuple\n"
            "P = namedtuple('P', 'a b')\n"
            "@dataclasses.dataclass\nclass C:\n    x: int\n"
            "def f(s): print(s); return [m.group() for m in re.finditer(r'\\d+', s)]\n"
            "if __name__ == '__main__':\n    input()  # a demo block: not run, as in the usual harnesses\n")
    out = run_tests(code, ["assert f('a1b22') == ['1', '22']", "assert P(1, 2).b == C(2).x"], limits=QUICK)
    assert out == Outcome(True, "passed"), out.output
    assert out.output == "a1b22\n"  # what it printed comes back, for reading a failure


def test_an_infinite_loop_times_out():
    t0 = time.monotonic()
    out = run_tests("while True: pass", ["assert True"], limits=Limits(timeout_s=1.0))
    assert out == Outcome(False, "timeout")
    assert time.monotonic() - t0 < 1.0 + 2.0


def _alive(pid: int) -> bool:
    """Whether a sandboxed process with this pid is still running (a zombie, or a pid reused by something
    else, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return state != "Z" and b"synthsteer sandbox bootstrap" in cmdline


def test_a_fork_is_refused_and_forked_children_do_not_outlive_the_timeout():
    forks = ("import os, time\npids = []\nfor _ in range(3):\n    pid = os.fork()\n"
             "    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n    pids.append(pid)\n"
             "print(*pids, flush=True)\nwhile True: pass\n")
    refused = run_tests(forks, [], limits=QUICK)
    assert refused.reason == "refused: os.fork() starts a process"
    # with the process rules off (tests only), the children exist: the group kill must take them all
    guards = tuple(g for g in sandbox._GUARDS if g != "processes")
    out = sandbox._run(forks, [], "", Limits(timeout_s=1.0), guards)
    assert out.reason == "timeout"
    pids = [int(p) for p in out.output.split()]
    assert len(pids) == 3
    deadline = time.monotonic() + 2.0
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)


def test_writing_outside_the_working_directory_is_refused(tmp_path):
    targets = [Path(f"/tmp/synthsteer_sandbox_escape_{secrets.token_hex(6)}.txt"), tmp_path / "escape.txt"]
    for target in targets:
        out = run_tests(f"open({str(target)!r}, 'w').write('x')", ["assert True"], limits=QUICK)
        assert out.reason == f"refused: open({str(target)!r}, 'w') outside the working directory"
        assert not out.passed and not target.exists()
    for code in (f"import os\nos.remove({str(tmp_path)!r} + '/kept')", f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
                 f"import os\nos.chdir({str(tmp_path)!r})\nopen('kept', 'w')",
                 f"import os\nos.symlink({str(tmp_path)!r} + '/kept', 'link')\nopen('link', 'w')",
                 f"import os\nd = os.open({str(tmp_path)!r}, os.O_RDONLY)\nos.open('kept', os.O_WRONLY, dir_fd=d)"):
        (tmp_path / "kept").write_text("kept")
        out = run_tests(code, ["assert True"], limits=QUICK)
        assert out.reason.startswith("refused: ") and (tmp_path / "kept").read_text() == "kept", (code, out)


def test_writing_inside_the_working_directory_is_allowed():
    code = ("import os, shutil, tempfile\nopen('out.txt', 'w').write('x')\nos.mkdir('d')\nopen('d/f', 'w').close()\n"
            "shutil.rmtree('d')\nfd, name = tempfile.mkstemp()\nos.close(fd)\nos.remove(name)\n")
    out = run_tests(code, ["assert open('out.txt').read() == 'x'", "assert not os.path.exists('d')"], limits=QUICK)
    assert out == Outcome(True, "passed"), out.output


def test_a_swallowed_refusal_still_fails():
    target = f"/tmp/synthsteer_sandbox_escape_{secrets.token_hex(6)}.txt"
    code = f"try:\n    open({target!r}, 'w').write('x')\nexcept Exception:\n    pass\n"
    out = run_tests(code, ["assert True"], limits=QUICK)
    assert not out.passed and out.reason.startswith("refused: open(") and not os.path.exists(target)


@pytest.mark.parametrize("code, reason", [
    ("import socket\nsocket.create_connection(('127.0.0.1', 9))", "refused: socket.getaddrinfo('127.0.0.1', 9)"),
    ("import socket\nsocket.socket().connect(('127.0.0.1', 9))", "refused: socket.connect(('127.0.0.1', 9))"),
    ("import subprocess\nsubprocess.run(['true'])", "refused: subprocess.Popen(['true'])"),
    ("import os\nos.system('true')", "refused: os.system('true')"),
    ("import _posixsubprocess", "refused: import _posixsubprocess"),
    ("import ctypes\nctypes.CDLL(None).system(b'true')", "refused: ctypes lookup of 'system'"),
    ("import ctypes\nctypes.CDLL('libc.so.6')", "refused: ctypes.dlopen('libc.so.6')"),
    ("import os\nos.kill(1, 0)", "refused: os.kill(1, 0)"),
    ("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))", "refused: resource.setrlimit("),
])
def test_network_processes_and_native_code_are_refused(code, reason):
    out = run_tests(code, ["assert True"], limits=QUICK)
    assert not out.passed and out.reason.startswith(reason), out


@pytest.mark.parametrize("code, reason", [
    ("import os\nos._exit(0)", "crashed: exit 0"),
    ("import sys\nsys.exit(0)", "failed: SystemExit: 0"),
    # a forged report on every descriptor, then an exit: without the nonce it counts for nothing
    (("import os\nfor fd in range(1, 20):\n    try:\n        os.write(fd, b'x {\"kind\": \"passed\", \"error\": \"\", \"ran\": 1}\\n')\n"
      "    except OSError:\n        pass\nos._exit(0)"), "crashed: exit 0"),
])
def test_exiting_before_the_tests_never_passes(code, reason):
    assert run_tests(code, ["assert True"], limits=QUICK) == Outcome(False, reason)


def test_memory_and_file_size_are_limited():
    assert run_tests("x = bytearray(4 << 30)", ["assert True"], limits=Limits(timeout_s=2.0, memory_mb=256)).reason == "memory"
    big = run_tests("open('big', 'wb').write(b'0' * (2 << 20))", ["assert True"], limits=Limits(timeout_s=2.0, file_mb=1))
    assert big.reason.startswith("failed: OSError: [Errno 27] File too large")
    # output is read as it comes and only its start kept: printing 10 MB neither blocks nor is kept whole
    loud = run_tests("print('a' * 10**7)", ["assert True"], limits=QUICK)
    assert loud.passed and len(loud.output) == sandbox.OUTPUT_LIMIT


def test_run_many_keeps_input_order_and_runs_concurrently():
    programs = [("import time\ntime.sleep(0.9)\ndef f(): return 1", ["assert f() == 1"], ""),
                ("import time\ntime.sleep(0.6)\ndef f(): return 2", ["assert f() == 1"], ""),
                ("import time\ntime.sleep(0.3)\nopen('/etc/x', 'w')", ["assert True"], ""),
                ("def f(): return 1", ["assert f() == 1"], "")]
    t0 = time.monotonic()
    outcomes = run_many(programs, QUICK, workers=4)
    elapsed = time.monotonic() - t0
    assert [o.reason for o in outcomes] == ["passed", "failed: AssertionError",
                                            "refused: open('/etc/x', 'w') outside the working directory", "passed"]
    assert elapsed < 1.5  # one after another they would take at least 1.8 s
    assert run_many([], QUICK) == []
    with pytest.raises(ValueError, match="workers"):
        run_many(programs, QUICK, workers=0)


@pytest.mark.parametrize("kw", [{"timeout_s": 0}, {"timeout_s": -1.0}, {"timeout_s": float("nan")}, {"memory_mb": 0},
                                {"file_mb": -1}, {"memory_mb": 1.5}])
def test_limits_are_validated(kw):
    with pytest.raises(ValueError, match=f"Limits.{next(iter(kw))} must be a positive"):
        Limits(**kw)


def test_bad_arguments_and_isolation():
    with pytest.raises(TypeError, match="not one string"):
        run_tests("x = 1", "assert x == 1")
    info = isolation()
    assert set(info) == {"network_namespace"} and isinstance(info["network_namespace"], bool)
    if info["network_namespace"]:  # the child sees no interface but loopback, and loopback is down
        out = run_tests("import socket", ["assert [n for _, n in socket.if_nameindex()] == ['lo']"], limits=QUICK)
        assert out.passed, out
