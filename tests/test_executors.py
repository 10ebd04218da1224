"""Worker processes die with the run that started them (Linux)."""

import os
import signal
import subprocess
import sys
import time

import pytest

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


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent (or a container's init) to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
