"""Run an operator's long command behind the server: lower CPU and I/O priority
(``hutong backup``, unless ``--full-priority``).

``hutong backup`` copies gigabytes from the disk the server commits to.  The
server's commits wait on their own fsyncs (SQLite's WAL at synchronous=FULL,
https://sqlite.org/pragma.html#pragma_synchronous), so every write of the copy
that the disk serves first is latency a clinician's request pays.  Linux lets
a process ask to be served last:

- I/O: the idle class of ioprio_set(2) (man 2 ioprio_set; honoured by the
  mq-deadline and BFQ schedulers, Documentation/block/ioprio.rst): the
  process's reads and writes are dispatched when no other process has I/O
  waiting.  Python's standard library has no binding for it, and a library
  for one system call (psutil) is more than it is worth: it is called through
  ctypes here.  Where the call does not exist (not Linux, an unknown
  architecture) or is refused, nothing changes and the command says so.
- CPU: nice(2) +10 (os.nice), so that the checksum of the copy yields to the
  server's workers on a busy machine.
"""

from __future__ import annotations

import ctypes
import os
import platform

# ioprio_set(2): syscall numbers per architecture (linux/arch/*/entry/syscalls; asm-generic for arm64)
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "arm64": 30}
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_SHIFT = 13
IOPRIO_CLASS_IDLE = 3
NICE = 10


def lower_priority() -> list[str]:
    """Put this process behind others for CPU and I/O; returns what it could not lower (for a warning)."""
    missed = []
    try:
        os.nice(NICE)
    except OSError:
        missed.append("cpu")
    nr = _IOPRIO_SET.get(platform.machine()) if platform.system() == "Linux" else None
    if nr is None:
        return [*missed, "io"]
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(nr, _IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << _IOPRIO_CLASS_SHIFT) != 0:
            missed.append("io")
    except (OSError, AttributeError):
        missed.append("io")
    return missed


def io_class() -> int | None:
    """This process's I/O priority class (ioprio_get(2)), None where it cannot be asked (tests)."""
    nr = {"x86_64": 252, "aarch64": 31, "arm64": 31}.get(platform.machine()) if platform.system() == "Linux" else None
    if nr is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    v = int(libc.syscall(nr, _IOPRIO_WHO_PROCESS, 0))
    return None if v < 0 else v >> _IOPRIO_CLASS_SHIFT
