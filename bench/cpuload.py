"""Who used the CPUs during a phase: the benchmark (load generator, server, database) or others.

The benchmark machine is shared (other work may run on it at the same time),
so each phase records the average number of cores busy with the benchmark's
own processes (this process and its descendants, the PostgreSQL cluster on
the benchmark's port) and with everything else, from /proc before and after.
A figure measured while ``others_cores`` was high is a lower bound.
"""

from __future__ import annotations

import os
import time
from typing import Any

CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# pid -> (ppid, CPU ticks incl. children's, comm, start, children's ticks alone)
Snapshot = dict[int, tuple[int, int, bytes, int, int]]


def _snapshot() -> Snapshot:
    out: Snapshot = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for d in names:
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                s = f.read()
        except OSError:
            continue
        r = s.rfind(b")")
        fields = s[r + 2 :].split()
        # after "pid (comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        # cutime cstime priority nice threads itrealvalue starttime.  A pid is the same process while its
        # start time is (kernel workers rename themselves, so comm is no identity).
        # cutime/cstime: children that exited and were waited for (import workers, test runners' commands)
        # land there, so their CPU is not lost when they end inside the window.
        out[int(d)] = (int(fields[1]), sum(int(x) for x in fields[11:15]), s[s.find(b"(") + 1 : r],
                       int(fields[19]), int(fields[13]) + int(fields[14]))
    return out


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ")
    except OSError:
        return b""


def _postmasters(snap: Snapshot, pg_port: int | None) -> set[int]:
    """The PostgreSQL postmaster listening on ``pg_port`` (its backends are its children)."""
    if pg_port is None:
        return set()
    needle = f"-p {pg_port} ".encode()
    return {pid for pid, (_pp, _t, comm, _st, _ct) in snap.items()
            if comm.startswith(b"postgres") and needle in _cmdline(pid) + b" "}


def _ours(snap: Snapshot, pg_port: int | None) -> set[int]:
    return _tree(snap, {os.getpid()} | _postmasters(snap, pg_port))


class CpuMeter:
    """``with CpuMeter(pg_port) as m: ...`` then ``m.result``."""

    def __init__(self, pg_port: int | None = None) -> None:
        self.pg_port = pg_port
        self.result: dict[str, Any] = {}

    def __enter__(self) -> CpuMeter:
        self.t0 = time.perf_counter()
        self.s0 = _snapshot()
        return self

    def __exit__(self, *_exc: object) -> None:
        s1 = _snapshot()
        wall = time.perf_counter() - self.t0
        ours = _ours(s1, self.pg_port) | _ours(self.s0, self.pg_port)
        mine = others = 0
        top: dict[str, int] = {}
        # A child that ended inside the window lands in its parent's cutime/cstime with its whole
        # lifetime: what it had used before the window is not the window's (a long-running process reaped
        # by `timeout` once showed as 113 cores).
        # A chain that ended (bash -> timeout -> pytest) lands in the nearest ancestor still alive.
        gone = {pid for pid, v in self.s0.items() if pid not in s1 or s1[pid][3] != v[3]}
        reaped: dict[int, int] = {}
        for pid in gone:
            up = self.s0[pid][0]
            while up in gone:
                up = self.s0[up][0]
            reaped[up] = reaped.get(up, 0) + self.s0[pid][1]
        for pid, (_pp, ticks, comm, start, cticks) in s1.items():
            before = self.s0.get(pid)
            if before and before[3] == start:
                # at most what the children's counters grew by (an orphan is reaped by someone else)
                d = ticks - before[1] - min(reaped.get(pid, 0), cticks - before[4])
            else:
                d = ticks
            if d <= 0:
                continue
            if pid in ours:
                mine += d
            else:
                others += d
                name = comm.decode(errors="replace").split("-")[0]  # kworker/0:1-events -> kworker/0:1
                top[name] = top.get(name, 0) + d
        if wall <= 0:
            return
        self.result = {
            "ours_cores": round(mine / CLK / wall, 2),
            "others_cores": round(others / CLK / wall, 2),
        }
        busiest = sorted(top.items(), key=lambda kv: -kv[1])[:3]
        if busiest and others / CLK / wall >= 0.1:
            self.result["others_top"] = {k: round(v / CLK / wall, 2) for k, v in busiest}


def wait_for_quiet(max_seconds: float, *, pg_port: int | None = None, threshold: float = 0.3,
                   window: float = 1.0) -> dict[str, Any]:
    """Wait (at most ``max_seconds``) until other processes use < ``threshold`` cores over ``window`` s.

    On a shared machine this keeps others' bursts (a test suite, a build) out
    of the measured phase when they are short; the result says how it went.
    """
    t0 = time.perf_counter()
    others = 0.0
    while True:
        with CpuMeter(pg_port) as m:
            time.sleep(window)
        others = float(m.result.get("others_cores", 0.0))
        waited = time.perf_counter() - t0
        if others < threshold or waited >= max_seconds:
            return {"waited_s": round(waited, 1), "others_cores": others, "quiet": others < threshold}


def _tree(snap: Snapshot, roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _t, _c, _st, _ct) in snap.items():
        children.setdefault(ppid, []).append(pid)
    out: set[int] = set()
    stack = list(roots)
    while stack:
        p = stack.pop()
        if p in out or p not in snap:
            continue
        out.add(p)
        stack.extend(children.get(p, ()))
    return out


class GroupMeter:
    """CPU seconds of named groups of this benchmark's processes over a window:
    ``nodes`` maps a name to a server's pid (the process and its descendants), ``postgresql`` is the
    cluster on ``pg_port``, ``load_generator`` every other process of this benchmark (its worker
    processes and itself).  Only processes alive for the whole window are counted exactly (the
    groups' processes are long-lived: servers, pool workers and PostgreSQL backends that keep their
    connections); one started inside the window counts its whole life, which is the window's.
    """

    def __init__(self, nodes: dict[str, int], pg_port: int | None) -> None:
        self.nodes = nodes
        self.pg_port = pg_port
        self.seconds: dict[str, float] = {}

    def _groups(self, snap: Snapshot) -> dict[str, set[int]]:
        out = {name: _tree(snap, {pid}) for name, pid in self.nodes.items()}
        out["postgresql"] = _tree(snap, _postmasters(snap, self.pg_port))
        taken = set().union(*out.values())
        out["load_generator"] = _tree(snap, {os.getpid()}) - taken
        return out

    def __enter__(self) -> GroupMeter:
        self.s0 = _snapshot()
        return self

    def __exit__(self, *_exc: object) -> None:
        s1 = _snapshot()
        groups = self._groups(s1)
        for name, pids in groups.items():
            ticks = 0
            for pid in pids:
                before = self.s0.get(pid)
                now = s1[pid]
                own = now[1] - now[4]  # utime + stime, without reaped children's
                if before and before[3] == now[3]:
                    own -= before[1] - before[4]
                ticks += max(0, own)
            self.seconds[name] = ticks / CLK
