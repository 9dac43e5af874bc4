"""Optional sampling profiles of a benchmark phase with py-spy (``--profile DIR``).

py-spy attaches to a running process (and its children: uvicorn workers,
import worker processes) and writes collapsed stacks, one ``frame;frame N``
line per distinct stack; :func:`summarize` turns those into the functions
with the most samples on-CPU (self) and on the stack (inclusive).  py-spy
is not a dependency of Hutong: ``pip install py-spy`` to use this.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    exe = Path(sys.executable).parent / "py-spy"
    return str(exe) if exe.exists() else shutil.which("py-spy")


@contextmanager
def profiled(pid: int, out: Path | None, *, rate: int = 97, idle: bool = False) -> Iterator[None]:
    """Sample ``pid`` and its subprocesses while the block runs; no-op when ``out`` is None."""
    exe = py_spy() if out is not None else None
    if out is None or exe is None:
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--rate", str(rate),
           "--output", str(out), "--nonblocking"]
    if idle:
        cmd.append("--idle")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(0.5)  # let it attach before the measured work starts
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    f = m.group("file")
    for marker in ("site-packages/", "/hutong/", "/bench/", "/lib/python3"):
        i = f.find(marker)
        if i >= 0:
            f = f[i + 1 :] if marker.startswith("/") else f[i + len(marker) :]
            break
    return f"{m.group('func')} ({f})"


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by self and inclusive samples in a py-spy raw (collapsed) file."""
    if not path.exists():
        return {"file": str(path), "error": "no profile written"}
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    procs: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        n = int(m.group(2))
        frames = [_short(f) for f in m.group(1).split(";")]
        # py-spy puts "process N:..." / "thread (...)" first when --subprocesses / threads are shown.
        owners = [f for f in frames if f.startswith("process ")]
        if owners:
            procs[owners[-1].split(":", 1)[0] + (" (child)" if len(owners) > 1 else "")] += n
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return {"file": str(path), "samples": 0}

    def pct(c: Counter[str]) -> list[str]:
        return [f"{100 * v / total:5.1f}%  {k}" for k, v in c.most_common(top)]

    return {"file": str(path), "samples": total, "by_process": dict(procs.most_common()), "self": pct(self_c),
            "inclusive": pct(incl)}


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    lines = [f"{summary.get('file')}: {summary.get('samples', 0)} samples"]
    lines += [f"   {v:6d}  {k}" for k, v in summary.get("by_process", {}).items()]
    for k in ("self", "inclusive"):
        if k in summary:
            lines.append(f"-- {k}")
            lines += summary[k]
    path.write_text("\n".join(lines) + "\n")


def own_pid() -> int:
    return os.getpid()
