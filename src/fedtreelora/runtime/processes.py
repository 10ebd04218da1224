"""What the runtimes ask the operating system about processes: alive, parents, descendants, command
line, age. Linux answers from /proc; elsewhere the answers are the safe ones (alive by signal 0, no
parents, NaN age), which only make cleanup less thorough."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PROC = Path("/proc")


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses):
    [0] state, [1] parent pid, ..., [19] start time in clock ticks after boot."""
    return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its parent (or a container's init) to reap it."""
    if not PROC.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # somebody else's process, but alive
        return True
    try:
        return _stat(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def parents() -> dict[int, int]:
    """pid -> parent pid of every process."""
    out = {}
    for stat in PROC.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            out[int(stat.parent.name)] = int(_stat(stat.parent.name)[1])
    return out


def descendants(roots: set[int]) -> set[int]:
    """Every process below ``roots`` (children, their children, ...), the roots excluded."""
    tree, found = parents(), set(roots)
    grew = True
    while grew:
        new = {pid for pid, parent in tree.items() if parent in found and pid not in found}
        found |= new
        grew = bool(new)
    return found - roots


def command_line(pid: int | str) -> str:
    """The process's arguments joined by spaces ('' if it is gone or unreadable)."""
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def command_lines() -> dict[int, str]:
    """pid -> command line of every process."""
    out = {}
    for folder in PROC.glob("[0-9]*"):
        with contextlib.suppress(ValueError):
            out[int(folder.name)] = command_line(folder.name)
    return out


def age() -> float:
    """Seconds since this process started: what starting it and importing cost (NaN off Linux)."""
    try:
        started = int(_stat("self")[19]) / os.sysconf("SC_CLK_TCK")
        return float((PROC / "uptime").read_text().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return float("nan")
