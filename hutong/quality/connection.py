"""An institution's connection status from the time of its last message.

Documented thresholds: 在线 (online) when the last message arrived within
:data:`ONLINE_HOURS`; 今日无数据 (no data today) when it arrived within
:data:`SILENT_HOURS` but not within ``ONLINE_HOURS``; 连接中断
(disconnected) when nothing arrived for ``SILENT_HOURS`` or never.
"""

from __future__ import annotations

# Connection status thresholds (hours since the institution's last message).
ONLINE_HOURS = 24
SILENT_HOURS = 72
ONLINE, SILENT, DOWN = "online", "silent", "down"


def status_of(last_ms: int | None, now_ms: int) -> str:
    """Connection status from the last message time (thresholds: module docstring)."""
    if last_ms is None:
        return DOWN
    hours = (now_ms - last_ms) / 3_600_000
    if hours <= ONLINE_HOURS:
        return ONLINE
    if hours <= SILENT_HOURS:
        return SILENT
    return DOWN
