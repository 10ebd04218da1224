"""Worker processes die with the run that started them (Linux)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from fedtreelora.runtime.processes import age, alive, command_line, descendants

PARENT = """
import multiprocessing, pathlib, sys, time
from fedtreelora.runtime.executors import die_with_parent

def child(ready):
    die_with_parent()
    pathlib.Path(ready).touch()
    time.sleep(60)

if __name__ == "__main__":
    p = multiprocessing.get_context("spawn").Process(target=child, args=(sys.argv[1],))
    p.start()
    print(p.pid, flush=True)
    time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_worker_exits_when_its_parent_is_killed(tmp_path):  # type: ignore[no-untyped-def]
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    ready = tmp_path / "ready"
    parent = subprocess.Popen([sys.executable, str(script), str(ready)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    for _ in range(600):  # the child imports torch before it reaches die_with_parent()
        if ready.exists():
            break
        time.sleep(0.1)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(50):
        if not alive(child):
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the worker outlived its parent")


def test_process_facts_about_this_process_and_its_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert alive(os.getpid()) and alive(child.pid)
        assert child.pid in descendants({os.getpid()}) and os.getpid() not in descendants({os.getpid()})
        assert "time.sleep(30)" in command_line(child.pid)
        if sys.platform.startswith("linux"):
            assert 0 < age() < 24 * 3600 * 365
        child.kill()  # not reaped yet: a zombie, which counts as gone
        for _ in range(100):
            if not alive(child.pid):
                break
            time.sleep(0.05)
        assert not alive(child.pid)
    finally:
        child.kill()
        child.wait()
